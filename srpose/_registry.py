"""The preset registry: model variants are plain registered functions returning a PoseConfig."""
from __future__ import annotations

from typing import Callable, TYPE_CHECKING

if TYPE_CHECKING:
    from srpose.config import PoseConfig

_PRESETS: dict[str, Callable[[], "PoseConfig"]] = {}


def register_model(fn: Callable[[], "PoseConfig"]) -> Callable[[], "PoseConfig"]:
    """Register a preset function under its own name."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"preset {fn.__name__!r} is registered twice")
    _PRESETS[fn.__name__] = fn
    return fn


def _ensure_loaded() -> None:
    import srpose.presets  # noqa: F401  (registers the presets)
    import srpose.presets_bottomup  # noqa: F401  (registers the bottom-up presets)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all presets, optionally filtered by a substring or fnmatch pattern."""
    import fnmatch

    _ensure_loaded()
    names = sorted(_PRESETS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or pattern in n]
    return names


def get_preset(name: str) -> "PoseConfig":
    """A fresh PoseConfig of preset ``name``."""
    _ensure_loaded()
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; run `srpose list` to see the presets")
    return _PRESETS[name]()
