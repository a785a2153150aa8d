"""Keypoint metrics as mmpose 0.x runs them: rescoring + OKS-NMS, COCO AP, CrowdPose AP and MPII PCKh.

COCO metric values are fractions in [0, 1] (pycocotools ``stats``); MPII PCKh values are fractions too
(mmpose prints them in percent).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from srpose.keypoints import COCO_SIGMAS, CROWDPOSE_SIGMAS

__all__ = [
    "COCO_METRIC_NAMES",
    "CROWDPOSE_METRIC_NAMES",
    "MPII_METRIC_NAMES",
    "oks_iou",
    "oks_nms",
    "rescore",
    "coco_results",
    "coco_keypoint_eval",
    "crowdpose_keypoint_eval",
    "mpii_pckh",
]

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_METRIC_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_E", "AP_M", "AP_H")
MPII_METRIC_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")


# ------------------------------------------------------------------------------------------ OKS-NMS


def oks_iou(g: np.ndarray, d: np.ndarray, a_g: float, a_d: np.ndarray, sigmas: np.ndarray | None = None,
            vis_thr: float | None = None) -> np.ndarray:
    """OKS between one flattened pose ``g`` (3K) and poses ``d`` (M x 3K) with areas ``a_g`` and ``a_d`` (M).

    As mmpose 0.x: with ``vis_thr`` only the joints of ``d`` scoring above it count (mmpose's
    ``list(vg > thr) and list(vd > thr)`` evaluates to the second list).
    """
    sigmas = np.asarray(COCO_SIGMAS if sigmas is None else sigmas, dtype=np.float64)
    variances = (sigmas * 2) ** 2
    g = np.asarray(g, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64).reshape(-1, g.shape[0])
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)
    for n in range(len(d)):
        dx = d[n, 0::3] - xg
        dy = d[n, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        if vis_thr is not None:
            e = e[d[n, 2::3] > vis_thr]
        ious[n] = np.sum(np.exp(-e)) / len(e) if len(e) != 0 else 0.0
    return ious


def oks_nms(kpts_db: Sequence[Mapping[str, Any]], thr: float, sigmas: np.ndarray | None = None,
            vis_thr: float | None = None) -> np.ndarray:
    """Greedy OKS-NMS over poses (dicts with ``keypoints`` K x 3, ``score``, ``area``); indices kept, best first.

    A pose is suppressed when its OKS with a kept, higher-scoring pose exceeds ``thr``.
    """
    if len(kpts_db) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = np.array([k["score"] for k in kpts_db])
    kpts = np.array([np.asarray(k["keypoints"]).flatten() for k in kpts_db])
    areas = np.array([k["area"] for k in kpts_db])
    order = scores.argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(i)
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[np.where(ovr <= thr)[0] + 1]
    return np.array(keep, dtype=np.int64)


def rescore(keypoints: np.ndarray, box_score: float, vis_thr: float) -> float:
    """mmpose person score: box score x mean of the joint scores above ``vis_thr`` (0 if none is)."""
    s = np.asarray(keypoints)[:, 2]
    valid = s[s > vis_thr]
    kpt_score = float(valid.sum() / len(valid)) if len(valid) else 0.0
    return kpt_score * float(box_score)


def coco_results(preds: np.ndarray, centers: np.ndarray, scales: np.ndarray, box_scores: np.ndarray,
                 image_ids: np.ndarray, bbox_ids: np.ndarray | None = None, *, sigmas: np.ndarray | None = None,
                 vis_thr: float = 0.2, oks_thr: float = 0.9, use_nms: bool = True,
                 category_id: int = 1) -> list[dict[str, Any]]:
    """Per-image rescoring and OKS-NMS of N decoded poses, as COCO keypoint results (mmpose ``evaluate``).

    ``preds`` is N x K x 3 (image x, y, score); the box area for NMS is ``prod(scale * 200)``. Each result has
    ``image_id``, ``category_id``, ``keypoints`` (3K, flattened), ``score``, ``center`` and ``scale``.
    """
    preds = np.asarray(preds)
    n = len(preds)
    if not (len(centers) == len(scales) == len(box_scores) == len(image_ids) == n):
        raise ValueError("preds, centers, scales, box_scores and image_ids must have the same length")
    bbox_ids = np.arange(n) if bbox_ids is None else np.asarray(bbox_ids)
    areas = np.prod(np.asarray(scales, dtype=np.float64) * 200.0, axis=1)
    per_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for i in range(n):
        per_image[image_ids[i].item() if hasattr(image_ids[i], "item") else image_ids[i]].append(dict(
            keypoints=preds[i], center=np.asarray(centers[i]), scale=np.asarray(scales[i]), area=areas[i],
            score=float(box_scores[i]), bbox_id=int(bbox_ids[i])))
    results: list[dict[str, Any]] = []
    for image_id, persons in per_image.items():
        persons.sort(key=lambda p: p["bbox_id"])
        persons = [p for j, p in enumerate(persons) if j == 0 or p["bbox_id"] != persons[j - 1]["bbox_id"]]
        for p in persons:
            p["score"] = rescore(p["keypoints"], p["score"], vis_thr)
        keep = oks_nms(persons, oks_thr, sigmas=sigmas) if use_nms else range(len(persons))
        for k in keep:
            p = persons[k]
            results.append(dict(
                image_id=image_id, category_id=category_id,
                keypoints=[float(v) for v in np.asarray(p["keypoints"], dtype=np.float64).reshape(-1)],
                score=float(p["score"]), center=[float(v) for v in p["center"]],
                scale=[float(v) for v in p["scale"]]))
    return results


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
