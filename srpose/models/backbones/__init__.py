"""Backbones with mmpose 0.x / official parameter names (imported on first use)."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"ResNet": "resnet", "HRNet": "hrnet", "HRT": "hrt", "TransPoseR": "transpose"}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
