#!/usr/bin/env python
"""Run ``srpose demo`` as a user would and publish what it measured: time, trained AP, AP per precision.

The demo (generate people, train the demo preset, export FP32 / FP16 / INT8 and the image-to-keypoints graph of
each, parity against PyTorch on the generated validation set, bench) runs in a fresh process and is timed as a whole; its
``summary.json`` and ``parity.json`` then give the ``## Demo: training and AP per precision (CPU)`` section of
``docs/benchmarks.md``: phase times, AP per epoch, the parity table with AP deltas in points, and the targets
(trained AP >= 0.7, FP16 loses <= 0.1 AP, INT8 <= 1.0 AP, each image-to-keypoints graph within 0.1 AP of the host
pipeline of its precision, the tracked clip's PCK@0.2 >= 0.9 with no id switch, whole demo < 10 minutes on 2 cores),
and ``clip.json`` the clip's figures per stage.

``--from DIR`` publishes an existing demo output instead of running one (its timing is the demo's own).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from srpose.eval.demo import DEMO_TIME_BUDGET_S  # noqa: E402
from srpose.eval.report import Target, targets_markdown  # noqa: E402
from srpose._io import replace_markdown_section  # noqa: E402

SECTION = "## Demo: training and AP per precision (CPU)"


def run_demo(out: Path, extra: list[str]) -> float:
    """Run ``srpose demo --out OUT`` in a fresh process; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "srpose.cli", "demo", "--out", str(out), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return time.perf_counter() - t0


def _epoch_aps(train_log: Path) -> list[float]:
    if not train_log.is_file():
        return []
    recs = [json.loads(line) for line in train_log.read_text().splitlines() if line.strip()]
    return [r["metrics"]["AP"] for r in recs if r.get("mode") == "epoch" and "AP" in r.get("metrics", {})]


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def section(demo_dir: Path, wall_s: float | None, meta: dict[str, Any]) -> str:
    """The Markdown section for the demo output in ``demo_dir``."""
    summary = json.loads((demo_dir / "summary.json").read_text())
    parity = json.loads((demo_dir / "parity.json").read_text())
    key = parity["primary_metric"]
    ref = parity["reference"]["metrics"][key]
    lines = [SECTION, "",
             "`scripts/bench_demo.py` runs `srpose demo` (its defaults: 4,000 generated single-person training "
             "images of 192x160, the `res18w16_srpose_coco_96x64` preset, 6 epochs) in a fresh process and "
             "publishes its `summary.json` and `parity.json`. The validation set is generated too "
             f"({parity['items']} {parity['unit']}s, GT boxes, flip test {'on' if parity['flip'] else 'off'}); every "
             "exported graph runs in ONNX Runtime on the CPU, exactly as `srpose build` would hand it to TensorRT. "
             "ΔAP is in AP points (1.0 = 0.01 AP), against the PyTorch FP32 model on the same crops. `*-image.*` are "
             "the image-to-keypoints graphs (`--image-input`: crop, flip test and decoding in the graph); Δkpt is "
             "the distance of each model's keypoints to PyTorch's with the host pipeline, in image pixels.", "",
             f"Measured {meta['date']}, Python {meta['python']}, torch {meta['torch']}, "
             f"os.cpu_count() {meta['cpus']}, {meta['machine']}, load average after the run {meta['load']}.", ""]
    aps = _epoch_aps(demo_dir / "train" / "train_log.jsonl")
    if aps:
        lines += [f"Validation AP after each epoch: {', '.join(f'{a:.3f}' for a in aps)}.", ""]
    lines += [f"| model | precision | AP | ΔAP (points) | AR | kpt err (px) | Δkpt median / p99 (image px) | "
              f"{parity['unit']}s/s (CPU) |",
              "|---|---|---:|---:|---:|---:|---:|---:|",
              f"| PyTorch | fp32 | {ref:.4f} | - | {parity['reference']['metrics'].get('AR', float('nan')):.4f} | - | - | "
              f"{_num(parity['reference'].get('items_per_s'), '.0f')} |"]
    for m in parity["models"]:
        lines.append(f"| {m['name']} | {m['precision']} | {m['metrics'][key]:.4f} | {100 * m['delta'][key]:+.2f} | "
                     f"{m['metrics'].get('AR', float('nan')):.4f} | {_num(m['mean_kpt_px'], '.3f')} | "
                     f"{_num(m.get('image_kpt_px_median'), '.3f')} / {_num(m.get('image_kpt_px_p99'), '.2f')} | "
                     f"{_num(m.get('items_per_s'), '.0f')} |")
    clip_file = demo_dir / "clip.json"
    if clip_file.is_file():
        clip = json.loads(clip_file.read_text())
        lines += ["", f"`srpose predict` with tracking on a generated {clip['frames']}-frame clip of two people "
                  f"(the trained model as its image-to-keypoints graph in PyTorch, detections every "
                  f"{clip['detect_every']} frames): PCK@0.2 {clip['pck']:.3f}, {clip['tracks']} track ids, "
                  f"{clip['id_switches']} id switches; per stage:", "", "```", clip["table"], "```"]
    lines += ["", "| phase | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary["seconds"].items() if k != "total"]
    lines += [f"| demo (in process) | {summary['seconds']['total']:.0f} |"]
    if wall_s is not None:
        lines += [f"| whole `srpose demo` process (imports included) | {wall_s:.0f} |"]
    targets = [Target(**t) for t in summary.get("targets", [])]
    if wall_s is not None:  # the process's own time replaces the in-process one
        targets = [t for t in targets if not t.name.startswith("wall time")]
        targets.append(Target(f"whole demo process ({meta['cpus']} CPU cores)", f"{wall_s:.0f} s",
                              f"< {DEMO_TIME_BUDGET_S:.0f} s", wall_s < DEMO_TIME_BUDGET_S))
    lines += ["", *targets_markdown(targets)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="from_dir", type=Path, default=None,
                    help="publish this existing demo output instead of running the demo")
    ap.add_argument("--keep", type=Path, default=None, help="run the demo into this folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown file to update")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args, extra = ap.parse_known_args(argv)  # anything else goes to `srpose demo`
    with tempfile.TemporaryDirectory(prefix="srpose-bench-demo-") as tmp:
        if args.from_dir is not None:
            demo_dir, wall = args.from_dir, None
            if not (demo_dir / "summary.json").is_file():
                ap.error(f"--from {demo_dir}: no summary.json there; run `srpose demo --out {demo_dir}` first")
        else:
            demo_dir = args.keep or Path(tmp) / "demo"
            wall = run_demo(demo_dir, extra)
        import torch

        load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        meta = dict(date=_dt.date.today().isoformat(), python=platform.python_version(), torch=torch.__version__,
                    cpus=os.cpu_count(), machine=platform.machine(), load=load)
        text = section(demo_dir, wall, meta)
    print(text)
    if not args.no_write:
        replace_markdown_section(args.out, SECTION, text)
        print(f"wrote the '{SECTION}' section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
