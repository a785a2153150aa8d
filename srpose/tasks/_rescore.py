"""The top-down results of mmpose 0.x's test protocol: per-person rescoring and OKS-NMS per image (numpy only).

Used by the evaluator and by serving, so a served pose is scored exactly as an evaluated one.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from srpose.keypoints import COCO_SIGMAS

__all__ = ["oks_iou", "oks_nms", "rescore", "rescore_all", "coco_results"]


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


def rescore_all(keypoints: np.ndarray, box_scores: np.ndarray, vis_thr: float) -> np.ndarray:
    """:func:`rescore` of N people at once (N x K x 3 keypoints, N box scores): N float32 scores."""
    s = np.asarray(keypoints)[..., 2]
    valid = s > vis_thr
    kpt = np.where(valid.any(1), (s * valid).sum(1) / np.maximum(valid.sum(1), 1), 0.0)
    return (kpt * np.asarray(box_scores, np.float64)).astype(np.float32)


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
