"""The person-detector stage (srpose.eval._detect) on tiny detector graphs of each format: boxes back in image pixels
within 0.5 px through the format's letterbox, the person class only, NMS duplicates and low scores gone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _detector_utils as du
from srpose.eval._detect import BoxFile, DetectorOptions, Letterbox, PersonDetector, whole_image_box


@pytest.mark.parametrize("fmt, make", [("yolo", du.yolo), ("yolo-end2end", du.yolo_end2end),
                                       ("mmdeploy", du.mmdeploy)])
def test_each_format_gives_the_persons_in_image_pixels(tmp_path: Path, fmt: str, make) -> None:
    det = PersonDetector(make(tmp_path / f"{fmt}.onnx"))
    assert det.format == fmt and det.person == 0 and det.input_hw == (640, 640)
    boxes = det.detect(du.image())
    assert boxes.shape == (2, 5)  # the duplicate (NMS), the car and the low score are gone
    np.testing.assert_allclose(boxes[:, :4], du.BOXES, atol=0.5)
    np.testing.assert_allclose(boxes[:, 4], du.SCORES, atol=1e-6)
    named = PersonDetector(tmp_path / f"{fmt}.onnx", DetectorOptions(format=fmt, score_thr=0.88))
    assert len(named.detect(du.image())) == 1  # above the threshold: the first person only


def test_unknown_outputs_name_the_shapes_and_the_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        PersonDetector(du.unknown(tmp_path / "odd.onnx"))
    msg = str(e.value)
    assert "odd.onnx" in msg and "{'scores': [1, 10]}" in msg
    assert all(f in msg for f in ("1 x (4 + classes) x anchors", "1 x N x 6", "dets 1 x N x 5", "--detector-format"))
    with pytest.raises(ValueError, match="--detector-format 'ssd'"):
        PersonDetector(du.yolo(tmp_path / "y.onnx"), DetectorOptions(format="ssd"))
    with pytest.raises(FileNotFoundError, match="detector .*none.onnx does not exist"):
        PersonDetector(tmp_path / "none.onnx")


@pytest.mark.parametrize("center", [True, False])
def test_letterbox_inverse_is_exact(center: bool) -> None:
    lb = Letterbox((317, 481), (640, 640), center=center)
    img = np.random.default_rng(1).integers(0, 256, (317, 481, 3), dtype=np.uint8)
    out = lb.apply(img)
    assert out.shape == (640, 640, 3)
    left, top = lb.offset
    if center:
        assert top > 0 and left == 0 and (out[:top] == 114).all()
    else:
        assert (left, top) == (0, 0) and (out[lb.size[1]:] == 114).all()
    xyxy = np.array([[10.0, 20.0, 200.0, 300.0]])
    fwd = xyxy * lb.r + [left, top, left, top]
    np.testing.assert_allclose(lb.invert(fwd), xyxy, atol=1e-9)


def test_box_file_maps_names_frames_and_coco_ids(tmp_path: Path) -> None:
    import json

    dets = [dict(image_id=785, category_id=1, bbox=[1, 2, 30, 40], score=0.9),
            dict(image_id=785, category_id=18, bbox=[1, 2, 30, 40], score=0.9),  # a dog: not a person
            dict(image_id=3, category_id=1, bbox=[5, 5, 10, 10], score=0.5)]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    bf = BoxFile(tmp_path / "d.json")
    assert bf.boxes("/x/000000000785.jpg").tolist() == [[1, 2, 30, 40, 0.8999999761581421]]
    assert len(bf.boxes("clip.mp4", frame=2)) == 1 and len(bf.boxes("clip.mp4", frame=0)) == 0
    (tmp_path / "a.json").write_text(json.dumps({"images": [{"id": 3, "file_name": "street.jpg"}]}))
    assert len(BoxFile(tmp_path / "d.json", ann=tmp_path / "a.json").boxes("/y/street.jpg")) == 1
    (tmp_path / "bad.json").write_text(json.dumps([dict(image_id=1, bbox=[1, 2, float("nan"), 4], score=1)]))
    with pytest.raises(ValueError, match=r"entry 0 \(x, y, w, h, score\) = \(1, 2, nan, 4, 1\) must be finite"):
        BoxFile(tmp_path / "bad.json")
    assert whole_image_box(np.zeros((20, 30, 3), np.uint8)).tolist() == [[0, 0, 30, 20, 1]]
