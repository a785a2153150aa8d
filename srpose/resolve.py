"""Resolve a preset name, an official mmpose 0.x / SRPose ``.py`` config or a project ``.json`` config into a
:class:`~srpose.config.PoseConfig` (mmpose configs are read by a small AST evaluator, without mmcv)."""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

from srpose._mmcfg import ConfigError, read_mmpose_config
from srpose.config import BOTTOM_UP_TYPES, DEFAULT_TRAIN_CFG, PoseConfig, bottom_up_test_cfg, make_data_cfg
from srpose.presets import get_preset, list_models

__all__ = ["get_config", "config_from_mmpose", "config_from_mmpose_bottomup"]

_DATASET_TYPES = {
    "TopDownCocoDataset": "coco", "TopDownCrowdPoseDataset": "crowdpose", "TopDownMpiiDataset": "mpii",
}


def get_config(name_or_path: str | Path | PoseConfig) -> PoseConfig:
    """Resolve a preset name, an mmpose ``.py`` config path or a project ``.json`` config into a PoseConfig."""
    if isinstance(name_or_path, PoseConfig):
        return copy.deepcopy(name_or_path)
    s = str(name_or_path)
    if s in list_models():
        return get_preset(s)
    p = Path(s)
    if p.suffix == ".py" or p.suffix == ".json":
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist")
        if p.suffix == ".json":
            try:
                return PoseConfig.from_dict(json.loads(p.read_text()))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}: not valid JSON ({e})") from None
        return config_from_mmpose(p)
    close = difflib.get_close_matches(s, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `srpose list` to see the presets"
    raise ValueError(f"unknown model {s!r}: not a preset name nor a .py/.json config file{hint}")


def _find_pipeline_step(pipeline: list, type_name: str) -> dict | None:
    for step in pipeline or []:
        if isinstance(step, dict) and step.get("type") == type_name:
            return step
    return None


def config_from_mmpose(path: str | Path) -> PoseConfig:
    """Build a :class:`PoseConfig` from an official mmpose 0.x / SRPose ``.py`` config file."""
    path = Path(path)
    raw = read_mmpose_config(path)
    if (raw.get("model") or {}).get("type") in BOTTOM_UP_TYPES:
        return config_from_mmpose_bottomup(path, raw)
    for key in ("model", "data_cfg"):
        if key not in raw:
            raise ConfigError(f"{path}: no top-level `{key}` in this config; is it an mmpose top-down config?")
    model = copy.deepcopy(raw["model"])
    dcfg = raw["data_cfg"]
    data_section = raw.get("data", {})
    ds_type = (data_section.get("test") or data_section.get("val") or {}).get("type", "TopDownCocoDataset")
    dataset = _DATASET_TYPES.get(ds_type)
    if dataset is None:
        raise ConfigError(f"{path}: dataset type {ds_type!r} is not supported; expected one of "
                          f"{sorted(_DATASET_TYPES)}")
    norm = _find_pipeline_step(raw.get("val_pipeline") or raw.get("test_pipeline") or [], "NormalizeTensor")
    target = _find_pipeline_step(raw.get("train_pipeline", []), "TopDownGenerateTarget")
    decoder = "srpose" if model.get("type") == "TopDownHigher" else "simple"
    data = make_data_cfg(
        dataset, image_size=dcfg["image_size"], heatmap_size=dcfg["heatmap_size"],
        sigma=float(target.get("sigma", 2)) if target else 2.0, decoder=decoder,
        use_gt_bbox=bool(dcfg.get("use_gt_bbox", False)), det_bbox_thr=float(dcfg.get("det_bbox_thr", 0.0)),
        oks_thr=float(dcfg.get("oks_thr", 0.9)), vis_thr=float(dcfg.get("vis_thr", 0.2)),
    )
    if norm:
        data["mean"], data["std"] = list(norm["mean"]), list(norm["std"])
    if "dataset_info" in raw:  # newer 0.x configs carry flip pairs as swap names
        info = raw["dataset_info"]["keypoint_info"]
        names = {v["name"]: int(k) for k, v in info.items()}
        pairs = {tuple(sorted((int(k), names[v["swap"]]))) for k, v in info.items() if v.get("swap")}
        data["flip_pairs"] = [list(p) for p in sorted(pairs)]
    train = dict(DEFAULT_TRAIN_CFG)
    opt = raw.get("optimizer", {})
    lr_cfg = raw.get("lr_config", {})
    train.update(optimizer=opt.get("type", "Adam"), lr=float(opt.get("lr", 5e-4)),
                 weight_decay=float(opt.get("weight_decay", 0.0)),
                 warmup_iters=int(lr_cfg.get("warmup_iters", 500)),
                 warmup_ratio=float(lr_cfg.get("warmup_ratio", 0.001)),
                 lr_steps=tuple(lr_cfg.get("step", (170, 200))), epochs=int(raw.get("total_epochs", 210)),
                 batch_size=int(data_section.get("samples_per_gpu", 32)),
                 grad_clip=(raw.get("optimizer_config") or {}).get("grad_clip"))
    # the augmentations follow the config's training pipeline: a step it lacks is off (mmpose's MPII pipeline has
    # no TopDownHalfBodyTransform), a step it has keeps mmpose's defaults for the keys it leaves out
    pipeline = raw.get("train_pipeline")
    for step_type, keys, off in (("TopDownRandomFlip", ("flip_prob",), dict(flip_prob=0.0)),
                                 ("TopDownHalfBodyTransform", ("num_joints_half_body", "prob_half_body"),
                                  dict(prob_half_body=0.0)),
                                 ("TopDownGetRandomScaleRotation", ("rot_factor", "scale_factor"),
                                  dict(rot_factor=0, scale_factor=0.0))):
        step = _find_pipeline_step(pipeline or [], step_type)
        if step:
            train.update({k: step[k] for k in keys if k in step})
        elif pipeline:
            train.update(off)
    return PoseConfig(name=path.stem, model=model, data=data, train=train, source=str(path))


def config_from_mmpose_bottomup(path: str | Path, raw: dict[str, Any] | None = None) -> PoseConfig:
    """A :class:`PoseConfig` from an official bottom-up ``.py`` config (SRPose ``configs/bottom_up/...`` or mmpose
    0.x ``associative_embedding``); ``raw`` is the already-read config dict, if the caller has it."""
    path = Path(path)
    raw = read_mmpose_config(path) if raw is None else raw
    for key in ("model", "data_cfg"):
        if key not in raw:
            raise ConfigError(f"{path}: no top-level `{key}` in this config; is it an mmpose bottom-up config?")
    model = copy.deepcopy(raw["model"])
    if model.get("type") not in BOTTOM_UP_TYPES:
        raise ConfigError(f"{path}: model type {model.get('type')!r} is not bottom-up")
    dcfg = raw["data_cfg"]
    ds_type = ((raw.get("data") or {}).get("test") or {}).get("type", "BottomUpCocoDataset")
    if ds_type != "BottomUpCocoDataset":
        raise ConfigError(f"{path}: dataset type {ds_type!r} is not supported; only BottomUpCocoDataset is")
    size = int(dcfg["image_size"] if not isinstance(dcfg["image_size"], (list, tuple)) else dcfg["image_size"][0])
    hm = dcfg.get("heatmap_size", [size // 4])
    hm = int(hm[-1] if isinstance(hm, (list, tuple)) else hm)
    target = next((s for s in raw.get("train_pipeline", []) if isinstance(s, dict)
                   and s.get("type") == "BottomUpGenerateTarget"), None)
    sigma = float(target.get("sigma", 2)) if target else float(dcfg.get("base_sigma", 2))
    test_cfg = {**bottom_up_test_cfg(), **model.get("test_cfg", {})}
    model["test_cfg"] = test_cfg
    data = make_data_cfg("coco", image_size=(size, size), heatmap_size=(hm, hm), sigma=sigma,
                         decoder="associative_embedding", base_size=int(dcfg.get("base_size", size)),
                         base_sigma=dcfg.get("base_sigma", sigma), max_num_people=int(test_cfg["max_num_people"]),
                         scale_aware_sigma=bool(dcfg.get("scale_aware_sigma", False)), bottom_up=True)
    opt, lr_cfg = raw.get("optimizer", {}), raw.get("lr_config", {})
    train = dict(DEFAULT_TRAIN_CFG, optimizer=opt.get("type", "Adam"), lr=float(opt.get("lr", 0.0015)),
                 lr_steps=tuple(lr_cfg.get("step", (200, 260))), epochs=int(raw.get("total_epochs", 300)),
                 batch_size=int((raw.get("data") or {}).get("samples_per_gpu", 24)))
    return PoseConfig(name=path.stem, model=model, data=data, train=train, source=str(path))
