"""scripts/bench_predict.py on a tiny clip: every stage timed for every run, the section and PNG written."""
from __future__ import annotations

import json
from pathlib import Path

from _scripts import load_script


def _script():
    return load_script("bench_predict")


def test_bench_predict_times_each_stage_and_writes_its_section(tmp_path: Path) -> None:
    mod = _script()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    rc = mod.main(["--model", "res18w16_srpose_coco_96x64", "--people", "1", "3", "--frames", "6", "--size", "160",
                   "160", "--json", str(tmp_path / "r.json"), "--out", str(doc),
                   "--png", str(tmp_path / "p.png")])
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert list(result["per_crowd"]) == ["1", "3"]
    for people, rows in result["per_crowd"].items():
        assert [r for r in rows] == [name for name, _, _ in mod.RUNS]
        for name, r in rows.items():
            assert r["frames"] == 6 and r["persons"] == 6 * int(people), (people, name)  # the stand-in finds all
            assert r["frames_per_s"]["whole run"] > 0 and r["seconds"]["crop + pose"] > 0
            assert (r["seconds"]["draw + write"] > 0) == ("results only" not in name)
    text = doc.read_text()
    assert "## Other\n\nkept" in text and mod.SECTION in text and text.count("| 3 | every") == 3
    assert (tmp_path / "p.png").stat().st_size > 1000
