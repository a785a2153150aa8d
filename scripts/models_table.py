#!/usr/bin/env python3
"""Writes the table of docs/models.md: every top-down preset at its full input size against the SRPose paper.

Usage: python scripts/models_table.py [--out docs/models.md]
The part of docs/models.md between the generated-table markers is replaced; the notes around it are kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srpose import build_model, get_config  # noqa: E402
from srpose._io import atomic_write_text  # noqa: E402
from srpose.complexity import complexity_report  # noqa: E402
from srpose.presets import PAPER_TABLE  # noqa: E402

BEGIN, END = "<!-- models-table:begin -->", "<!-- models-table:end -->"


def table() -> str:
    rows = ["| preset | GMACs ours | GMACs paper | all-ops GMACs | backbone M ours | paper | head (eval) M ours | paper | head (all) M |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (g, b, h) in PAPER_TABLE.items():
        cfg = get_config(name)
        rep = complexity_report(build_model(cfg, init=False), cfg.input_shape())
        rows.append(f"| `{name}` | {rep.gmacs:.2f} | {g:.2f} | {rep.gmacs_all_ops:.2f} | "
                    f"{rep.params_backbone / 1e6:.2f} | {b:.2f} | {rep.params_head_eval / 1e6:.2f} | {h:.2f} | "
                    f"{rep.params_head / 1e6:.2f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "models.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    text = out.read_text() if out.exists() else f"# Models\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(out, f"{head}{BEGIN}\n{table()}\n{END}{tail}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
