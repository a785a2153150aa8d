#!/usr/bin/env python
"""Benchmark CPU training throughput (images/s) and the data loader's share of the step time.

Trains small models on generated data (``srpose.data.synthetic``) for a fixed number of iterations with the real
training loop (``srpose.train.train``: augmentation, targets, multi-stage loss, Adam) and reports steady-state
throughput (the first iterations are excluded) and the share of step time spent waiting for the data loader,
for several loader worker counts. Prints a table and writes the ``## Training (CPU)`` section of
``docs/benchmarks.md`` (``--quick``: a tiny smoke run that writes only when ``--out`` is given).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import srpose  # noqa: E402
from srpose.eval.demo import DEMO_PRESET  # noqa: E402
from srpose._io import replace_markdown_section  # noqa: E402
from srpose.config import PoseConfig  # noqa: E402
from srpose.data.synthetic import generate_dataset  # noqa: E402
from srpose.train import train  # noqa: E402

SECTION = "## Training (CPU)"


def small_config(kind: str, width: int, input_size: tuple[int, int]) -> PoseConfig:
    """A ResNet-18 of ``width`` base channels with the head of ``kind`` (simple | sr | srpose) at ``input_size``
    (w, h)."""
    base = {"simple": "res50_coco_256x192", "sr": "res50_sr_coco_256x192",
            "srpose": "res50_srpose_coco_256x192"}[kind]
    cfg = srpose.get_config(base)
    c = width
    cfg.model["backbone"].update(depth=18, base_channels=c, stem_channels=c)
    head = cfg.model["keypoint_head"]
    if kind == "srpose":
        head.update(in_channels=[8 * c, 4 * c, 2 * c, c], out_channels=[4 * c, 2 * c, c, max(8, c // 2)])
    else:
        head.update(in_channels=8 * c, num_deconv_filters=(4 * c,) * 3)
    cfg = cfg.with_input_size(*input_size)
    if cfg.heatmap_size == cfg.image_size:  # full-resolution heads: the official sigma 8 at 192 px wide
        cfg.data["sigma"] = 8.0 * input_size[0] / 192
    cfg.name = f"resnet18-w{c}_{kind}_{input_size[0]}x{input_size[1]}"
    return cfg


def _steady(log_file: Path, skip: int) -> tuple[float, float, float]:
    """(seconds per iteration, data-time share, iterations) over the log's iteration records after ``skip``."""
    recs = [json.loads(x) for x in log_file.read_text().splitlines()]
    its = [r for r in recs if r["mode"] == "train"]  # one record per iteration (log_every=1)
    its = its[skip:] if len(its) > skip else its
    step = sum(r["time"] for r in its)
    data = sum(r["data_time"] for r in its)
    return step / max(len(its), 1), data / step if step > 0 else 0.0, float(len(its))


def run_case(cfg: PoseConfig, data: dict[str, Path], work: Path, *, batch: int, iters: int, skip: int,
             workers: int) -> dict[str, Any]:
    """Train ``iters`` iterations; throughput over those after the first ``skip``."""
    log = work / "log.jsonl"
    t0 = time.perf_counter()
    res = train(cfg, train_ann=data["ann"], train_images=data["images"], work_dir=work, epochs=1000,
                batch_size=batch, workers=workers, max_iters=iters, progress=False, log_file=log,
                log_every=1, checkpoint_every=0, keep_epoch_checkpoints=False)
    wall = time.perf_counter() - t0
    step_s, share, n = _steady(log, skip)
    return dict(model=cfg.name, batch=batch, workers=workers, iters=int(n), images_per_s=batch / step_s,
                step_ms=step_s * 1e3, data_share=share, wall_s=wall, final_loss=res.final_loss)


def _section(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [SECTION, "",
           "`scripts/bench_train.py`: the real training loop (`srpose.train.train`: mmpose augmentation, Gaussian "
           "targets, multi-stage loss, Adam) on generated data (`srpose generate`, 320x240 images), CPU, float32. "
           f"Steady state: {meta['iters']} iterations per case after {meta['skip']} warm-up iterations. "
           "`data share` is the part of the step time spent waiting for the data loader (`workers` 0 means "
           "loading in the training process). The demo preset's row uses its training config (channels-last "
           "activations); the `resnet18-*` rows are NCHW variants. Absolute figures vary with the machine and its "
           "load.",
           "",
           f"Measured {meta['date']}, Python {meta['python']}, torch {meta['torch']}, torch CPU threads "
           f"{meta['threads']}, OMP_WAIT_POLICY={meta['omp_wait']}, os.cpu_count() {meta['cpus']}, "
           f"{meta['machine']}, load average {meta['load']} (other jobs shared the machine when it was above "
           f"{meta['cpus']}).",
           "",
           "OpenMP waiting matters: torch's default lets idle threads spin. On an idle 2-core machine that is "
           "fastest (a training step of the demo preset, batch 16: 70-78 images/s against 35-45 with "
           "`OMP_WAIT_POLICY=PASSIVE`); when another process keeps a core busy, the spinning threads fight it "
           "(22 images/s against 39 with `PASSIVE`, and down to 5 in a run with several busy jobs). Neither the "
           "CLI nor this script sets it: export `OMP_WAIT_POLICY=PASSIVE` when training on a shared machine.",
           "",
           "| model | params | batch | workers | images/s | ms/step | data share |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['workers']} | "
                   f"{r['images_per_s']:.1f} | {r['step_ms']:.0f} | {100 * r['data_share']:.1f}% |")
    return "\n".join(out) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this script's section of ``path``, keeping every other section."""
    replace_markdown_section(path, SECTION, section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (one small case, a few iterations)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per case (default 30, quick 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file whose section to write (default docs/benchmarks.md; quick: none)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    iters = args.iters or (3 if args.quick else 30)
    skip = 1 if args.quick else 5
    if iters < 1:
        ap.error(f"--iters {iters} must be at least 1")
    # (config, batch, loader workers)
    if args.quick:
        cases = [(small_config("srpose", 8, (64, 64)), 4, (0,))]
    else:
        cases = [(srpose.get_config(DEMO_PRESET), 16, (0, 2)),  # what `srpose demo` trains
                 (small_config("simple", 16, (96, 128)), 16, (0, 2)),
                 (small_config("srpose", 16, (64, 96)), 16, (2,)),
                 (small_config("srpose", 16, (96, 128)), 16, (2,))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="srpose-bench-train-") as tmp:
        data = generate_dataset(Path(tmp) / "data", num_images=16 if args.quick else 200, seed=0)
        for cfg, batch, worker_counts in cases:
            params = sum(p.numel() for p in srpose.build_model(cfg).parameters())
            for workers in worker_counts:
                r = run_case(cfg, data, Path(tmp) / f"{cfg.name}-{workers}", batch=batch, iters=iters + skip,
                             skip=skip, workers=workers)
                r["params"] = params
                rows.append(r)
                print(f"{r['model']:<34} batch {batch:>3} workers {workers}  {r['images_per_s']:7.1f} images/s  "
                      f"{r['step_ms']:7.0f} ms/step  data {100 * r['data_share']:5.1f}%", flush=True)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    meta = dict(date=_dt.date.today().isoformat(), python=platform.python_version(), torch=torch.__version__,
                threads=torch.get_num_threads(), cpus=os.cpu_count(),
                omp_wait=os.environ.get("OMP_WAIT_POLICY", "unset (torch default)"),
                machine=platform.machine(), load=load, iters=iters, skip=skip)
    out = args.out if args.out is not None else (None if args.quick else REPO / "docs" / "benchmarks.md")
    if out is not None and not args.no_write:
        write_section(out, _section(rows, meta))
        print(f"wrote the '{SECTION}' section of {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
