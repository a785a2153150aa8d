"""Keypoint metrics as mmpose 0.x runs them: COCO AP, CrowdPose AP and MPII PCKh (rescoring and OKS-NMS are the
top-down task's, :mod:`srpose.tasks._rescore`, re-exported here).

COCO metric values are fractions in [0, 1] (pycocotools ``stats``); MPII PCKh values are fractions too
(mmpose prints them in percent).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from srpose.keypoints import COCO_SIGMAS, CROWDPOSE_SIGMAS
from srpose.tasks._rescore import coco_results, oks_iou, oks_nms, rescore, rescore_all  # noqa: F401  (re-exported)

__all__ = [
    "COCO_METRIC_NAMES",
    "CROWDPOSE_METRIC_NAMES",
    "MPII_METRIC_NAMES",
    "oks_iou",
    "oks_nms",
    "rescore",
    "rescore_all",
    "coco_results",
    "coco_keypoint_eval",
    "crowdpose_keypoint_eval",
    "mpii_pckh",
]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_METRIC_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_E", "AP_M", "AP_H")
MPII_METRIC_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")


# ------------------------------------------------------------------------------------------ COCO / CrowdPose


def _as_results(results: Sequence[Mapping[str, Any]] | str | os.PathLike) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f"results file {str(path)!r} does not exist")
        with open(path, "r", encoding="utf-8") as f:
            results = json.load(f)
    results = [dict(r) for r in results]
    if not results:
        raise ValueError("no keypoint results to evaluate: the result list is empty")
    return results


def _load_gt(ann_file: str | os.PathLike | Mapping[str, Any]):
    from pycocotools.coco import COCO

    if isinstance(ann_file, Mapping):
        data = copy.deepcopy(dict(ann_file))
    else:
        path = Path(ann_file)
        if not path.is_file():
            raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"annotation file {ann_file!r} is missing the key {key!r}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _run_cocoeval(coco_gt, results: list[dict[str, Any]], sigmas: np.ndarray, img_ids: list | None = None):
    from pycocotools.cocoeval import COCOeval

    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()), key=repr)
    if unknown:
        raise ValueError(f"{len(unknown)} result image_ids are not in the annotations: {unknown[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.params.useSegm = None
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_keypoint_eval(ann_file: str | os.PathLike | Mapping[str, Any],
                       results: Sequence[Mapping[str, Any]] | str | os.PathLike,
                       sigmas: Sequence[float] | None = None) -> dict[str, float]:
    """COCO keypoint AP/AR with pycocotools (iouType 'keypoints'); keys ``COCO_METRIC_NAMES``, values in [0, 1]."""
    results = _as_results(results)
    ev = _run_cocoeval(_load_gt(ann_file), results, np.asarray(COCO_SIGMAS if sigmas is None else sigmas))
    return {name: float(v) for name, v in zip(COCO_METRIC_NAMES, ev.stats)}


def crowdpose_keypoint_eval(ann_file: str | os.PathLike | Mapping[str, Any],
                            results: Sequence[Mapping[str, Any]] | str | os.PathLike,
                            sigmas: Sequence[float] | None = None) -> dict[str, float]:
    """CrowdPose AP/AR and AP by crowd index (easy < 0.2 <= medium < 0.8 <= hard), the crowdposetools protocol.

    As crowdposetools / xtcocotools 'keypoints_crowd' with ``use_area=False``: the OKS scale is 0.53 x the GT
    box area, a GT with ``num_keypoints == 0`` is ignored, and AP_E/M/H are the mean precision over the images
    of each crowd-index class (-1 when the class has no annotated person).
    """
    results = _as_results(results)
    coco_gt = _load_gt(ann_file)
    sig = np.asarray(CROWDPOSE_SIGMAS if sigmas is None else sigmas)
    for ann in coco_gt.dataset["annotations"]:
        if "bbox" not in ann or "num_keypoints" not in ann:
            raise ValueError(f"CrowdPose annotation {ann.get('id')!r} lacks 'bbox' or 'num_keypoints'")
        ann["area"] = float(ann["bbox"][2] * ann["bbox"][3] * 0.53)
    splits: dict[str, list] = {"AP_E": [], "AP_M": [], "AP_H": []}
    for img in coco_gt.dataset["images"]:
        if "crowdIndex" not in img:
            raise ValueError(f"CrowdPose image {img.get('id')!r} lacks 'crowdIndex': is this a CrowdPose file?")
        ci = img["crowdIndex"]
        splits["AP_E" if ci < 0.2 else "AP_M" if ci < 0.8 else "AP_H"].append(img["id"])
    ev = _run_cocoeval(coco_gt, results, sig)
    s = ev.stats
    out = dict(AP=s[0], AP50=s[1], AP75=s[2], AR=s[5], AR50=s[6], AR75=s[7])
    for name, ids in splits.items():
        if not ids:
            out[name] = -1.0
            continue
        ev_split = _run_cocoeval(coco_gt, results, sig, img_ids=ids)
        out[name] = float(np.mean(ev_split.eval["precision"][:, :, :, 0, :]))
    return {k: float(out[k]) for k in CROWDPOSE_METRIC_NAMES}


# ------------------------------------------------------------------------------------------ MPII


_MPII_GROUPS = (("Head", (9,)), ("Shoulder", (13, 12)), ("Elbow", (14, 11)), ("Wrist", (15, 10)),
                ("Hip", (3, 2)), ("Knee", (4, 1)), ("Ankle", (5, 0)))


def mpii_pckh(preds: np.ndarray, gt: np.ndarray, visible: np.ndarray, headsizes: np.ndarray,
              threshold: float = 0.5) -> tuple[dict[str, float], np.ndarray]:
    """MPII PCKh as mmpose 0.x: error / head size <= threshold over annotated joints.

    ``preds``/``gt`` are N x 16 x 2 in the same (image) coordinates, ``visible`` N x 16, ``headsizes`` N
    (already ``0.6 x head-box diagonal`` or the head segment length). Returns the grouped table (``Head`` ...
    ``Ankle``, ``Mean`` at ``threshold``, ``Mean@0.1``; pelvis and thorax are left out of the means) and the
    per-joint PCKh (16,), all fractions.
    """
    preds = np.asarray(preds, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    vis = (np.asarray(visible) > 0).astype(np.float64)
    headsizes = np.asarray(headsizes, dtype=np.float64).reshape(-1)
    if preds.shape != gt.shape or preds.shape[1:] != (16, 2) or vis.shape != preds.shape[:2]:
        raise ValueError(f"MPII PCKh needs N x 16 x 2 predictions and GT and N x 16 visibility, got "
                         f"{preds.shape}, {gt.shape}, {vis.shape}")
    if len(preds) == 0:
        raise ValueError("no MPII predictions to evaluate")
    bad = np.where((~np.isfinite(headsizes) | (headsizes <= 0)) & (vis.sum(1) > 0))[0]
    if len(bad):
        raise ValueError(f"{len(bad)} MPII persons have no usable head size (no 'headbox' and no visible "
                         f"upper_neck/head_top), e.g. indices {bad[:5].tolist()}")
    err = np.linalg.norm(preds - gt, axis=2) / np.where(headsizes > 0, headsizes, 1.0)[:, None]
    count = vis.sum(0)

    def pck_at(t: float) -> np.ndarray:
        hit = ((err <= t) * vis).sum(0)
        return np.divide(hit, count, out=np.zeros(16), where=count > 0)

    per_joint = pck_at(threshold)
    used = np.ones(16, dtype=bool)
    used[6:8] = False  # pelvis, thorax
    ratio = np.where(used, count, 0.0)
    ratio = ratio / ratio.sum() if ratio.sum() > 0 else ratio
    table = {name: float(np.mean(per_joint[list(j)])) for name, j in _MPII_GROUPS}
    table["Mean"] = float(np.sum(per_joint * ratio))
    table["Mean@0.1"] = float(np.sum(pck_at(0.1) * ratio))
    return table, per_joint
