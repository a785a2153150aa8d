"""Loading official mmpose-format and project checkpoints, and saving them in the same format."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from srpose._io import atomic_path

__all__ = ["CheckpointError", "read_state_dict", "check_finite_weights", "load_checkpoint", "save_checkpoint",
           "find_matching_presets", "build_with_weights"]


class CheckpointError(ValueError):
    """A checkpoint file could not be read or does not fit the model."""


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download or copy did not complete")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, unsafe for a file of unknown origin: not repeated here
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if "Unsupported global" in str(e):
            what = f" (e.g. {found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {path} holds pickled Python objects{what}, which srpose does not load (loading them can "
                "run code); re-save only the weights where the file came from, e.g. "
                "torch.save({'state_dict': model.state_dict()}, path)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint file (not a torch.save "
                              "archive or pickle of tensors): download or copy it again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt and cannot be read ({first}); "
                              "download or copy it again") from None


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(state_dict, meta)`` of a checkpoint: official mmpose (``{'state_dict', 'meta'}``), a bare state
    dict, or the project's own; ``module.`` prefixes (DataParallel/DDP) are removed."""
    path = Path(path)
    obj = _read_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors or a dict "
                              "with a 'state_dict' key")
    meta: dict[str, Any] = {}
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
        meta = dict(obj.get("meta") or {})
    elif "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
        meta = dict(obj.get("meta") or {})
    else:
        sd = obj
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries {bad[:5]} are not tensors; is this a state dict?")
    out = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    check_finite_weights(out, path)
    return out, meta


def check_finite_weights(sd: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError naming the first tensor of ``sd`` holding a NaN or infinity (a diverged run or a damaged
    file: every output of the model would be NaN)."""
    for k, v in sd.items():
        if v.is_floating_point() or v.is_complex():
            bad = ~torch.isfinite(v)
            if bool(bad.any()):
                n = int(bad.sum())
                raise CheckpointError(f"checkpoint {path}: weight {k!r} holds {n} of {v.numel()} values that are NaN "
                                      "or infinite (the training diverged or the file is damaged): use another "
                                      "checkpoint, e.g. an earlier epoch's")


def _mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def _listing(title: str, items: list[str], limit: int = 10) -> str:
    if not items:
        return ""
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more


def find_matching_presets(sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Presets whose state dict has exactly the keys and shapes of ``sd`` (models built on the meta device)."""
    from srpose.presets import list_models
    from srpose.models.builder import build_model

    keys = {k: tuple(v.shape) for k, v in sd.items()}
    found = []
    for name in list_models():
        with torch.device("meta"):
            try:
                m = build_model(name, init=False)
            except Exception:  # a preset that cannot build says nothing about this checkpoint
                continue
        if {k: tuple(v.shape) for k, v in m.state_dict().items()} == keys:
            found.append(name)
    return found


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (strict by default) and return its ``meta`` dict.

    On mismatch raises :class:`CheckpointError` listing missing and unexpected keys and shape mismatches, and naming
    the preset that fits the checkpoint when there is one.
    """
    sd, meta = read_state_dict(path)
    missing, unexpected, shapes = _mismatch(model, sd)
    if shapes or (strict and (missing or unexpected)):
        name = getattr(getattr(model, "cfg", None), "name", type(model).__name__)
        fits = find_matching_presets(sd)
        hint = (f"\n  this checkpoint fits the preset(s): {', '.join(fits)}" if fits else
                "\n  no preset fits this checkpoint exactly; pass the official config file it was trained with")
        raise CheckpointError(f"checkpoint {path} does not fit model {name}:"
                              + _listing("missing keys", missing) + _listing("unexpected keys", unexpected)
                              + _listing("shape mismatches", shapes) + hint)
    model.load_state_dict(sd, strict=strict)
    return meta


def save_checkpoint(model: nn.Module, path: str | Path, *, meta: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save ``{'state_dict', 'meta', **extra}`` (the official mmpose layout) atomically; ``meta`` gets the model's
    config when it has one, so the checkpoint can be rebuilt without the preset name."""
    sd = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
    sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}  # the usual layout, whatever trained it
    meta = dict(meta or {})
    cfg = getattr(getattr(model, "module", model), "cfg", None)
    if cfg is not None and "config" not in meta:
        meta["config"] = cfg.to_dict()
    obj = {"state_dict": sd, "meta": meta, **(extra or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def build_with_weights(cfg: Any, checkpoint: str | Path | None, *, command: str = "srpose") -> tuple[nn.Module,
                                                                                                     str | None]:
    """The model of ``cfg`` with the weights of ``checkpoint`` (strict) and the checkpoint's sha256. Without a
    checkpoint: randomly initialised weights, sha ``None``, and a warning on stderr naming ``command``."""
    import sys

    from srpose._io import sha256_file
    from srpose.models import build_model

    model = build_model(cfg)
    if not checkpoint:
        print(f"{command}: warning: no --checkpoint given, using randomly initialised weights", file=sys.stderr)
        return model, None
    load_checkpoint(model, checkpoint)
    return model, sha256_file(checkpoint)
