"""Presets: one per row of the SRPose paper's tables (top-down COCO 256x192, bottom-up COCO 512x512, top-down MPII
256x256 and CrowdPose 256x192) plus the demo model, each a registered function with its config as data next to it."""
from __future__ import annotations

import fnmatch

from srpose._registry import PRESETS, register_model
from srpose.config import PoseConfig

from . import bottom_up, mpii_crowdpose, top_down  # noqa: F401  (registers the presets)
from .bottom_up import PAPER_TABLE_BOTTOMUP
from .mpii_crowdpose import PAPER_TABLE_DATASETS
from .top_down import PAPER_TABLE

__all__ = ["list_models", "get_preset", "register_model", "PAPER_TABLE", "PAPER_TABLE_BOTTOMUP",
           "PAPER_TABLE_DATASETS"]


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all presets, optionally filtered by a substring or fnmatch pattern."""
    names = sorted(PRESETS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or pattern in n]
    return names


def get_preset(name: str) -> PoseConfig:
    """A fresh PoseConfig of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; run `srpose list` to see the presets")
    return PRESETS[name]()
