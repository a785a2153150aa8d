"""scripts/bench_image_graph.py's report: the FP32 / FP16 target against the host pipeline, INT8 reported apart."""
from __future__ import annotations

from pathlib import Path

from _scripts import load_script


def _script():
    return load_script("bench_image_graph")


def _row(precision: str, delta: float) -> dict:
    return dict(data="validation", precision=precision, persons=10, host_AP=0.8, image_AP=0.8 + delta / 100,
                delta_points=delta, kpt_median_px=0.0, kpt_p99_px=0.7, kpt_max_px=3.0, host_persons_per_s=120.0,
                image_persons_per_s=100.0)


def test_section_checks_fp32_fp16_and_reports_int8_apart() -> None:
    mod = _script()
    base = dict(model="m", checkpoint="/x/best.pth", checkpoint_sha256="ab" * 32,
                meta=dict(date="d", cpus=2, python="3.11", machine="x86_64"))
    ok = mod.section(dict(base, rows=[_row("fp32", 0.05), _row("fp16", -0.01), _row("int8", 0.4)]))
    assert "FP32 and FP16 graphs: 0.05 points (target <= 0.1: met)" in ok
    assert "Here: validation +0.40 points." in ok and "| 120 / 100 |" in ok
    bad = mod.section(dict(base, rows=[_row("fp32", 0.12)]))
    assert "**missed**" in bad and "INT8 graphs" not in bad
