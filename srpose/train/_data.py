"""Training data: seeding, the dataset of a config (with the train section's augmentation), the batches per epoch
and each epoch's loader. Shuffling and augmentation are seeded from (seed, epoch, rank), so a resumed run sees the
data of an uninterrupted one."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srpose.config import PoseConfig

__all__ = ["AUG_KEYS", "seed_for", "seed_everything", "make_dataset", "epoch_plan", "epoch_loader"]

#: augmentation settings of ``cfg.train`` that override the data section's
AUG_KEYS = ("flip_prob", "num_joints_half_body", "prob_half_body", "rot_factor", "scale_factor")


def seed_for(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_dataset(cfg: PoseConfig, ann: str | Path, images: str | Path, seed: int) -> Any:
    """The training dataset of ``cfg`` (its data section, augmentation overridden by its train section)."""
    from srpose.data import DATASET_CLASSES

    name = cfg.data.get("dataset", "coco")
    if name not in DATASET_CLASSES:
        raise ValueError(f"dataset {name!r} of config {cfg.name} cannot be trained on; "
                         f"expected one of {sorted(DATASET_CLASSES)}")
    data_cfg = dict(cfg.data)
    for k in AUG_KEYS:
        if k in cfg.train and cfg.train[k] is not None:
            data_cfg[k] = cfg.train[k]
    kwargs: dict[str, Any] = dict(train=True)
    if name != "mpii":
        kwargs["seed"] = seed
    return DATASET_CLASSES[name](ann, images, data_cfg, **kwargs)


def epoch_plan(num_samples: int, batch_size: int, world_size: int) -> tuple[bool, int]:
    """(drop_last, steps per epoch) of ``num_samples`` split over ``world_size`` ranks in batches of ``batch_size``;
    the last incomplete batch is dropped (no 1-sample batch for BatchNorm) when the data allows."""
    n, bs = num_samples, batch_size
    drop_last = n >= bs * world_size * 2
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    steps = per_rank // bs if drop_last else math.ceil(per_rank / bs)
    if steps < 1:
        raise ValueError(f"the training set has {n} person boxes, fewer than one batch of {bs} per "
                         "process; lower --batch")
    return drop_last, steps


def epoch_loader(dataset: Any, epoch: int, *, seed: int, rank: int, world_size: int, batch_size: int, workers: int,
                 drop_last: bool, pin: bool) -> Any:
    """This epoch's loader; shuffling, worker seeds and in-process augmentation seeded by (seed, epoch, rank)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from srpose.data import collate

    epoch_seed = seed_for(seed, epoch, rank)
    torch.manual_seed(epoch_seed)  # the data layer seeds in-process augmentation from torch.initial_seed()
    gen = torch.Generator()
    gen.manual_seed(epoch_seed)
    kw: dict[str, Any] = dict(batch_size=batch_size, num_workers=workers, collate_fn=collate,
                              drop_last=drop_last, generator=gen, pin_memory=pin)
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, sampler=sampler, **kw)
    return DataLoader(dataset, shuffle=True, **kw)
