"""Distributed training helpers: the process group (``torchrun`` or :func:`~srpose.train.trainer.spawn_train`),
rank-0 broadcasts, buffer and loss synchronisation, and evaluation sharded across ranks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn as nn

from srpose.train._types import EvalFn, ShardedEval

if TYPE_CHECKING:
    pass

__all__ = ["Dist", "setup_distributed", "broadcast", "sync_buffers", "mean_over_ranks", "run_eval"]


@dataclass
class Dist:
    """This process's place in the run (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # the process group was created here (and is destroyed by :meth:`close`)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if it was created by :func:`setup_distributed`."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device: str) -> Dist:
    """Join (or create, from ``torchrun``'s environment) the process group; a single process without ``WORLD_SIZE``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, owns_group=owns)


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so all replicas equal the checkpoint."""
    if d.enabled:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def mean_over_ranks(values: list[float], d: Dist) -> list[float]:
    """The mean of each of ``values`` over all ranks (``values`` itself in a single process)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / d.world_size).tolist()


def run_eval(eval_fn: EvalFn, model: nn.Module, d: Dist) -> dict[str, float]:
    """Metrics of ``model`` (the same dict on every rank); the model is left in training mode."""
    try:
        if isinstance(eval_fn, ShardedEval):
            metrics = _sharded_metrics(eval_fn, model, d)
        else:
            metrics = {k: float(v) for k, v in eval_fn(model).items()} if d.main else None
        return broadcast(metrics, d)
    finally:
        model.train()


def _sharded_metrics(eval_fn: ShardedEval, model: nn.Module, d: Dist) -> dict[str, float] | None:
    """Predict this rank's share, gather every share on rank 0 in index order and score there (None elsewhere)."""
    indices = list(range(d.rank, eval_fn.num_items, d.world_size))
    part = list(eval_fn.predict(model, indices))
    if len(part) != len(indices):
        raise RuntimeError(f"ShardedEval.predict returned {len(part)} results for {len(indices)} indices")
    if d.enabled:
        parts: list[Any] = [None] * d.world_size
        dist.all_gather_object(parts, part)
    else:
        parts = [part]
    if not d.main:
        return None
    ordered: list[Any] = [None] * eval_fn.num_items
    for r, pr in enumerate(parts):
        for i, res in zip(range(r, eval_fn.num_items, d.world_size), pr):
            ordered[i] = res
    return {k: float(v) for k, v in eval_fn.score(ordered).items()}
