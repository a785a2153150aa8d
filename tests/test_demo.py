"""The end-to-end demo in a reduced mode, and its pictures."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from eval.visualize import draw_keypoints, render_results
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


@pytest.mark.slow
def test_demo_runs_end_to_end_reduced(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    rc = cli_main(["demo", "--out", str(out), "--train-size", "12", "--val-size", "3", "--epochs", "1",
                   "--calib-num", "8", "--precision", "fp32", "int8", "--bench-batch", "1", "--bench-s", "0.05",
                   "--threads", "1"])
    assert rc == 0
    report = (out / "report.md").read_text()
    for part in ("## Training", "## Parity with PyTorch", "int8", "-decode.fp32.onnx", "## TensorRT"):
        assert part in report
    for png in ("parity.png", "bench.png", "keypoints.png", "loss.png"):
        assert (out / png).stat().st_size > 1000, png
    parity = json.loads((out / "parity.json").read_text())
    assert len(parity["models"]) == 3  # fp32, int8, decode graph
    fp32 = next(m for m in parity["models"] if m["name"].endswith(".fp32.onnx") and "decode" not in m["name"])
    assert fp32["output_error"]["max_abs"] <= 1e-4 * max(1e-6, fp32["output_error"]["ref_max_abs"]) + 1e-6
