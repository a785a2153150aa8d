"""Synthetic COCO-format data: determinism, COCO visibility conventions, loading by pycocotools and the dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from srpose.data.synthetic import generate_dataset, render_image


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_dataset(tmp_path_factory.mktemp("synth"), num_images=6, image_size=(160, 120), seed=3)


def test_same_seed_gives_identical_files(synth: dict[str, Path], tmp_path: Path) -> None:
    again = generate_dataset(tmp_path, num_images=6, image_size=(160, 120), seed=3)
    assert again["ann"].read_bytes() == synth["ann"].read_bytes()
    assert again["det"].read_bytes() == synth["det"].read_bytes()
    names = sorted(p.name for p in synth["images"].iterdir())
    assert names == sorted(p.name for p in again["images"].iterdir()) and len(names) == 6
    for n in names:
        assert (again["images"] / n).read_bytes() == (synth["images"] / n).read_bytes()
    other = generate_dataset(tmp_path / "other", num_images=2, image_size=(160, 120), seed=4)
    assert (other["images"] / names[0]).read_bytes() != (synth["images"] / names[0]).read_bytes()


def test_image_depends_only_on_seed_and_index() -> None:
    a, anns_a = render_image(7, 5, (96, 64))
    b, anns_b = render_image(7, 5, (96, 64))
    assert np.array_equal(a, b) and anns_a == anns_b and a.shape == (64, 96, 3)


def test_annotations_follow_coco(synth: dict[str, Path]) -> None:
    coco = json.loads(synth["ann"].read_text())
    assert coco["categories"][0]["keypoints"][0] == "nose" and len(coco["categories"][0]["keypoints"]) == 17
    assert min(min(e) for e in coco["categories"][0]["skeleton"]) == 1  # 1-based like COCO
    seen = set()
    for ann in coco["annotations"]:
        k = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        assert set(np.unique(k[:, 2])) <= {0, 1, 2}
        seen |= set(np.unique(k[:, 2]).tolist())
        assert ann["num_keypoints"] == int((k[:, 2] > 0).sum())
        assert ann["iscrowd"] == 0 and ann["area"] > 0 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0
        assert np.all(k[k[:, 2] == 0] == 0)  # unlabelled joints are (0, 0, 0)
        img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        lab = k[k[:, 2] > 0]
        assert np.all((lab[:, 0] >= 0) & (lab[:, 0] <= img["width"] - 1) & (lab[:, 1] >= 0)
                      & (lab[:, 1] <= img["height"] - 1))
    dets = json.loads(synth["det"].read_text())
    assert len(dets) == len(coco["annotations"])
    assert all(d["category_id"] == 1 and 0 < d["score"] <= 1 and len(d["bbox"]) == 4 for d in dets)


def test_out_of_frame_and_occluded_joints_are_flagged() -> None:
    """Across many images, people cut by the border have unlabelled joints and overlaps give v=1."""
    found_zero = found_one = False
    for i in range(40):
        _, anns = render_image(11, i, (160, 120), (2, 3))
        for a in anns:
            v = np.asarray(a["keypoints"]).reshape(17, 3)[:, 2]
            found_zero |= bool((v == 0).any())
            found_one |= bool((v == 1).any())
        if found_zero and found_one:
            break
    assert found_zero and found_one


def test_loads_in_pycocotools_and_dataset(synth: dict[str, Path]) -> None:
    from pycocotools.coco import COCO

    from srpose import get_config
    from srpose.data import TopDownCocoDataset

    coco = COCO(str(synth["ann"]))
    assert len(coco.getImgIds()) == 6 and coco.getCatIds() == [1]
    cfg = get_config("res50_coco_256x192").with_input_size(64, 64)
    ds = TopDownCocoDataset(synth["ann"], synth["images"], cfg.data, train=True, seed=0)
    sample = ds[0]
    assert sample["img"].shape == (3, 64, 64) and sample["target"].shape == (17, 16, 16)
    det = TopDownCocoDataset(synth["ann"], synth["images"], cfg.data, det_file=synth["det"])
    assert len(det) == len(json.loads(synth["det"].read_text()))


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_images"):
        generate_dataset(tmp_path, num_images=0)
    with pytest.raises(ValueError, match="people"):
        generate_dataset(tmp_path, num_images=1, people=(2, 1))


def test_generate_video_cli_writes_a_clip_with_tracks(tmp_path: Path, capsys) -> None:
    """#21: moving people, one COCO image per frame, each person's track id and a box per visible person; the same
    seed gives the same annotations."""
    import json

    import cv2

    from srpose.cli import main

    assert main(["generate", "--video", "--out", str(tmp_path / "a"), "--frames", "10", "--people", "1", "3",
                 "--seed", "5"]) == 0
    assert "10-frame clip of 3 people" in capsys.readouterr().out
    ann = json.loads((tmp_path / "a" / "annotations.json").read_text())
    assert [im["id"] for im in ann["images"]] == list(range(1, 11))
    assert ann["images"][3]["file_name"] == "video.mp4#000003" and ann["info"]["fps"] == 15.0
    tracks = {a["track_id"] for a in ann["annotations"]}
    assert tracks == {0, 1, 2} and all(len(a["keypoints"]) == 51 for a in ann["annotations"])
    first = {a["track_id"]: a["bbox"][0] for a in ann["annotations"] if a["image_id"] == 1}
    last = {a["track_id"]: a["bbox"][0] for a in ann["annotations"] if a["image_id"] == 10}
    assert all(abs(last[t] - first[t]) > 20 for t in first)  # they walk
    cap = cv2.VideoCapture(str(tmp_path / "a" / "video.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 10 and len(json.loads((tmp_path / "a" / "detections.json").read_text())) == len(ann["annotations"])
    assert main(["generate", "--video", "--out", str(tmp_path / "b"), "--frames", "10", "--people", "1", "3",
                 "--seed", "5"]) == 0
    assert json.loads((tmp_path / "b" / "annotations.json").read_text())["annotations"] == ann["annotations"]
    assert main(["generate", "--video", "--out", str(tmp_path / "c"), "--frames", "1"]) == 2
