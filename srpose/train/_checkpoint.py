"""Training checkpoints: resume (validation and restore), writing ``epoch_<n>.pth`` / ``latest.pth``, ``--init``
weights, and the weights digest.

Checkpoints use the official layout ``{'state_dict', 'meta': {'epoch', 'iter', 'config'}}`` (``epoch`` counts
completed epochs, as mmcv) plus ``optimizer``, ``scaler`` and ``trainer`` entries for resuming.
"""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from srpose._io import atomic_path
from srpose.checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint

__all__ = ["load_resume", "restore", "write_checkpoint", "init_weights", "weights_digest"]


def load_resume(path: str | Path) -> dict[str, Any]:
    """The contents of resume checkpoint ``path``; clear errors for a missing, unreadable or weights-only file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"resume checkpoint {path} cannot be read ({str(e).splitlines()[0] if str(e) else e})")
    if not isinstance(obj, Mapping) or "state_dict" not in obj or "meta" not in obj:
        raise CheckpointError(f"resume checkpoint {path} lacks 'state_dict'/'meta'; resume needs a checkpoint "
                              "written by `srpose train` (use --init to start from plain weights)")
    if "optimizer" not in obj:
        raise CheckpointError(f"resume checkpoint {path} has no optimizer state (it is a weights-only checkpoint); "
                              "use --init to start a new run from its weights")
    return dict(obj)


def restore(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load resume checkpoint ``path`` into ``model``, ``optimizer`` and ``scaler`` (when given and saved); returns
    the checkpoint's (``meta``, ``trainer``) entries."""
    ck = load_resume(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ck["state_dict"].items()}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"resume checkpoint {path} does not fit model {model_name}: "
                              f"{str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(ck["optimizer"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    return dict(ck["meta"]), dict(ck.get("trainer") or {})


def write_checkpoint(model: nn.Module, target: Path, latest: Path, *, meta: Mapping[str, Any],
                     optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     trainer_state: Mapping[str, Any]) -> None:
    """Save a resumable checkpoint to ``target`` and make ``latest`` a copy of it (both written atomically)."""
    extra: dict[str, Any] = dict(optimizer=optimizer.state_dict(), trainer=dict(trainer_state))
    if scaler is not None:
        extra["scaler"] = scaler.state_dict()
    save_checkpoint(model, target, meta=dict(meta), extra=extra)
    if target != latest:
        with atomic_path(latest) as tmp:
            shutil.copyfile(target, tmp)


def init_weights(model: nn.Module, path: str | Path) -> None:
    """Load the entries of checkpoint ``path`` that fit ``model`` (same name and shape); error if none fit."""
    sd, _ = read_state_dict(path)
    own = model.state_dict()
    fit = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise CheckpointError(f"no weight of {path} fits the model (no shared key with the same shape); "
                              "is it a checkpoint of another architecture?")
    if len(fit) == len(own) == len(sd):
        load_checkpoint(model, path, strict=True)
        return
    missing = len(own) - len(fit)
    # stacklevel 3: attributed to train(), which builds the trainer that calls this
    warnings.warn(f"--init {path}: loaded {len(fit)} of {len(own)} model tensors; {missing} keep their "
                  f"initialisation, {len(sd) - len(fit)} checkpoint tensors unused", stacklevel=3)
    model.load_state_dict(fit, strict=False)


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, then bytes), for comparing replicas."""
    h = hashlib.sha256()
    m = model.module if hasattr(model, "module") else model
    for k, v in sorted(m.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
