#!/usr/bin/env python
"""Benchmark heatmap decoding against the official SRPose decoder and one plain pass over the heatmaps.

Times (median of several runs, interleaved, same process) on random float32 heatmaps (default 32 x 17 x 256 x 192):
the official algorithm (torch max-pool with indices over 16 x 16 cells, then a Python loop over every person and
joint: ``tests/_decode_ref.py``), our numpy decoder, our torch CPU decoder, the mmpose simple decoder (official
and ours), and ``np.max(h, axis=(2, 3))``. Prints a table and writes the ``## Heatmap decoding`` section of
``docs/benchmarks.md`` (``--quick``: a tiny smoke run that writes only when ``--out`` is given).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

# torch's OpenMP workers would otherwise spin after each parallel region, taking a core from whatever runs next
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests"):  # tests/_decode_ref.py: the official decoders, re-implemented as oracles
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import _decode_ref as ref  # noqa: E402
from srpose._io import replace_markdown_section  # noqa: E402
from srpose.decode import decode_heatmaps  # noqa: E402

SECTION = "## Heatmap decoding"


def _time(fns: Dict[str, Callable[[], object]], runs: int) -> Dict[str, float]:
    """Median seconds per function; runs are interleaved, in a new random order every round, so that load
    changes and what the previous method leaves behind (say torch's spinning worker threads) hit all alike."""
    for fn in fns.values():  # warm-up
        fn()
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    order = np.random.default_rng(0)
    names = list(fns)
    for _ in range(runs):
        for name in order.permutation(names):
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in samples.items()}


def _one_thread(fn: Callable[[], object]) -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _check(h: np.ndarray, center: np.ndarray, scale: np.ndarray) -> bool:
    """Our decoders give the official results on the benchmark input."""
    ok = True
    want_kp, want_sc = ref.srpose_decode(h, center, scale)
    for heat in (h, torch.from_numpy(h)):
        kp, sc = decode_heatmaps(heat, center, scale, kind="srpose")
        kp, sc = np.asarray(kp), np.asarray(sc)
        ok &= bool(np.allclose(kp, want_kp, rtol=0, atol=1e-5) and np.array_equal(sc, want_sc))
    want_kp, want_sc = ref.keypoints_from_heatmaps(h, center, scale)
    kp, sc = decode_heatmaps(h, center, scale, kind="simple")
    ok &= bool(np.allclose(kp, want_kp, rtol=0, atol=1e-5) and np.array_equal(sc, want_sc))
    return ok


def run(shape: tuple, runs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h = rng.random(shape, dtype=np.float32)
    n = shape[0]
    center = (rng.random((n, 2)) * 400).astype(np.float32)
    scale = (rng.random((n, 2)) * 2 + 0.5).astype(np.float32)
    ht = torch.from_numpy(h)
    fns = {
        "official srpose (torch max-pool + Python loop)": lambda: ref.srpose_decode(h, center, scale),
        "ours srpose, numpy": lambda: decode_heatmaps(h, center, scale, kind="srpose"),
        "ours srpose, torch CPU": lambda: decode_heatmaps(ht, center, scale, kind="srpose"),
        "ours srpose, torch CPU, 1 thread":
            lambda: _one_thread(lambda: decode_heatmaps(ht, center, scale, kind="srpose")),
        "official simple (mmpose 0.x, Python loop)": lambda: ref.keypoints_from_heatmaps(h, center, scale),
        "ours simple, numpy": lambda: decode_heatmaps(h, center, scale, kind="simple"),
        "one pass: np.max(h, axis=(2, 3))": lambda: np.max(h, axis=(2, 3)),
        "one pass, torch CPU: h.amax(dim=(2, 3))": lambda: ht.amax(dim=(2, 3)),
    }
    with torch.inference_mode():
        times = _time(fns, runs)
        match = _check(h, center, scale)
    return {"shape": shape, "runs": runs, "times": times, "match": match, "mbytes": h.nbytes / 1e6}


def _rows(res: dict) -> List[tuple]:
    t = res["times"]
    one = t["one pass: np.max(h, axis=(2, 3))"]
    official = {"srpose": t["official srpose (torch max-pool + Python loop)"],
                "simple": t["official simple (mmpose 0.x, Python loop)"]}
    rows = []
    for name, sec in t.items():
        kind = "simple" if "simple" in name else "srpose"
        speedup = "" if name.startswith("one pass") else f"{official[kind] / sec:.1f}x"
        rows.append((name, f"{sec * 1e3:.2f}", f"{sec / one:.2f}x", speedup))
    return rows


def _verdict(res: dict) -> List[str]:
    t = res["times"]
    one = t["one pass: np.max(h, axis=(2, 3))"]
    off = t["official srpose (torch max-pool + Python loop)"]
    lines = []
    for name in ("ours srpose, numpy", "ours srpose, torch CPU", "ours srpose, torch CPU, 1 thread"):
        fast = off / t[name] >= 2.0
        near = t[name] / one <= 1.5
        extra = ""
        if "torch" in name:
            extra = f"; {t[name] / t['one pass, torch CPU: h.amax(dim=(2, 3))']:.2f}x torch's own one pass"
        lines.append(f"{name}: {off / t[name]:.1f}x faster than official ({'meets' if fast else 'misses'} >= 2x), "
                     f"{t[name] / one:.2f}x one pass ({'meets' if near else 'misses'} <= 1.5x){extra}")
    return lines


def _table(res: dict) -> str:
    head = "| method | median ms | vs one pass | speed-up vs official |\n|---|---:|---:|---:|\n"
    return head + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in _rows(res))


def _section(res: dict) -> str:
    shape = " x ".join(str(v) for v in res["shape"])
    env = (f"{_dt.date.today().isoformat()}, Python {platform.python_version()}, numpy {np.__version__}, "
           f"torch {torch.__version__}, torch CPU threads {torch.get_num_threads()}, os.cpu_count() "
           f"{os.cpu_count()}, {platform.machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
           f"load average {_load()}")
    return (
        f"{SECTION}\n\n"
        f"`scripts/bench_decode.py`: random float32 heatmaps {shape} ({res['mbytes']:.0f} MB), median of "
        f"{res['runs']} interleaved runs in one process, decode + map to image coordinates (center/scale). "
        f"Ratios are the figures to compare: absolute times vary with the machine and its load.\n\n"
        f"Measured {env}. Results identical to the official decoders: {'yes' if res['match'] else 'NO'}."
        f"{_load_note()}\n\n"
        "Targets: ours at least 2x faster than the official decoder and within 1.5x of one plain pass.\n\n"
        f"{_table(res)}\n"
        + "".join(f"- {line}\n" for line in _verdict(res))
        + "\n`official srpose` is SRPose `TopDownHigher` (16 x 16 `max_pool2d_with_indices`, then a loop over "
          "every person and joint). Ours reads the heatmaps once: the first maximum in raster order gives the "
          "first cell row holding the maximum; the numpy decoder then reads only the rows below it in that cell "
          "row (1/32 of the data on average) to settle ties in cell order, the torch decoder (fixed shapes, for "
          "ONNX) that whole cell row (1/16).\n"
    )


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # not on every platform
        return "n/a"


def _load_note() -> str:
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return ""
    return (" The machine was busy (load average above the CPU count) while measuring: figures vary by run, "
            "multi-threaded torch rows most; rerun on a quiet machine for clean figures.") if busy else ""


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this script's section of ``path``, keeping every other section."""
    replace_markdown_section(path, SECTION, section)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (2 x 17 x 64 x 48, 2 runs)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per method (default 15, quick 2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file whose section to write (default docs/benchmarks.md; quick: none)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    shape = (2, 17, 64, 48) if args.quick else (32, 17, 256, 192)
    runs = args.runs or (2 if args.quick else 15)
    if runs < 1:
        ap.error(f"--runs {runs} must be at least 1")
    res = run(shape, runs)
    print(f"heatmaps {' x '.join(map(str, shape))} float32, median of {runs} runs, "
          f"torch threads {torch.get_num_threads()}")
    width = max(len(r[0]) for r in _rows(res))
    print(f"{'method':<{width}}  {'ms':>9}  {'/ one pass':>10}  {'vs official':>11}")
    for name, ms, one, sp in _rows(res):
        print(f"{name:<{width}}  {ms:>9}  {one:>10}  {sp:>11}")
    for line in _verdict(res):
        print(line)
    print(f"identical to the official decoders: {'yes' if res['match'] else 'NO'}")
    out = args.out if args.out is not None else (None if args.quick else REPO / "docs" / "benchmarks.md")
    if out is not None and not args.no_write:
        write_section(out, _section(res))
        print(f"wrote the '{SECTION}' section of {out}")
    return 0 if res["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
