"""Latency and throughput of any backend (torch, ONNX Runtime, TensorRT), trtexec-style, for any task:
``BenchOptions -> bench(...) -> list of rows`` (one per batch size; :mod:`srpose.engines.profiler` does the
timing, this module picks the input shape and the end-to-end work from the task).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from srpose.tasks import PoseTask

__all__ = ["BenchOptions", "bench", "make_end_to_end", "task_of_backend", "image_graph_feed"]


@dataclass
class BenchOptions:
    """``batches``: batch sizes (None: 1, 8, 32 top-down, those within a crop graph's profile, 1 bottom-up; sizes
    outside a graph's profile are refused; for a top-down image-to-keypoints graph:
    persons in one 640x480 image); ``input_size`` (W, H) to time a dynamic-size (bottom-up) model at (default: the
    config's); ``end_to_end`` also times the pre-processing (one affine crop + normalisation per person) and the
    decoding (image graphs do both inside: they are always timed end to end)."""

    batches: Sequence[int] | None = None
    input_size: tuple[int, int] | None = None
    warmup_s: float = 1.0
    duration_s: float = 3.0
    end_to_end: bool = False
    progress: bool = True


def task_of_backend(backend: Any) -> PoseTask:
    """The task of a file backend, from its card (its codec, so decoding matches the export exactly)."""
    from srpose.config import PoseConfig
    from srpose.tasks import task_for

    card = backend.card
    if card is None or card.config is None:
        raise ValueError(f"{getattr(backend, 'path', backend.name)} has no srpose card (input size, normalisation, "
                         "codec): export it with `srpose export`")
    return task_for(PoseConfig.from_dict(card.config))


def bench(backend: Any, task: PoseTask, options: BenchOptions | None = None) -> list[dict[str, Any]]:
    """Latency/throughput rows of ``backend`` on inputs of the task's shape."""
    from srpose.engines.profiler import profile

    opts = options or BenchOptions()
    if opts.batches is not None and any(b < 1 for b in opts.batches):
        raise ValueError(f"batch sizes must be >= 1, got {list(opts.batches)}")
    c, h, w = task.input_shape()
    if opts.input_size is not None:
        if task.default_hw_profile() is None:
            raise ValueError(f"--input-size applies to bottom-up models only; {task.cfg.name} has a fixed input "
                             f"{w}x{h}")
        w, h = opts.input_size
    if opts.end_to_end and task.kind != "top-down":
        raise ValueError("--end-to-end times person crops (top-down); bottom-up models take whole images: drop "
                         "--end-to-end")
    batches = list(opts.batches or _default_batches(backend, task))
    _check_batches(backend, batches, (c, h, w))
    if backend.image_input:
        rows = profile(backend, (3, h, w), batches, warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                       make_input=lambda shape, rng: image_graph_feed(task, backend.card, shape, rng),
                       progress=opts.progress)
        for r in rows:
            r.update(model=task.cfg.name, end_to_end=True)
        return rows
    e2e = make_end_to_end(backend, task) if opts.end_to_end else None
    rows = profile(backend, (c, h, w), batches, warmup_s=opts.warmup_s, duration_s=opts.duration_s,
                   end_to_end=e2e, progress=opts.progress)
    for r in rows:
        r["model"] = task.cfg.name
    return rows


def _default_batches(backend: Any, task: PoseTask) -> list[int]:
    """1 bottom-up; top-down 1, 8, 32, those within a crop graph's profile (and its largest batch up to 32)."""
    if task.kind == "bottom-up":
        return [1]
    card = getattr(backend, "card", None)
    if card is None or backend.image_input or not card.batch:
        return [1, 8, 32]
    lo, _, hi = card.batch
    return sorted({b for b in (1, 8, 32) if lo <= b <= hi} | {max(lo, min(hi, 32))})


def _check_batches(backend: Any, batches: Sequence[int], chw: tuple[int, int, int]) -> None:
    """Refuse, before any timing, batch sizes a graph's profile does not cover (TensorRT cannot run them; ONNX
    Runtime would time a graph outside its intended range) and batches whose input arrays alone would not fit in
    the memory free now (a batch of 100000 would otherwise run out of memory after minutes of silence)."""
    import os

    card = getattr(backend, "card", None)
    if card is not None and card.batch:  # persons per call for image-to-keypoints graphs
        lo, _, hi = card.batch
        outside = [b for b in batches if not lo <= b <= hi]
        if outside:
            raise ValueError(f"batch sizes {outside} are outside the graph's profile {lo}..{hi}: pass --batch within "
                             "it, or re-export with a wider --batch MIN,OPT,MAX")
    try:  # Linux's estimate of what can be allocated (page cache included), else the free pages
        with open("/proc/meminfo") as f:
            free = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without these
            return
    need = max(batches) * int(np.prod(chw)) * 4 * 2  # float32 inputs, and the mirrored or pinned copy
    if need > free:
        raise ValueError(f"batch {max(batches)} needs {need / 1e9:.1f} GB for its inputs alone, more than the "
                         f"{free / 1e9:.1f} GB of memory free: pass a smaller --batch")


def image_graph_feed(task: PoseTask, card: Any, shape: tuple[int, ...], rng: np.random.Generator
                     ) -> dict[str, np.ndarray]:
    """Inputs of an image-to-keypoints graph for a bench "batch" of ``shape[0]`` (top-down: that many persons in
    one 640x480 image, within the graph's image profile; bottom-up: ``shape[0]`` images of ``shape[2:]``)."""
    from srpose.card import BOX_IMAGE, BOXES, IMAGES

    n = int(shape[0])
    if task.kind != "top-down":
        return {IMAGES: rng.integers(0, 256, (n, int(shape[2]), int(shape[3]), 3), dtype=np.uint8)}
    (h_lo, w_lo), _, (h_hi, w_hi) = card.hw_profile
    h, w = min(max(480, h_lo), h_hi), min(max(640, w_lo), w_hi)
    image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    bw, bh = rng.uniform(0.1, 0.3, n) * w, rng.uniform(0.3, 0.6, n) * h
    boxes = np.stack([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh, np.ones(n)], 1).astype(np.float32)
    return {IMAGES: image, BOXES: boxes, BOX_IMAGE: np.zeros(n, np.int32)}


def make_end_to_end(backend: Any, task: PoseTask, seed: int = 0) -> Callable[[Any], Any]:
    """A callable timing pre-processing (one affine crop per person from a 640x480 image, normalisation),
    inference and the task codec's decoding for a batch the size of its argument."""
    from srpose.data.transforms import normalize_image, warp_affine_crop

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    w, h = task.cfg.image_size
    mean, std = task.cfg.data["mean"], task.cfg.data["std"]
    codec = task.codec

    def run(batch: Any) -> Any:
        n = len(batch)
        centers = np.stack([rng.uniform(200, 440, n), rng.uniform(150, 330, n)], 1).astype(np.float32)
        scales = np.tile(np.array([[w / 200.0 * 1.25, h / 200.0 * 1.25]], np.float32), (n, 1))
        crops = np.stack([normalize_image(warp_affine_crop(image, c, s, 0.0, (w, h))[0][..., ::-1], mean, std)
                          for c, s in zip(centers, scales)])
        out = next(iter(backend.infer(crops).values()))
        if backend.decoded:
            return codec.to_image(out[..., :2], centers, scales), out[..., 2:3]
        return codec.decode_to_image(out, centers, scales)

    return run
