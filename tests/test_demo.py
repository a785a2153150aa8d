"""The end-to-end demo in a reduced mode, and its pictures."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from srpose.eval.demo import demo_targets
from srpose.eval.parity import ParityReport
from srpose.eval.report import PhaseTimer, targets_markdown
from srpose.eval.visualize import draw_keypoints, render_results
from srpose.cli import main as cli_main


def test_draw_keypoints_marks_only_confident_joints() -> None:
    img = np.zeros((40, 40, 3), np.uint8)
    kp = np.array([[10, 10, 0.9]] + [[30, 30, 0.0]] * 16, np.float32)
    out = draw_keypoints(img, kp, radius=2)
    assert out[10, 10].any() and not out[30, 30].any() and not img.any()


def test_render_results_tiles_images(tmp_path: Path) -> None:
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((60, 80, 3), 128, np.uint8))
    ann = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(2)]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    res = [{"image_id": i, "score": s, "keypoints": [20.0, 20.0, 0.9] * 17} for i, s in ((0, 0.9), (1, 0.01))]
    png = render_results(res, tmp_path / "ann.json", tmp_path, tmp_path / "k.png", cols=2, tile=64)
    grid = cv2.imread(str(png))
    assert grid.shape == (64, 128, 3)
    with pytest.raises(ValueError, match="no keypoint results"):
        render_results([], tmp_path / "ann.json", tmp_path, tmp_path / "x.png")


def _report(form: str = "dict", **drops: float):
    models = [dict(name=f"m.{p}.onnx", precision=p, delta={"AP": -d}) for p, d in drops.items()]
    if form == "dict":  # e.g. a parity.json read back
        return dict(primary_metric="AP", models=models)
    return ParityReport(model="m", task="top-down", dataset="coco", unit="person", items=1, images=1, flip=True,
                        primary_metric="AP", input_size=[64, 96], reference={}, models=models)


@pytest.mark.parametrize("form", ["dict", "report"])
def test_demo_targets_bounds(form: str) -> None:
    ok = demo_targets(0.71, _report(form, fp32=0.0, fp16=0.0009, int8=0.0099), seconds=599)
    assert [t.met for t in ok] == [True, True, True, True]  # fp32 has no bound: AP, fp16, int8, time
    assert [t.name.split()[0] for t in ok[:3]] == ["trained", "m.fp16.onnx", "m.int8.onnx"]
    bad = demo_targets(0.69, _report(form, fp16=0.0011, int8=0.0101), seconds=601)
    image = dict(name="m-image.fp16.onnx", precision="fp16", image_input=True, delta={"AP": 0.0},
                 metrics={"AP": 0.7015})
    crop = dict(name="m.fp16.onnx", precision="fp16", delta={"AP": 0.0}, metrics={"AP": 0.7})
    close = demo_targets(0.8, dict(primary_metric="AP", models=[crop, image]))
    assert [t.met for t in close] == [True, True, True, False] and "vs the host pipeline" in close[-1].name
    assert demo_targets(0.8, dict(primary_metric="AP", models=[crop, {**image, "metrics": {"AP": 0.7009}}]))[-1].met
    assert [t.met for t in bad] == [False, False, False, False]
    assert not demo_targets(None, _report(form))[0].met and len(demo_targets(0.8, _report(form))) == 1
    table = targets_markdown(bad)
    assert len(table) == 2 + len(bad) and all(line.startswith("|") for line in table)
    clip = demo_targets(0.8, _report(form), seconds=1, clip=dict(pck=0.95, id_switches=0))
    assert [t.name.split()[0] for t in clip] == ["trained", "clip", "clip", "wall"] and all(t.met for t in clip)
    assert [t.met for t in demo_targets(0.8, _report(form), clip=dict(pck=0.89, id_switches=1))] == [True, False, False]


def test_phase_timer_accumulates_named_phases() -> None:
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("a"):
            pass
    with pytest.raises(KeyError):
        with timer.phase("b"):
            raise KeyError("the phase is still timed")
    assert list(timer.seconds) == ["a", "b"] and timer.total >= sum(timer.seconds.values())
    table = timer.markdown()
    assert table[0].startswith("| phase") and table[-1].startswith("| **total**")


@pytest.mark.slow
def test_demo_runs_end_to_end_reduced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no --out: everything goes to ./demo, as `make demo` promises
    out = tmp_path / "demo"
    rc = cli_main(["demo", "--train-size", "12", "--val-size", "3", "--epochs", "1",
                   "--calib-num", "8", "--precision", "fp32", "int8", "--bench-batch", "1", "--bench-s", "0.05",
                   "--threads", "1", "--clip-frames", "6"])
    assert rc == 0
    report = (out / "report.md").read_text()
    for part in ("## Targets", "## Training", "## Parity with PyTorch", "int8", "-image.fp32.onnx", "## TensorRT",
                 "## Time", "| train (with validation) |", "## Prediction on a generated clip", "![the clip",
                 "| predict clip (tracking) |"):
        assert part in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing written beside it
    summary = json.loads((out / "summary.json").read_text())
    image = summary["model"] + "-image"
    assert [t["name"].split()[0] for t in summary["targets"]] == [
        "trained", summary["model"] + ".int8.onnx", image + ".int8.onnx",  # AP loss vs PyTorch
        image + ".fp32.onnx",  # the fp32 image graph vs the host pipeline
        "clip", "clip", "wall"]  # the clip's PCK and id switches
    assert "vs the host pipeline" in summary["targets"][3]["name"]
    assert summary["seconds"]["total"] >= summary["seconds"]["export"] > 0
    for png in ("parity.png", "bench.png", "keypoints.png", "loss.png", "clip.gif"):
        assert (out / png).stat().st_size > 1000, png
    assert (out / "clip" / "video.mp4").stat().st_size > 0 and (out / "clip" / "results.json").exists()
    parity = json.loads((out / "parity.json").read_text())
    assert len(parity["models"]) == 4  # fp32, int8; their image-to-keypoints graphs
    img = next(m for m in parity["models"] if m["name"].endswith("-image.fp32.onnx"))
    assert img["image_input"] and img["output_kind"] == "people" and img["image_kpt_px_median"] is not None
    fp32 = next(m for m in parity["models"] if m["name"].endswith(".fp32.onnx") and "decode" not in m["name"])
    assert fp32["output_error"]["max_abs"] <= 1e-4 * max(1e-6, fp32["output_error"]["ref_max_abs"]) + 1e-6
    # scripts/bench_demo.py publishes exactly these files: its reader must follow their schema
    text = _bench_demo().section(out, 12.0, dict(date="d", python="p", torch="t", cpus=2, machine="m", load="l"))
    assert f"({parity['items']} persons, GT boxes, flip test on)" in text
    rows = [r for r in text.splitlines() if r.startswith(f"| {summary['model']}") and ".onnx |" in r]
    assert len(rows) == 4 and all(r.count("|") == 9 and "nan" not in r for r in rows), rows
    assert "| whole demo process (2 CPU cores) | 12 s | < 600 s | yes |" in text
    assert "with tracking on a generated 6-frame clip" in text and "crop + pose" in text


def _bench_demo():
    from _scripts import load_script

    return load_script("bench_demo")


@pytest.mark.parametrize("argv, match", [(["--val-size", "0"], "--val-size must be >= 1"),
                                         (["--eval-every", "-1"], "--eval-every must be >= 0"),
                                         (["--clip-frames", "-1"], "--clip-frames must be >= 0"),
                                         (["--error-persons", "0"], "--error-persons must be >= 1")])
def test_demo_refuses_bad_options_before_any_work(tmp_path: Path, argv: list, match: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), *argv]) == 2
    assert match in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_demo_on_real_coco_format_data(tmp_path: Path, coco_sample: dict, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "real"
    assert cli_main(["demo", "--data", "coco", "--out", str(out)]) == 2
    assert "--data coco needs --ann" in capsys.readouterr().err and not out.exists()
    rc = cli_main(["demo", "--data", "coco", "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]),
                   "--out", str(out), "--epochs", "1", "--batch", "2", "--calib-num", "4", "--precision", "fp32",
                   "--no-decode", "--bench-batch", "1", "--bench-s", "0.05", "--threads", "1"])
    assert rc == 0
    assert not (out / "data").exists()  # nothing generated: the given images are used
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ann"] == str(coco_sample["ann"]) and len(summary["files"]) == 2  # the fp32 crop and image graphs
    assert "## Training" in (out / "report.md").read_text()


def test_pipeline_refuses_bad_error_persons_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pipe"
    argv = ["pipeline", "res18w16_srpose_coco_96x64", "--checkpoint", str(tmp_path / "none.pth"), "--ann",
            str(tmp_path / "a.json"), "--images", str(tmp_path), "--out", str(out), "--error-persons", "0"]
    assert cli_main(argv) == 2
    assert "--error-persons must be >= 1" in capsys.readouterr().err and not out.exists()
