"""Load test of a served model, perf_analyzer style: ``ServedBenchOptions -> bench_served(backend, workload,
options) -> rows`` (one per concurrency), rendered as a table (:func:`format_served_table`), JSON and a PNG
(:func:`plot_served`).

At concurrency C, C client threads send requests back to back (closed loop) for ``duration_s`` after
``warmup_s``; each request is one image (+ its person boxes, top-down) from the workload, taken round robin. A row
holds the end-to-end latency percentiles (client send -> people back, :func:`srpose.engines.profiler.summarize`),
requests/s, images/s and persons/s (boxes sent, top-down; people found, bottom-up) and the errors.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from srpose.tasks import PoseTask

__all__ = ["ServedBenchOptions", "served_workload", "synthetic_workload", "bench_served", "format_served_table",
           "plot_served"]


@dataclass
class ServedBenchOptions:
    """Concurrency levels to sweep, warm-up and timed seconds per level, the least requests per level."""

    concurrency: Sequence[int] = (1, 4, 16)
    warmup_s: float = 2.0
    duration_s: float = 10.0
    min_requests: int = 16
    progress: bool = True

    def check(self) -> None:
        if not self.concurrency or any(int(c) < 1 for c in self.concurrency):
            raise ValueError(f"concurrency levels must be >= 1, got {list(self.concurrency)}")
        if self.warmup_s < 0 or self.duration_s <= 0:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be >= 0 and duration_s ({self.duration_s}) > 0")


def served_workload(task: PoseTask, dataset: Any) -> list[dict[str, Any]]:
    """The requests of ``dataset`` (as the evaluator sends them): image bytes (+ rows), one per image."""
    from srpose.tasks.served import served_requests, wire_request

    return [wire_request(r) for r in served_requests(task, dataset)]


def synthetic_workload(task: PoseTask, *, images: int = 4, persons: int = 4, size: tuple[int, int] = (640, 480),
                       seed: int = 0) -> list[dict[str, Any]]:
    """``images`` random JPEG images of ``size`` (W, H) with ``persons`` random person boxes each (top-down)."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(images):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img)
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
            raise RuntimeError("OpenCV could not encode a JPEG")
        req: dict[str, Any] = {"image": buf.tobytes()}
        if task.kind == "top-down":
            bw, bh = rng.uniform(60, 200, persons), rng.uniform(120, 400, persons)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            req["boxes"] = np.stack([x, y, bw, bh, np.ones(persons)], 1)
        out.append(req)
    return out


def _level(backend: Any, workload: list[dict[str, Any]], concurrency: int, warmup_s: float, duration_s: float,
           min_requests: int) -> dict[str, Any]:
    """One concurrency level: C threads in a closed loop; latencies of the timed window only."""
    from srpose.engines.profiler import summarize

    order = itertools.cycle(range(len(workload)))
    lock = threading.Lock()
    lat: list[float] = []
    counts = {"requests": 0, "images": 0, "persons": 0, "errors": 0}
    errors: list[str] = []
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s

    def worker() -> None:
        while True:
            with lock:
                now = time.perf_counter()
                if now >= t_end and counts["requests"] >= min_requests:
                    return
                i = next(order)
            t0 = time.perf_counter()
            try:
                out = backend.infer_request(workload[i])
                ok = True
            except Exception as e:  # a failed request is counted and reported, the load goes on
                ok, out = False, None
                with lock:
                    errors.append(str(e)[:300])
            t1 = time.perf_counter()
            if t0 < t_measure:
                continue
            with lock:
                counts["requests"] += 1
                if not ok:
                    counts["errors"] += 1
                    continue
                lat.append((t1 - t0) * 1e3)
                counts["images"] += 1
                counts["persons"] += int(len(out["keypoints"]))

    threads = [threading.Thread(target=worker, name=f"bench-{k}") for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = max(time.perf_counter() - t_measure, 1e-9)
    row: dict[str, Any] = {"concurrency": concurrency, **counts, "seconds": elapsed,
                           "requests_per_s": counts["requests"] / elapsed, "images_per_s": counts["images"] / elapsed,
                           "persons_per_s": counts["persons"] / elapsed, "first_errors": errors[:3]}
    if lat:
        row.update({f"{k}_ms": v for k, v in summarize(lat).items()})
    return row


def bench_served(backend: Any, workload: list[dict[str, Any]], options: ServedBenchOptions | None = None
                 ) -> list[dict[str, Any]]:
    """One row per concurrency level of ``options`` (see the module docstring)."""
    import sys

    opts = options or ServedBenchOptions()
    opts.check()
    if not workload:
        raise ValueError("the workload has no request")
    rows = []
    for c in opts.concurrency:
        row = _level(backend, workload, int(c), opts.warmup_s, opts.duration_s, opts.min_requests)
        row.update(backend=backend.name, url=getattr(backend, "url", None), model=getattr(backend, "model", None))
        rows.append(row)
        if opts.progress:
            print(f"[bench] concurrency {c}: {row['images_per_s']:.1f} images/s, {row['persons_per_s']:.1f} "
                  f"persons/s, p50 {row.get('median_ms', float('nan')):.1f} ms, "
                  f"p99 {row.get('p99_ms', float('nan')):.1f}"
                  f" ms, {row['errors']} errors", file=sys.stderr, flush=True)
    return rows


def format_served_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    head = ("| concurrency | requests | images/s | persons/s | p50 ms | p90 ms | p99 ms | mean ms | errors |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    nan = float("nan")
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['images_per_s']:.1f} | {r['persons_per_s']:.1f} | "
                     f"{r.get('median_ms', nan):.1f} | {r.get('p90_ms', nan):.1f} | {r.get('p99_ms', nan):.1f} | "
                     f"{r.get('mean_ms', nan):.1f} | {r['errors']} |")
    return "\n".join(lines)


def plot_served(rows: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Throughput (images/s, persons/s) and latency percentiles against concurrency."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from srpose._io import atomic_path

    c = [r["concurrency"] for r in rows]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(c, [r["images_per_s"] for r in rows], "o-", label="images/s")
    ax1.plot(c, [r["persons_per_s"] for r in rows], "s-", label="persons/s")
    ax1.set(xlabel="concurrency", ylabel="throughput", xscale="log", title="throughput")
    for key in ("median", "p90", "p99"):
        ax2.plot(c, [r.get(f"{key}_ms", np.nan) for r in rows], "o-", label=key)
    ax2.set(xlabel="concurrency", ylabel="latency (ms)", xscale="log", title="end-to-end latency")
    for ax in (ax1, ax2):
        ax.set_xticks(c, [str(v) for v in c])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{rows[0].get('model')} via {rows[0].get('backend')}" if rows else "served model")
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_png
