"""trtexec-style latency and throughput statistics for any :class:`Backend`.

Per batch size: warm-up for ``warmup_s``, then timed iterations for ``duration_s`` (at least ``min_iterations``).
Latency is the backend's device compute time (``last_timing_ms`` of backends with ``timing_source == "device"``,
measured with CUDA events) when it reports one, else the wall time of ``infer``; both are always reported, plus the
host<->device copy time where the backend reports ``last_copy_ms``. Percentiles use linear interpolation.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .base import Backend

__all__ = ["profile", "format_table", "plot_profile", "summarize"]

_STATS = ("mean", "median", "p90", "p95", "p99", "min", "max")


def summarize(times_ms: Sequence[float]) -> dict[str, float]:
    """mean, median, p90, p95, p99, min, max of a list of times in milliseconds."""
    a = np.asarray(times_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarise")
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"mean": float(a.mean()), "median": float(p50), "p90": float(p90), "p95": float(p95),
            "p99": float(p99), "min": float(a.min()), "max": float(a.max())}


def _random_input(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Normalised-image-like values, never exactly zero (zeros can hide work, e.g. sparse or early-exit paths)."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x[x == 0] = 1e-3
    return x


def profile(backend: Backend, input_shape: Sequence[int], batch_sizes: Iterable[int], *,
            warmup_s: float = 1.0, duration_s: float = 3.0,
            make_input: Callable[[tuple[int, ...], np.random.Generator], Any] | None = None,
            end_to_end: Callable[[Any], Any] | None = None, progress: bool = True,
            min_iterations: int = 10, num_buffers: int = 4, seed: int = 0,
            clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Latency/throughput rows (one per batch size) for ``backend`` on inputs of shape N x ``input_shape``.

    ``make_input(shape, rng)`` overrides the random inputs (it may return torch CUDA tensors for backends that take
    them). ``end_to_end(images)``, when given, is timed instead of ``backend.infer`` (e.g. preprocess + infer +
    decode) and must call the backend itself; the backend's own timings are still read afterwards.
    """
    c_h_w = tuple(int(v) for v in input_shape)
    if len(c_h_w) != 3:
        raise ValueError(f"input_shape={tuple(input_shape)} must be (C, H, W)")
    if warmup_s < 0 or duration_s <= 0:
        raise ValueError(f"warmup_s={warmup_s} must be >= 0 and duration_s={duration_s} > 0")
    rng = np.random.default_rng(seed)
    make = make_input or _random_input
    run = end_to_end or backend.infer
    rows = []
    for b in batch_sizes:
        b = int(b)
        if b < 1:
            raise ValueError(f"batch size {b} must be >= 1")
        shape = (b, *c_h_w)
        buffers = [make(shape, rng) for _ in range(max(1, num_buffers))]  # rotated so caches cannot help
        warmup_iters = _warm_up(run, buffers, warmup_s, clock)
        times = _measure(backend, run, buffers, warmup_iters, duration_s, min_iterations, clock)
        row = _row(backend, shape, times, warmup_iters, end_to_end is not None)
        rows.append(row)
        if progress:
            print(f"[profile] {row['backend']} batch {b}: median {row['median_ms']:.3f} ms ({row['latency_source']}),"
                  f" p99 {row['p99_ms']:.3f} ms, {row['throughput_ips']:.1f} img/s, {row['iterations']} iterations",
                  file=sys.stderr, flush=True)
    return rows


def _warm_up(run: Callable[[Any], Any], buffers: list, warmup_s: float, clock: Callable[[], float]) -> int:
    """Calls of ``run`` for ``warmup_s`` seconds, at least one (first-call allocations, lazy graph capture)."""
    i = 0
    t_end = clock() + warmup_s
    while True:
        run(buffers[i % len(buffers)])
        i += 1
        if clock() >= t_end:
            return i


def _measure(backend: Backend, run: Callable[[Any], Any], buffers: list, start: int, duration_s: float,
             min_iterations: int, clock: Callable[[], float]) -> dict[str, Any]:
    """Wall, device and copy times (ms) of timed calls for ``duration_s`` (at least ``min_iterations``)."""
    wall, dev, copy = [], [], []
    device_timing = getattr(backend, "timing_source", "wall") == "device"
    i = start
    t_start = clock()
    t_end = t_start + duration_s
    while True:
        x = buffers[i % len(buffers)]
        i += 1
        t0 = clock()
        run(x)
        t1 = clock()
        wall.append((t1 - t0) * 1e3)
        d = getattr(backend, "last_timing_ms", None)
        if device_timing and d is not None:
            dev.append(float(d))
        c = getattr(backend, "last_copy_ms", None)
        if c is not None:
            copy.append(float(c))
        if t1 >= t_end and len(wall) >= min_iterations:
            break
    return dict(wall=wall, dev=dev, copy=copy, total_s=clock() - t_start,
                use_device=device_timing and len(dev) == len(wall))


def _row(backend: Backend, shape: tuple[int, ...], t: dict[str, Any], warmup_iters: int,
         end_to_end: bool) -> dict[str, Any]:
    """One table row: latency statistics (device time where measured), throughput, wall and copy times."""
    wall, copy, total_s, b = t["wall"], t["copy"], t["total_s"], shape[0]
    lat = summarize(t["dev"] if t["use_device"] else wall)
    w = summarize(wall)
    return {
        "backend": getattr(backend, "name", type(backend).__name__),
        "precision": getattr(backend, "precision", None),
        "batch": b,
        "input_shape": list(shape),
        "latency_source": "device" if t["use_device"] else "wall",
        **{f"{k}_ms": v for k, v in lat.items()},
        "throughput_ips": b * 1e3 / lat["mean"] if lat["mean"] > 0 else float("inf"),
        **{f"wall_{k}_ms": v for k, v in w.items()},
        "wall_throughput_ips": b * len(wall) / total_s if total_s > 0 else float("inf"),
        "copy_mean_ms": float(np.mean(copy)) if len(copy) == len(wall) else None,
        "copy_median_ms": float(np.median(copy)) if len(copy) == len(wall) else None,
        "iterations": len(wall),
        "warmup_iterations": warmup_iters,
        "duration_s": total_s,
        "end_to_end": end_to_end,
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of :func:`profile` rows."""
    cols = [("backend", "backend", "<14", "s"), ("precision", "prec", "<6", "s"), ("batch", "batch", ">5", "d"),
            ("latency_source", "src", "<6", "s"), ("mean_ms", "mean", ">8", ".3f"),
            ("median_ms", "median", ">8", ".3f"),
            ("p90_ms", "p90", ">8", ".3f"), ("p95_ms", "p95", ">8", ".3f"), ("p99_ms", "p99", ">8", ".3f"),
            ("min_ms", "min", ">8", ".3f"), ("max_ms", "max", ">8", ".3f"), ("throughput_ips", "img/s", ">10", ".1f"),
            ("wall_mean_ms", "wall", ">8", ".3f"), ("copy_mean_ms", "copy", ">7", ".3f"),
            ("iterations", "iters", ">6", "d")]
    width = max([14, *(len(str(r.get("backend", ""))) for r in rows)])  # names such as onnxruntime-fp32
    cols[0] = ("backend", "backend", f"<{width}", "s")
    head = " ".join(format(title, align) for _, title, align, _ in cols)
    lines = [head + "   (ms; src = device: CUDA-event compute time, wall: host time of infer)", "-" * len(head)]
    for r in rows:
        cells = []
        for key, _, align, spec in cols:
            v = r.get(key)
            s = _fmt(v, spec) if spec != "s" else ("-" if v is None else str(v))
            cells.append(format(s, align))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def plot_profile(rows: Sequence[dict], png_path: str | os.PathLike) -> Path:
    """Latency (median, p99 band) and throughput vs batch size, one line per backend/precision, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[str, list[dict]] = {}
    for r in rows:
        label = r["backend"] + (f" {r['precision']}" if r.get("precision") else "")
        groups.setdefault(label, []).append(r)
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    ax_lat, ax_thr = fig.subplots(1, 2)
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        x = [r["batch"] for r in rs]
        line, = ax_lat.plot(x, [r["median_ms"] for r in rs], marker="o", label=label)
        ax_lat.fill_between(x, [r["min_ms"] for r in rs], [r["p99_ms"] for r in rs], color=line.get_color(),
                            alpha=0.15)
        ax_thr.plot(x, [r["throughput_ips"] for r in rs], marker="o", label=label)
    for ax, title, ylabel in ((ax_lat, "latency (median; band min..p99)", "ms"),
                              (ax_thr, "throughput", "images / s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)
    return out
