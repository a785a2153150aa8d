"""Bottom-up data and evaluation: the aspect-keeping resize, the oracle AP on the shared COCO sample, the CLI path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from srpose.eval.bottom_up import BottomUpOracleBackend, evaluate_bottom_up
from srpose import get_config
from srpose.data.bottom_up import (
    BottomUpCocoDataset,
    mirror_joints,
    render_heatmaps,
    render_tag_maps,
    resize_align_size,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # the bottom-up models are large for 2 cores


def test_resize_align_keeps_the_aspect_ratio() -> None:
    (w, h), center, scale = resize_align_size(425, 640, 512)  # landscape: height -> 512, width to 64-multiple
    assert (w, h) == (832, 512)
    assert center.tolist() == [320, 212]  # round(212.5) is 212, as Python (and mmpose) rounds
    np.testing.assert_allclose(scale, [832 / 512 * 425 / 200, 425 / 200])
    (w, h), _, scale = resize_align_size(640, 480, 512)  # portrait
    assert (w, h) == (512, 704)
    np.testing.assert_allclose(scale, [480 / 200, 704 / 512 * 480 / 200])
    with pytest.raises(ValueError, match="positive"):
        resize_align_size(0, 10, 512)


def test_rendering_and_mirroring() -> None:
    joints = np.zeros((2, 17, 3), np.float32)
    joints[0, 5] = (4, 6, 2)
    joints[1, 5] = (12, 3, 2)
    joints[1, 6] = (30, 3, 0)  # not labelled
    hm = render_heatmaps(joints, (16, 8), 2.0)
    assert hm.shape == (17, 8, 16) and hm[5, 6, 4] == 1.0 and hm[5, 3, 12] == 1.0 and hm[6].max() == 0
    tm = render_tag_maps(joints, (16, 8), 2.0, [2.0, 4.0])
    assert tm[5, 6, 4] == 2.0 and tm[5, 3, 12] == 4.0 and tm[6].max() == -100.0
    m = mirror_joints(joints, 16, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
    assert m[0, 6, :2].tolist() == [11, 6] and m[0, 5, 2] == 0


def test_oracle_ap_on_the_coco_sample(coco_sample: dict[str, Path]) -> None:
    """GT rendered at the heatmap resolution: the SR head's full-resolution maps recover every person exactly,
    the 1/4-resolution simple head loses AP to quantisation (inputs at 256 to keep the test fast). With the flip
    test, a mirrored render lands on the next pixel when x is fractional, so the merged peak is a 2-pixel plateau."""
    aps = {}
    for name, flip in (("res50_sr_coco_512x512", False), ("res50_sr_coco_512x512", True),
                       ("res50_coco_512x512", True)):
        cfg = get_config(name).with_input_size(256, 256)
        ds = BottomUpCocoDataset(coco_sample["ann"], coco_sample["images"], cfg.data)
        assert len(ds) == 4 and ds[0]["img"].shape[1] == 256  # shorter side
        res = evaluate_bottom_up(BottomUpOracleBackend(cfg.data), ds, cfg, flip=flip, progress=False)
        assert res.flip == flip and res.num_persons == 12  # the 2 annotations without keypoints are not rendered
        aps[name, flip] = res.metrics["AP"]
    assert aps["res50_sr_coco_512x512", False] == pytest.approx(1.0)
    assert aps["res50_sr_coco_512x512", True] >= 0.95
    assert 0.85 <= aps["res50_coco_512x512", True] < aps["res50_sr_coco_512x512", True]


def test_eval_cli_bottom_up(coco_sample: dict[str, Path], tmp_path: Path) -> None:
    from srpose.cli import main

    cfg = get_config("hrnet_w32_sr_coco_512x512").with_input_size(128, 128)
    cfg_path = tmp_path / "bu.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    args = ["eval", str(cfg_path), "--backend", "oracle", "--ann", str(coco_sample["ann"]), "--images",
            str(coco_sample["images"]), "--quiet", "--workers", "0", "--no-flip"]
    out = tmp_path / "m.json"
    assert main(args + ["--json", str(out), "--results", str(tmp_path / "r.json")]) == 0
    summary = json.loads(out.read_text())
    assert summary["protocol"] == "bottom-up" and summary["flip"] is False and summary["metrics"]["AP"] > 0.9
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == 12 and len(results[0]["keypoints"]) == 51
    assert main(args + ["--det", str(coco_sample["det"])]) == 2  # no person boxes in bottom-up
    assert main(["eval", "res50_coco_256x192", "--bottom-up", "--backend", "oracle", "--ann",
                 str(coco_sample["ann"]), "--images", str(coco_sample["images"])]) == 2  # a top-down model


def test_dataset_errors(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(dict(images=[dict(id=1, file_name="x.jpg")], annotations=[])))
    with pytest.raises(FileNotFoundError, match="x.jpg"):
        BottomUpCocoDataset(ann, tmp_path, get_config("res50_coco_512x512").data)
    with pytest.raises(ValueError, match="multiple of 64"):
        BottomUpCocoDataset(ann, tmp_path, dict(image_size=[500, 500]))
