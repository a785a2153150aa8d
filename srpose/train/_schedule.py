"""Learning-rate schedule, optimizer and gradient clipping of the official recipe (mmcv semantics).

Schedule: linear warm-up over the first ``warmup_iters`` iterations, then the step policy by epoch
(``lr = base * gamma ** #{s in lr_steps: epoch >= s}``, epochs counted from 0): a pure function of (epoch, global
iteration), so a resumed run continues the schedule exactly.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["lr_at", "make_optimizer", "grad_clip_norm"]


def lr_at(train_cfg: Mapping[str, Any], epoch: int, it: int, base_lr: float | None = None) -> float:
    """Learning rate at 0-based ``epoch`` and global iteration ``it`` (mmcv step policy + linear warm-up)."""
    base = float(train_cfg["lr"] if base_lr is None else base_lr)
    steps = train_cfg.get("lr_steps") or ()
    gamma = float(train_cfg.get("lr_gamma", 0.1))
    regular = base * gamma ** sum(1 for s in steps if epoch >= int(s))
    warm = int(train_cfg.get("warmup_iters") or 0)
    if warm > 0 and it < warm:
        ratio = float(train_cfg.get("warmup_ratio", 0.001))
        k = (1 - it / warm) * (1 - ratio)
        return regular * (1 - k)
    return regular


def make_optimizer(model: nn.Module, train_cfg: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    """The config's optimizer (Adam, AdamW or SGD with its weight decay / momentum) over the trainable parameters."""
    name = str(train_cfg.get("optimizer", "Adam"))
    wd = float(train_cfg.get("weight_decay", 0.0) or 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=float(train_cfg.get("momentum", 0.9)), weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not supported; use Adam, AdamW or SGD in the config's train section")


def grad_clip_norm(value: Any) -> float | None:
    """The max gradient norm of a ``grad_clip`` setting (a number or mmcv's ``dict(max_norm=...)``); None: no clip."""
    if value in (None, False, 0):
        return None
    if isinstance(value, Mapping):
        if "max_norm" not in value:
            raise ValueError(f"grad_clip {dict(value)} lacks max_norm; use e.g. dict(max_norm=35, norm_type=2)")
        return float(value["max_norm"])
    return float(value)
