#!/usr/bin/env python3
"""Writes the tables of docs/models.md: every top-down COCO preset at its full input size against the SRPose paper's
complexity figures, and the MPII / CrowdPose presets beside the paper's accuracy.

Usage: python scripts/models_table.py [--out docs/models.md]
The parts of docs/models.md between the generated-table markers are replaced; the notes around them are kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srpose import build_model, get_config  # noqa: E402
from srpose._io import atomic_write_text  # noqa: E402
from srpose.complexity import Complexity, complexity_report  # noqa: E402
from srpose.presets import PAPER_TABLE, PAPER_TABLE_DATASETS  # noqa: E402

MARKERS = {"models-table": "coco", "datasets-table": "datasets"}


def _report(name: str) -> Complexity:
    cfg = get_config(name)
    return complexity_report(build_model(cfg, init=False), cfg.input_shape())


def coco_table() -> str:
    rows = ["| preset | GMACs ours | GMACs paper | all-ops GMACs | backbone M ours | paper | head (eval) M ours | paper | head (all) M |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (g, b, h) in PAPER_TABLE.items():
        rep = _report(name)
        rows.append(f"| `{name}` | {rep.gmacs:.2f} | {g:.2f} | {rep.gmacs_all_ops:.2f} | "
                    f"{rep.params_backbone / 1e6:.2f} | {b:.2f} | {rep.params_head_eval / 1e6:.2f} | {h:.2f} | "
                    f"{rep.params_head / 1e6:.2f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def datasets_table() -> str:
    """One row per MPII / CrowdPose preset: the paper's metric (SRPose rows: the gain over their baseline), and our
    complexity at the preset's input size."""
    rows = ["| preset | dataset (joints) | input | heatmaps | paper | GMACs | backbone M | head (eval) M | "
            "head (all) M |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for name, (dataset, metric, value) in PAPER_TABLE_DATASETS.items():
        cfg = get_config(name)
        rep = _report(name)
        paper = f"{metric} {value:.1f}"
        if "_srpose_" in name:
            base = PAPER_TABLE_DATASETS[name.replace("_srpose_", "_")][2]
            paper += f" ({value - base:+.1f})"
        (w, h), (hw, hh) = cfg.image_size, cfg.heatmap_size
        rows.append(f"| `{name}` | {dataset} ({cfg.num_joints}) | {w}x{h} | {hw}x{hh} | {paper} | {rep.gmacs:.2f} | "
                    f"{rep.params_backbone / 1e6:.2f} | {rep.params_head_eval / 1e6:.2f} | "
                    f"{rep.params_head / 1e6:.2f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def replace_between(text: str, marker: str, body: str) -> str:
    """``text`` with the part between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` replaced by ``body``
    (the markers appended at the end when absent)."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if begin not in text:
        text = text.rstrip() + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "models.md"))
    ap.add_argument("--only", choices=sorted(MARKERS.values()), default=None, help="write one of the two tables")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Models\n"
    for marker, which in MARKERS.items():
        if args.only in (None, which):
            text = replace_between(text, marker, coco_table() if which == "coco" else datasets_table())
    atomic_write_text(out, text)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
