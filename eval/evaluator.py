"""The evaluation loop, one for every task: batches -> backend (+ host flip test) -> decode -> results -> metric.

The task (:mod:`srpose.tasks`) says what a batch is, how to flip and decode and what the results are; this module
runs it over a dataset with progress and timing and scores the results with the dataset's protocol: COCO AP,
CrowdPose AP or MPII PCKh (pycocotools, as mmpose 0.x).
"""
from __future__ import annotations

import collections
import copy
import os
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from srpose.engines.base import Backend
from srpose.tasks import PoseTask, Poses
from srpose.tasks.served import decode_served, infer_served, served_batches

from .metrics import COCO_METRIC_NAMES, coco_keypoint_eval, crowdpose_keypoint_eval, mpii_pckh

__all__ = ["EvalOptions", "EvalResult", "evaluate", "predict", "score", "predict_rows", "score_rows",
           "format_metrics", "default_workers"]


def default_workers() -> int:
    """Data-loader processes by default: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)

#: ``on_output(images, outputs)``: sees every backend result of an evaluation (parity probes)
OutputHook = Callable[[np.ndarray, dict], None]


@dataclass
class EvalOptions:
    """How to evaluate: ``flip`` None follows the config's ``test_cfg.flip_test`` (graphs with the flip folded in
    are never flipped again); ``post`` the codec's refinement; ``batch_size`` persons per batch (top-down; bottom-up
    runs one image at a time; image-input graphs: whole images adding up to about this many persons);
    ``workers`` data-loader processes (None: one per core; they decode the images and, for crop graphs, crop and
    normalise); ``results_file`` also writes the keypoint results there (COCO results format); ``concurrency``:
    requests in flight to a served model (Triton), which takes one image per request; ``skip_bad_images``: images
    that cannot be decoded (empty, truncated, not an image) are left out of the evaluation and named in the result
    (every image is decoded once more first), instead of stopping it."""

    flip: bool | None = None
    post: bool = True
    batch_size: int = 32
    workers: int | None = None
    progress: bool = True
    results_file: str | Path | None = None
    concurrency: int = 8
    skip_bad_images: bool = False

    def check(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    @property
    def num_workers(self) -> int:
        return default_workers() if self.workers is None else int(self.workers)


@dataclass
class EvalResult:
    """Metrics of one evaluation run plus its throughput. ``images_per_s`` and ``backend_ms_per_person`` count the
    dataset's items (person crops top-down, whole images bottom-up); ``num_persons`` the people scored."""

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
    task: str = "top-down"
    #: images left out because they cannot be decoded (``skip_bad_images``); the protocol scored the others
    bad_images: list[str] = field(default_factory=list)
    #: the decoded people (image x, y, score), not part of ``to_dict``
    poses: Poses | None = field(default=None, repr=False)

    @property
    def keypoints(self) -> np.ndarray | None:
        """N x K x 3 keypoints (image x, y, score) in dataset order, before NMS."""
        if self.poses is None:
            return None
        return self.poses.keypoints[np.argsort(self.poses.indices, kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the poses)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "poses"}


def predict(task: PoseTask, backend: Backend, dataset: Any, options: EvalOptions | None = None, *,
            indices: Sequence[int] | None = None, on_output: OutputHook | None = None) -> tuple[Poses, dict]:
    """The :class:`Poses` of ``backend`` on the items ``indices`` of ``dataset`` (all by default), and the run's
    statistics (``backend_s``, ``elapsed_s``, ``flip``)."""
    from tqdm import tqdm

    opts = options or EvalOptions()
    opts.check()
    n = len(dataset) if indices is None else len(indices)
    if n == 0:
        raise ValueError("the dataset has nothing to evaluate")
    if backend.needs_meta and not getattr(dataset, "has_gt_joints", False):
        raise ValueError(f"backend {backend.name!r} needs ground-truth joints: evaluate with GT boxes (--gt-bbox), "
                         "not detections")
    flip = task.host_flip(backend, opts.flip)
    t_start = time.perf_counter()
    served = bool(getattr(backend, "serves_images", False))  # whole images in, people out (srpose.tasks.served)
    if served and not opts.post:
        raise ValueError(f"backend {backend.name!r} decodes on the server, with the codec's refinement: evaluate it "
                         "without --no-post")
    if backend.image_input and flip and task.kind == "top-down" and not served:
        raise ValueError(f"{backend.name}: the image graph was exported without the flip test, and images cannot be "
                         "flipped around it: export it with --flip, or evaluate with --no-flip")
    with tqdm(total=n, unit=task.item, desc=f"eval {backend.name}", disable=not opts.progress, leave=False) as bar:
        if served:
            parts, backend_s = _served(task, backend, dataset, opts, indices, flip, bar)
        else:
            be = _Hooked(backend, on_output) if on_output else backend
            batches = (task.image_batches(dataset, backend.card, batch_size=opts.batch_size, workers=opts.num_workers,
                                          indices=indices) if backend.image_input else
                       task.batches(dataset, batch_size=opts.batch_size, workers=opts.num_workers, indices=indices))
            if backend.image_input and task.kind == "top-down":
                parts, backend_s = _pipelined(task, be, batches, bar)
            else:
                parts, backend_s = _batched(task, be, batches, flip, opts.post, bar)
    elapsed = time.perf_counter() - t_start
    if flip and not backend.decoded and task.kind == "top-down" and backend.timing_source == "device" and n:
        host_ms = max(0.0, elapsed - backend_s) * 1e3 / n
        warnings.warn(f"{backend.name}: the flip test and decoding ran on the host, {host_ms:.2f} ms per person "
                      f"({1e3 / max(host_ms, 1e-9):.0f} persons/s at most, whatever the GPU does); export the "
                      "image-to-keypoints graph (srpose export ... --image-input) to run crop, flip and decoding in "
                      "the engine", stacklevel=2)
    return Poses.concat(parts, task.cfg.num_joints), dict(backend_s=backend_s, elapsed_s=elapsed, flip=flip)


def _served(task: PoseTask, backend: Backend, dataset: Any, opts: EvalOptions, indices: Sequence[int] | None,
            flip: bool, bar: Any) -> tuple[list[Poses], float]:
    parts, backend_s = [], 0.0
    for batch in served_batches(task, dataset, images_per_batch=4 * opts.concurrency, indices=indices):
        answers, secs = infer_served(task, backend, batch, flip=flip, concurrency=opts.concurrency)
        parts.append(decode_served(task, answers, batch))
        backend_s += secs
        bar.update(len(batch["idx"]))
    return parts, backend_s


def _batched(task: PoseTask, backend: Backend, batches: Any, flip: bool, post: bool, bar: Any
             ) -> tuple[list[Poses], float]:
    parts, backend_s = [], 0.0
    for batch in batches:
        out, secs = task.infer(backend, batch, flip=flip)
        parts.append(task.decode(out, batch, decoded=backend.decoded, post=post))
        backend_s += secs
        bar.update(len(batch["idx"]))
    return parts, backend_s


def _pipelined(task: PoseTask, backend: Backend, batches: Any, bar: Any) -> tuple[list[Poses], float]:
    """Image batches through an image-to-keypoints graph, ``backend.slots`` in flight: the next batch is filled
    into the backend's input arrays and submitted while the previous one runs."""
    parts: list[Poses] = []
    pending: collections.deque = collections.deque()
    backend_s = 0.0

    def collect() -> float:
        handle, batch = pending.popleft()
        t0 = time.perf_counter()
        out = handle.result()
        secs = time.perf_counter() - t0
        parts.append(task.decode(out, batch, decoded=True, post=True))
        bar.update(len(batch["idx"]))
        return secs

    for batch in batches:
        feed = task.image_feed(backend, batch)
        t0 = time.perf_counter()
        pending.append((backend.submit(feed), batch))
        backend_s += time.perf_counter() - t0
        while len(pending) >= max(1, int(backend.slots)):
            backend_s += collect()
    while pending:
        backend_s += collect()
    return parts, backend_s


def evaluate(task: PoseTask, backend: Backend, dataset: Any, options: EvalOptions | None = None, *,
             on_output: OutputHook | None = None) -> EvalResult:
    """Run ``backend`` over every item of ``dataset`` and score the people it finds with the dataset's protocol.
    Raises rather than reporting a partial number (missing predictions, non-finite outputs)."""
    opts = options or EvalOptions()
    opts.check()
    bad: list[str] = []
    if opts.skip_bad_images:
        from srpose.data.checks import without_bad_images

        dataset, bad = without_bad_images(dataset, workers=opts.num_workers)
        if bad:
            warnings.warn(f"left out {len(bad)} image(s) that cannot be decoded: {', '.join(bad[:5])}"
                          + (" ..." if len(bad) > 5 else ""), stacklevel=2)
    poses, stats = predict(task, backend, dataset, opts, on_output=on_output)
    metrics, results, per_joint = score(task, dataset, poses, backend_name=backend.name)
    if opts.results_file is not None:
        from srpose._io import atomic_write_json

        atomic_write_json(opts.results_file, results)
    n, elapsed = len(dataset), stats["elapsed_s"]
    return EvalResult(
        metrics=metrics, dataset=dataset.dataset_name, backend=backend.name, num_persons=len(poses),
        num_images=int(getattr(dataset, "num_images", len(set(poses.image_ids.tolist())))),
        images_per_s=n / elapsed if elapsed > 0 else float("inf"), backend_ms_per_person=stats["backend_s"] * 1e3 / n,
        flip=stats["flip"] or backend.flip_in_graph, post_process=task.post_process_name(opts.post),
        decoder=task.codec.name, per_joint=per_joint, task=task.kind,
        results_file=None if opts.results_file is None else str(opts.results_file), bad_images=bad, poses=poses)


def score(task: PoseTask, dataset: Any, poses: Poses, *, backend_name: str = "backend"
          ) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, float]]:
    """(metrics, keypoint results, per-joint table) of ``poses`` on ``dataset``'s protocol."""
    bad = ~np.isfinite(poses.keypoints).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"backend {backend_name!r} produced non-finite keypoints for {int(bad.sum())} of "
                         f"{len(poses)} people (e.g. items {poses.indices[bad][:5].tolist()})")
    results = task.to_results(poses, dataset)
    name = dataset.dataset_name
    if name == "mpii":
        from srpose.keypoints import MPII_JOINTS

        gt = np.stack([r["joints"] for r in dataset.records])
        heads = np.array([r["headsize"] for r in dataset.records])
        preds = poses.keypoints[np.argsort(poses.indices, kind="stable")]
        metrics, pj = mpii_pckh(preds[..., :2], gt[..., :2], gt[..., 2], heads)
        return metrics, results, {j: float(v) for j, v in zip(MPII_JOINTS, pj)}
    if not results:  # as mmpose: no person found at all scores zero rather than failing
        warnings.warn(f"backend {backend_name!r} found no person in {len(dataset)} items; every metric is 0",
                      stacklevel=3)
        return {m: 0.0 for m in COCO_METRIC_NAMES}, results, {}
    gt = _scored_annotations(dataset)
    if name == "crowdpose":
        return crowdpose_keypoint_eval(gt, results), results, {}
    if name == "coco":
        return coco_keypoint_eval(gt, results, sigmas=dataset.sigmas), results, {}
    raise ValueError(f"no metric for dataset {name!r}: expected coco, crowdpose or mpii")


def _scored_annotations(dataset: Any) -> Any:
    """The annotation file the protocol scores against: the dataset's, without the images it left out."""
    skipped = set(getattr(dataset, "skipped_image_ids", None) or ())
    if not skipped:
        return dataset.ann_file
    import json

    with open(dataset.ann_file, "r", encoding="utf-8") as f:
        data = json.load(f)
    data["images"] = [im for im in data["images"] if im["id"] not in skipped]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in skipped]
    return data


# ---------------------------------------------------------------------------------------------- sharded (training)
def predict_rows(task: PoseTask, backend: Backend, dataset: Any, indices: Sequence[int],
                 options: EvalOptions | None = None) -> list[np.ndarray]:
    """One rank's share of a distributed evaluation: a row per person (see :meth:`Poses.to_rows`)."""
    return predict(task, backend, dataset, options, indices=indices)[0].to_rows()


def score_rows(task: PoseTask, dataset: Any, rows: Sequence[np.ndarray]) -> dict[str, float]:
    """Metrics of the rows of :func:`predict_rows` gathered from every rank."""
    if any(r is None for r in rows):
        raise RuntimeError("some ranks returned no rows; not reporting a partial metric")
    return score(task, dataset, Poses.from_rows(rows, task.cfg.num_joints), backend_name="sharded")[0]


def format_metrics(metrics: dict[str, float]) -> str:
    """Two aligned rows: metric names and values."""
    width = max(7, *(len(k) + 1 for k in metrics))
    return "".join(f"{k:>{width}}" for k in metrics) + "\n" + "".join(f"{v:>{width}.4f}" for v in metrics.values())


class _Hooked(Backend):
    """``backend`` with ``hook(images, outputs)`` called after every inference."""

    def __init__(self, backend: Backend, hook: OutputHook) -> None:
        super().__init__()
        self.backend, self.hook = backend, hook
        self.name, self.needs_meta, self.card = backend.name, backend.needs_meta, backend.card
        self.timing_source = backend.timing_source

    def input_arrays(self, shapes: Any) -> dict[str, np.ndarray]:
        return self.backend.input_arrays(shapes)

    def infer(self, images: np.ndarray, meta: Any = None) -> dict[str, np.ndarray]:
        out = self.backend.infer(images, meta) if self.needs_meta else self.backend.infer(images)
        self.hook(images, out)
        return out
