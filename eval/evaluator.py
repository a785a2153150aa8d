"""Top-down evaluation loop: crops -> backend (+ flip test) -> decode -> OKS-NMS -> COCO / CrowdPose AP or PCKh."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader, Subset

from srpose.engines.base import Backend
from srpose.data.datasets import TopDownDataset, collate
from srpose.data.transforms import flip_back, fliplr_joints

from .metrics import coco_keypoint_eval, coco_results, crowdpose_keypoint_eval, mpii_pckh

__all__ = ["EvalResult", "evaluate", "predict_heatmaps", "shift_right"]


@dataclass
class EvalResult:
    """Metrics of one evaluation run plus its throughput (``images_per_s`` counts person crops, end to end)."""

    metrics: dict[str, float]
    dataset: str
    backend: str
    num_persons: int
    num_images: int
    images_per_s: float
    backend_ms_per_person: float
    flip: bool
    post_process: str | None
    decoder: str
    per_joint: dict[str, float] = field(default_factory=dict)
    results_file: str | None = None
    #: N x K x 3 decoded keypoints (image x, y, score) in dataset order, before NMS; not part of ``to_dict``.
    keypoints: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the keypoints array)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "keypoints"}


def shift_right(heatmaps: np.ndarray) -> np.ndarray:
    """Shift N x K x H x W heatmaps one pixel right, keeping column 0 (numpy semantics of mmpose's
    ``out[..., 1:] = out[..., :-1]``, done without overlapping in-place copies)."""
    out = heatmaps.copy()
    out[..., 1:] = heatmaps[..., :-1]
    return out


def _infer(backend: Backend, images: np.ndarray, meta: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = backend.infer(images, meta) if backend.needs_meta else backend.infer(images)
    return np.asarray(out, dtype=np.float32), time.perf_counter() - t0


def predict_heatmaps(backend: Backend, images: np.ndarray, meta: Mapping[str, Any], *, flip: bool,
                     flip_pairs: Sequence[Sequence[int]], shift_heatmap: bool) -> tuple[np.ndarray, float]:
    """Backend output for a batch, averaged with the flipped-back output of the mirrored batch when ``flip``.

    The mirrored batch's metadata carries mirrored ``joints`` so meta-driven backends see a consistent batch.
    Returns (output, seconds spent in the backend).
    """
    out, secs = _infer(backend, images, meta)
    if not flip:
        return out, secs
    if backend.output_kind != "heatmaps":
        raise ValueError(f"backend {backend.name!r} outputs decoded keypoints, so the evaluator cannot flip-test "
                         f"it: export the model with the flip in the graph, or evaluate without flip")
    meta_f = dict(meta)
    if meta.get("joints") is not None:
        width = images.shape[-1]
        meta_f["joints"] = np.stack([fliplr_joints(j, width, flip_pairs) for j in np.asarray(meta["joints"])])
    out_f, secs_f = _infer(backend, np.ascontiguousarray(images[..., ::-1]), meta_f)
    _check_heatmaps(out_f, out.shape)
    out_f = flip_back(out_f, flip_pairs)
    if shift_heatmap:
        out_f = shift_right(out_f)
    return (out + out_f) * 0.5, secs + secs_f


def _check_heatmaps(out: np.ndarray, expected: tuple) -> None:
    if out.shape != tuple(expected):
        raise ValueError(f"backend output has shape {out.shape}, expected {tuple(expected)}")


def _predict(backend: Backend, dataset: TopDownDataset, data_cfg: Mapping[str, Any],
             test_cfg: Mapping[str, Any], *, flip: bool | None = True, post: bool = True, batch_size: int = 32,
             workers: int = 2, progress: bool = True, indices: Sequence[int] | None = None) -> dict[str, Any]:
    """Decoded keypoints of ``backend`` for the person crops ``indices`` of ``dataset`` (all by default).

    Returns the per-person arrays (indexed by dataset index; ``seen`` marks the ones predicted) and the settings.
    See :func:`evaluate` for the arguments.

    ``flip=None`` follows ``test_cfg['flip_test']``; backends with ``flip_in_graph`` are never flipped here.
    ``post=False`` disables the decoder's post-processing (``test_cfg['post_process']`` otherwise).
    The metric follows ``dataset.dataset_name``: COCO AP, CrowdPose AP or MPII PCKh. Raises rather than
    reporting a partial number (empty dataset, missing predictions, non-finite outputs).
    """
    from srpose.decode import decode_heatmaps, heatmap_to_image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset has no person boxes to evaluate")
    if backend.output_kind not in ("heatmaps", "keypoints"):
        raise ValueError(f"backend {backend.name!r} has unknown output_kind {backend.output_kind!r}")
    if backend.needs_meta and not dataset.has_gt_joints:
        raise ValueError(f"backend {backend.name!r} needs ground-truth joints: evaluate with GT boxes "
                         f"(--gt-bbox), not detections")
    cfg = {**dataset.data_cfg, **dict(data_cfg)}
    test_cfg = dict(test_cfg)
    do_flip = bool(test_cfg.get("flip_test", True) if flip is None else flip) and not backend.flip_in_graph
    post_process = test_cfg.get("post_process", "default")
    use_post = bool(post) and post_process not in (None, False, "none")
    decoder = str(cfg.get("decoder", "simple"))
    flip_pairs = [tuple(p) for p in cfg.get("flip_pairs", dataset.flip_pairs)]
    shift = bool(test_cfg.get("shift_heatmap", False))
    num_joints = dataset.num_joints
    heatmap_size = tuple(int(v) for v in cfg["heatmap_size"])

    preds = np.zeros((n, num_joints, 3), dtype=np.float32)
    centers = np.zeros((n, 2), dtype=np.float32)
    scales = np.zeros((n, 2), dtype=np.float32)
    box_scores = np.zeros(n, dtype=np.float32)
    image_ids = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    backend_secs = 0.0

    subset = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    from tqdm import tqdm

    t_start = time.perf_counter()
    with tqdm(total=len(subset), unit="person", desc=f"eval {backend.name}", disable=not progress, leave=False) as bar:
        for batch in loader:
            images = batch["img"].numpy()
            meta = {k: v for k, v in batch.items() if k != "img"}
            out, secs = predict_heatmaps(backend, images, meta, flip=do_flip, flip_pairs=flip_pairs,
                                         shift_heatmap=shift)
            backend_secs += secs
            b = len(images)
            if backend.output_kind == "heatmaps":
                if out.ndim != 4 or out.shape[:2] != (b, num_joints):
                    raise ValueError(f"backend {backend.name!r} returned shape {out.shape}, expected "
                                     f"{b} x {num_joints} x H x W heatmaps")
                if (out.shape[3], out.shape[2]) != heatmap_size:
                    raise ValueError(f"backend {backend.name!r} returned {out.shape[3]}x{out.shape[2]} heatmaps but "
                                     f"the config says heatmap_size {heatmap_size[0]}x{heatmap_size[1]}")
                kpts, scores = decode_heatmaps(out, meta["center"], meta["scale"], kind=decoder, post=use_post,
                                               post_process=post_process if use_post else "default",
                                               modulate_kernel=int(test_cfg.get("modulate_kernel", 11)))
            else:
                if out.ndim != 3 or out.shape != (b, num_joints, 3):
                    raise ValueError(f"backend {backend.name!r} returned shape {out.shape}, expected "
                                     f"{b} x {num_joints} x 3 keypoints (x, y, score)")
                kpts = heatmap_to_image(out[..., :2], meta["center"], meta["scale"], heatmap_size)
                scores = out[..., 2:3]
            idx = np.asarray(meta["idx"], dtype=np.int64)
            preds[idx, :, :2] = np.asarray(kpts, dtype=np.float32)
            preds[idx, :, 2:3] = np.asarray(scores, dtype=np.float32).reshape(b, num_joints, 1)
            centers[idx] = meta["center"]
            scales[idx] = meta["scale"]
            box_scores[idx] = meta["bbox_score"]
            image_ids[idx] = meta["image_id"]
            seen[idx] = True
            bar.update(b)
    elapsed = time.perf_counter() - t_start

    return dict(preds=preds, centers=centers, scales=scales, box_scores=box_scores, image_ids=image_ids, seen=seen,
                backend_secs=backend_secs, elapsed=elapsed, cfg=cfg, do_flip=do_flip, post_process=post_process,
                use_post=use_post, decoder=decoder)


def predict_shard(backend: Backend, dataset: TopDownDataset, data_cfg: Mapping[str, Any],
                  test_cfg: Mapping[str, Any], indices: Sequence[int], **kwargs: Any) -> list[np.ndarray]:
    """Per-person rows (keypoints K x 3, center, scale, box score, image id) for ``indices``: one rank's share of a
    distributed evaluation; :func:`score_rows` scores the gathered rows."""
    st = _predict(backend, dataset, data_cfg, test_cfg, indices=indices, **kwargs)
    return [np.concatenate([st["preds"][i].reshape(-1), st["centers"][i], st["scales"][i],
                            [st["box_scores"][i], st["image_ids"][i]]]).astype(np.float64) for i in indices]


def score_rows(dataset: TopDownDataset, data_cfg: Mapping[str, Any], rows: Sequence[np.ndarray]) -> dict[str, float]:
    """Metrics of the rows of :func:`predict_shard` gathered for every person of ``dataset`` in index order."""
    n, k = len(dataset), dataset.num_joints
    if len(rows) != n or any(r is None for r in rows):
        raise RuntimeError(f"got {len(rows)} rows for {n} persons; not reporting a partial metric")
    arr = np.stack(rows)
    state = dict(preds=arr[:, :3 * k].reshape(n, k, 3).astype(np.float32), centers=arr[:, 3 * k:3 * k + 2],
                 scales=arr[:, 3 * k + 2:3 * k + 4], box_scores=arr[:, 3 * k + 4],
                 image_ids=arr[:, 3 * k + 5].astype(np.int64), seen=np.ones(n, bool),
                 cfg={**dataset.data_cfg, **dict(data_cfg)})
    return _score(dataset, state, backend_name="sharded")[0]


def evaluate(backend: Backend, dataset: TopDownDataset, data_cfg: Mapping[str, Any],
             test_cfg: Mapping[str, Any], *, flip: bool | None = True, post: bool = True, batch_size: int = 32,
             workers: int = 2, progress: bool = True, results_file: str | Path | None = None) -> EvalResult:
    """Run ``backend`` over every person crop of ``dataset`` and score the decoded keypoints.

    ``flip=None`` follows ``test_cfg['flip_test']``; backends with ``flip_in_graph`` are never flipped here.
    ``post=False`` disables the decoder's post-processing (``test_cfg['post_process']`` otherwise).
    The metric follows ``dataset.dataset_name``: COCO AP, CrowdPose AP or MPII PCKh. Raises rather than
    reporting a partial number (empty dataset, missing predictions, non-finite outputs).
    """
    st = _predict(backend, dataset, data_cfg, test_cfg, flip=flip, post=post, batch_size=batch_size,
                  workers=workers, progress=progress)
    metrics, results, per_joint = _score(dataset, st, backend_name=backend.name)
    if results_file is not None:
        from srpose._io import atomic_write_json

        atomic_write_json(results_file, results)
    n = len(dataset)
    elapsed = st["elapsed"]
    return EvalResult(
        metrics=metrics, dataset=dataset.dataset_name, backend=backend.name, num_persons=n,
        num_images=int(getattr(dataset, "num_images", len(set(st["image_ids"].tolist())))),
        images_per_s=n / elapsed if elapsed > 0 else float("inf"),
        backend_ms_per_person=st["backend_secs"] * 1e3 / n, flip=st["do_flip"],
        post_process=st["post_process"] if st["use_post"] else None, decoder=st["decoder"], per_joint=per_joint,
        results_file=None if results_file is None else str(results_file), keypoints=st["preds"])


def _score(dataset: TopDownDataset, st: Mapping[str, Any], *, backend_name: str
           ) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, float]]:
    """(metrics, results, per-joint table) of the predicted persons ``st``."""
    preds, centers, scales, seen = st["preds"], st["centers"], st["scales"], st["seen"]
    box_scores, image_ids, cfg = st["box_scores"], st["image_ids"], st["cfg"]
    n = len(dataset)
    if not seen.all():
        raise RuntimeError(f"{int((~seen).sum())} of {n} persons got no prediction; not reporting a partial metric")
    bad = ~np.isfinite(preds).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"backend {backend_name!r} produced non-finite keypoints for {int(bad.sum())} of {n} "
                         f"persons (e.g. indices {np.where(bad)[0][:5].tolist()})")

    name = dataset.dataset_name
    per_joint: dict[str, float] = {}
    if name == "mpii":
        gt = np.stack([r["joints"] for r in dataset.records])
        heads = np.array([r["headsize"] for r in dataset.records])
        metrics, pj = mpii_pckh(preds[..., :2], gt[..., :2], gt[..., 2], heads)
        from srpose.keypoints import MPII_JOINTS

        per_joint = {j: float(v) for j, v in zip(MPII_JOINTS, pj)}
        results = [dict(image=dataset.records[i]["image_file"], image_id=int(image_ids[i]),
                        keypoints=[float(v) for v in preds[i].reshape(-1)], score=float(preds[i, :, 2].mean()),
                        center=[float(v) for v in centers[i]], scale=[float(v) for v in scales[i]])
                   for i in range(n)]
    else:
        results = coco_results(preds, centers, scales, box_scores, image_ids, np.arange(n),
                               sigmas=dataset.sigmas, vis_thr=float(cfg.get("vis_thr", 0.2)),
                               oks_thr=float(cfg.get("oks_thr", 0.9)), use_nms=bool(cfg.get("use_nms", True)))
        if not results:
            raise RuntimeError("no keypoint results survived OKS-NMS; not reporting a metric")
        if name == "crowdpose":
            metrics = crowdpose_keypoint_eval(dataset.ann_file, results)
        elif name == "coco":
            metrics = coco_keypoint_eval(dataset.ann_file, results, sigmas=dataset.sigmas)
        else:
            raise ValueError(f"no metric for dataset {name!r}: expected coco, crowdpose or mpii")
    return metrics, results, per_joint
