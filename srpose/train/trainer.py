"""The training loop of the official recipe (mmpose 0.x / mmcv semantics), single process or ``torchrun``: the
public entry points :func:`train` and :func:`spawn_train`, and the names that go with them.

Schedule: linear warm-up over the first ``warmup_iters`` iterations, then the step policy by epoch
(``lr = base * gamma ** #{s in lr_steps: epoch >= s}``, epochs counted from 0). The learning rate is a pure
function of (epoch, global iteration), and every epoch's shuffling and augmentation is seeded from
(seed, epoch, rank), so a resumed run continues exactly like an uninterrupted one.

Checkpoints use the official layout ``{'state_dict', 'meta': {'epoch', 'iter', 'config'}}`` (``epoch`` counts
completed epochs, as mmcv) plus ``optimizer``, ``scaler`` and ``trainer`` entries for resuming.

The parts live in private modules: :mod:`._schedule` (learning rate, optimizer, gradient clipping),
:mod:`._data` (dataset, seeding, loaders), :mod:`._dist` (process group, sharded evaluation, spawning),
:mod:`._checkpoint` (resume, checkpoints, ``--init``), :mod:`._log` (log file, console line) and :mod:`._loop`
(the run itself); :mod:`._types` holds the public types re-exported here.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from srpose._io import atomic_write_json, free_port
from srpose.config import PoseConfig
from srpose.resolve import get_config
from srpose.train._checkpoint import weights_digest
from srpose.train._dist import setup_distributed
from srpose.train._log import epoch_line as _epoch_line  # noqa: F401 - the console line, tested under this name
from srpose.train._loop import Options, Trainer
from srpose.train._schedule import grad_clip_norm, lr_at
from srpose.train._types import EvalFn, ShardedEval, TrainResult

__all__ = ["TrainResult", "ShardedEval", "EvalFn", "train", "lr_at", "spawn_train", "weights_digest"]


def train(cfg: PoseConfig | str, *, train_ann: str | Path, train_images: str | Path, work_dir: str | Path,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, workers: int = 2,
          amp: bool = False, grad_clip: float | None = None, resume: str | Path | None = None,
          checkpoint_every: int = 1, eval_every: int = 0, eval_fn: EvalFn | None = None, seed: int = 0,
          device: str = "cpu", sync_bn: bool = False, max_iters: int | None = None, progress: bool = True,
          log_file: str | Path | None = None, init: str | Path | None = None, model: nn.Module | None = None,
          key_indicator: str | None = None, log_every: int = 20, keep_epoch_checkpoints: bool = True,
          channels_last: bool | None = None) -> TrainResult:
    """Train a top-down model with the official recipe of ``cfg.train`` (overridden by the arguments).

    ``batch_size`` is per process. ``eval_fn`` runs every ``eval_every`` epochs and after the last one; the best
    ``key_indicator`` value is kept as ``best.pth`` (default: the dataset's protocol metric, ``Mean`` = PCKh@0.5 for
    MPII, ``AP`` otherwise). ``resume`` continues a run from one of its checkpoints;
    ``init`` starts a new run from a checkpoint's weights (keys that fit). ``max_iters`` stops early (tests,
    benchmarks). ``channels_last`` (default: ``cfg.train``'s) trains with NHWC activations, the same weights in
    another memory layout (checkpoints are saved in the usual layout). Launched by ``torchrun`` (``WORLD_SIZE`` > 1)
    it trains with DistributedDataParallel.
    """
    cfg = _with_overrides(get_config(cfg), epochs=epochs, batch_size=batch_size, lr=lr, grad_clip=grad_clip,
                          channels_last=channels_last)
    if key_indicator is None:  # mmpose 0.x: save_best='PCKh' on MPII, 'AP' on COCO / CrowdPose
        key_indicator = "Mean" if cfg.data.get("dataset") == "mpii" else "AP"
    _check_settings(cfg.train, workers=workers, checkpoint_every=checkpoint_every, eval_every=eval_every,
                    log_every=log_every, max_iters=max_iters, device=device, amp=amp)
    clip = grad_clip_norm(cfg.train.get("grad_clip"))

    d = setup_distributed(device)
    try:
        opts = Options(work_dir=Path(work_dir), workers=workers, amp=amp, clip=clip,
                       checkpoint_every=checkpoint_every, eval_every=eval_every, eval_fn=eval_fn, seed=seed,
                       max_iters=max_iters, progress=progress, key_indicator=key_indicator, log_every=log_every,
                       keep_epoch=keep_epoch_checkpoints)
        # the trainer is built here, at the call depth its warnings' stacklevel assumes
        return Trainer(cfg, d, opts, device=device, train_ann=train_ann, train_images=train_images, model=model,
                       init=init, sync_bn=sync_bn, resume=resume, log_file=log_file).run()
    finally:
        d.close()


def _with_overrides(cfg: PoseConfig, *, epochs: int | None, batch_size: int | None, lr: float | None,
                    grad_clip: Any, channels_last: bool | None) -> PoseConfig:
    """``cfg`` with a new ``train`` section: its own, with the given (non-None) settings replacing its values."""
    tc = dict(cfg.train)
    if epochs is not None:
        tc["epochs"] = int(epochs)
    if batch_size is not None:
        tc["batch_size"] = int(batch_size)
    if lr is not None:
        tc["lr"] = float(lr)
    if grad_clip is not None:
        tc["grad_clip"] = grad_clip
    if channels_last is not None:
        tc["channels_last"] = bool(channels_last)
    cfg.train = tc
    return cfg


def _check_settings(tc: dict[str, Any], *, workers: int, checkpoint_every: int, eval_every: int, log_every: int,
                    max_iters: int | None, device: str, amp: bool) -> None:
    """Reject out-of-range settings and devices this machine lacks, before any work."""
    total_epochs, bs = int(tc["epochs"]), int(tc["batch_size"])
    for name, value, low in (("epochs", total_epochs, 1), ("batch_size", bs, 1), ("workers", workers, 0),
                             ("checkpoint_every", checkpoint_every, 0), ("eval_every", eval_every, 0),
                             ("log_every", log_every, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if max_iters is not None and max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if float(tc["lr"]) <= 0:
        raise ValueError(f"lr must be positive, got {tc['lr']}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    if amp and not device.startswith("cuda"):
        raise ValueError("--amp (float16 mixed precision) needs a CUDA device: add --device cuda or drop --amp")


# ---------------------------------------------------------------------------------------------- spawn (no torchrun)
def _spawn_entry(rank: int, world_size: int, port: int, out_dir: str, threads: int, cfg: Any,
                 kwargs: dict[str, Any]) -> None:
    """One spawned rank: ``torchrun``'s environment, then :func:`train`; its result as JSON."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    res = train(cfg, **kwargs)
    atomic_write_json(Path(out_dir) / f"rank{rank}.json", res.to_dict())


def spawn_train(world_size: int, cfg: PoseConfig | str, **kwargs: Any) -> list[TrainResult]:
    """Run :func:`train` in ``world_size`` processes on this machine (gloo on CPU, nccl on
    CUDA) without ``torchrun``; returns every rank's :class:`TrainResult`. ``kwargs`` (``eval_fn`` included) must
    pickle."""
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    threads = max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory(prefix="srpose-spawn-") as out:
        mp.spawn(_spawn_entry, args=(world_size, free_port(), out, threads, cfg, kwargs), nprocs=world_size,
                 join=True)
        results = []
        for r in range(world_size):
            d = json.loads((Path(out) / f"rank{r}.json").read_text())
            results.append(TrainResult(**d))
    return results

