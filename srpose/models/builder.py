"""Builds models from PoseConfig: a plain map from the official ``type`` names to classes."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from srpose.config import BOTTOM_UP_TYPES, PoseConfig
from srpose.resolve import get_config
from srpose.models.detector import BottomUp, TopDown


def _backbones() -> dict[str, Callable[..., nn.Module]]:
    """Backbone type name -> constructor; each backbone module is imported only when its type is built."""
    from srpose.models import backbones

    def lazy(name: str) -> Callable[..., nn.Module]:
        return lambda **kw: getattr(backbones, name)(**kw)

    return {name: lazy(name) for name in backbones.__all__}


def _heads() -> dict[str, Callable[..., nn.Module]]:
    from srpose.models.heads import TopDownSimpleHead, TopDownSimpleSRHead, TopDownSRPoseHead

    return {"TopDownSimpleHead": TopDownSimpleHead, "TopdownHeatmapSimpleHead": TopDownSimpleHead,
            "TopDownSimpleSRHead": TopDownSimpleSRHead, "TopDownSRPoseHead": TopDownSRPoseHead,
            **_bottom_up_heads()}


def _bottom_up_heads() -> dict[str, Callable[..., nn.Module]]:
    from srpose.models.heads.associative_embedding import BottomUpSimpleHead, BottomUpSimpleSRHead

    return {"BottomUpSimpleHead": BottomUpSimpleHead, "AESimpleHead": BottomUpSimpleHead,
            "BottomUpSimpleSRHead": BottomUpSimpleSRHead}


DETECTOR_TYPES = ("TopDown", "TopDownHigher", *BOTTOM_UP_TYPES)
_DROP_KEYS = ("type", "loss_keypoint", "train_cfg", "test_cfg", "pretrained")


def _instantiate(kind: str, table: dict[str, Callable[..., nn.Module]], cfg: dict[str, Any], where: str) -> nn.Module:
    t = cfg.get("type")
    if t not in table:
        raise ValueError(f"{where}: {kind} type {t!r} is not supported; supported: {sorted(table)}")
    kwargs = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in _DROP_KEYS}
    return table[t](**kwargs)


def build_model(name_or_config: str | Path | PoseConfig, *, init: bool = True) -> TopDown:
    """Build the detector of a preset name, an mmpose ``.py`` config, a project ``.json`` config or a PoseConfig.

    Its ``state_dict()`` keys are the official ones (``backbone.*``, ``keypoint_head.*``).
    """
    cfg = get_config(name_or_config)
    model_cfg = cfg.model
    if model_cfg.get("type") not in DETECTOR_TYPES:
        raise ValueError(f"{cfg.source}: model type {model_cfg.get('type')!r} is not supported; "
                         f"supported: {list(DETECTOR_TYPES)}")
    if "neck" in model_cfg:
        raise ValueError(f"{cfg.source}: model.neck is not supported")
    backbone = _instantiate("backbone", _backbones(), model_cfg["backbone"], cfg.source)
    head_cfg = dict(model_cfg["keypoint_head"])
    head_cfg.setdefault("num_joints", cfg.num_joints)
    if head_cfg.get("type") in ("TopDownSimpleHead", "TopdownHeatmapSimpleHead", "TopDownSimpleSRHead"):
        head_cfg.setdefault("out_channels", cfg.num_joints)
        head_cfg.pop("num_joints")
    head = _instantiate("keypoint_head", _heads(), head_cfg, cfg.source)
    model = (BottomUp if cfg.is_bottom_up else TopDown)(backbone, head, cfg)
    if init:
        model.init_weights()
    return model.eval()
