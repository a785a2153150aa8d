"""The public types of the training API, re-exported by :mod:`srpose.train.trainer`: the run's result and the
evaluation callback (plain or sharded across ranks)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import torch.nn as nn

__all__ = ["ShardedEval", "EvalFn", "TrainResult"]


@dataclass
class ShardedEval:
    """Evaluation split across ranks, as mmpose's ``multi_gpu_test``: every rank runs ``predict(model, indices)``
    over its share of ``range(num_items)`` (one picklable result per index); rank 0 gathers the results in index
    order and calls ``score(results) -> metrics``. In a single process it is ``score(predict(model, all))``."""

    num_items: int
    predict: Callable[[nn.Module, Sequence[int]], Sequence[Any]]
    score: Callable[[list], Mapping[str, float]]


#: ``eval_fn(model) -> metrics`` (run on rank 0 only) or a :class:`ShardedEval` (run on every rank).
EvalFn = Union[Callable[[nn.Module], Mapping[str, float]], ShardedEval]


@dataclass
class TrainResult:
    """What a training run produced (the same on every rank, except ``rank``)."""

    work_dir: str
    epochs: int  # completed epochs
    iters: int  # optimizer steps in all
    final_loss: float  # mean loss over the last epoch run (all ranks)
    latest: str | None  # latest checkpoint, None if none was written
    best: str | None  # best checkpoint by ``key_indicator``, None without evaluation
    best_metric: float | None
    best_epoch: int | None
    metrics: dict[str, float] = field(default_factory=dict)  # of the last evaluation
    history: list[dict[str, Any]] = field(default_factory=list)  # one summary per epoch run
    images_per_s: float = 0.0  # training throughput of this run (all ranks together)
    data_time_share: float = 0.0  # share of step time spent waiting for data (rank 0)
    weights_digest: str = ""  # sha256 of the final weights (equal across ranks under DDP)
    rank: int = 0
    world_size: int = 1
    log_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (``TrainResult(**d)`` rebuilds it)."""
        return asdict(self)
