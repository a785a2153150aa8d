"""The preset registry: model variants are plain registered functions returning a PoseConfig (see srpose.presets)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from srpose.config import PoseConfig

#: preset name -> function returning a fresh PoseConfig (filled by the srpose.presets modules)
PRESETS: dict[str, Callable[[], "PoseConfig"]] = {}


def register_model(fn: Callable[[], "PoseConfig"]) -> Callable[[], "PoseConfig"]:
    """Register a preset function under its own name."""
    if fn.__name__ in PRESETS:
        raise ValueError(f"preset {fn.__name__!r} is registered twice")
    PRESETS[fn.__name__] = fn
    return fn
