"""COCO / CrowdPose / MPII top-down datasets on the shared samples, collate, the input errors; the bottom-up resize."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from srpose.config import make_data_cfg
from srpose.data import (
    TopDownCocoDataset,
    TopDownCrowdPoseDataset,
    TopDownMpiiDataset,
    box_to_center_scale,
    collate,
)

COCO_CFG = make_data_cfg("coco", image_size=(96, 128), heatmap_size=(24, 32))


def _expected_gt_boxes(ann_file: Path) -> list[tuple[int, list[float]]]:
    """mmpose's GT box filter, written out independently."""
    data = json.loads(ann_file.read_text())
    images = {im["id"]: im for im in data["images"]}
    out = []
    for im_id in images:
        for a in [a for a in data["annotations"] if a["image_id"] == im_id]:
            if a["iscrowd"] or max(a["keypoints"]) == 0 or a.get("num_keypoints", 1) == 0:
                continue
            x, y, w, h = a["bbox"]
            x1, y1 = max(0, x), max(0, y)
            x2 = min(images[im_id]["width"] - 1, x1 + max(0, w - 1))
            y2 = min(images[im_id]["height"] - 1, y1 + max(0, h - 1))
            if a.get("area", 1) > 0 and x2 > x1 and y2 > y1:
                out.append((im_id, [x1, y1, x2 - x1, y2 - y1]))
    return out


def test_coco_gt_boxes(coco_sample):
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG)
    expected = _expected_gt_boxes(coco_sample["ann"])
    assert len(ds) == len(expected) and ds.has_gt_joints and ds.num_images == 4
    for rec, (im_id, box) in zip(ds.records, expected):
        c, s = box_to_center_scale(*box, (96, 128))
        assert rec["image_id"] == im_id
        np.testing.assert_allclose(rec["center"], c)
        np.testing.assert_allclose(rec["scale"], s)
    item = ds[0]
    assert item["img"].shape == (3, 128, 96) and item["img"].dtype == np.float32
    assert item["joints"].shape == (17, 3) and "target" not in item
    vis = item["joints"][:, 2] > 0
    assert ((item["joints"][vis, :2] >= -1) & (item["joints"][vis, :2] <= [97, 129])).all()
    assert item["idx"] == 0 and item["bbox_score"] == 1.0 and item["image_id"] == ds.records[0]["image_id"]


def test_coco_detection_boxes_and_threshold(coco_sample):
    dets = json.loads(coco_sample["det"].read_text())
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=coco_sample["det"])
    assert len(ds) == sum(d["category_id"] == 1 for d in dets) and not ds.has_gt_joints
    assert "joints" not in ds[0]
    thr = 0.5
    ds2 = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=coco_sample["det"],
                             det_bbox_thr=thr)
    assert len(ds2) == sum(d["category_id"] == 1 and d["score"] >= thr for d in dets) < len(ds)
    assert min(r["bbox_score"] for r in ds2.records) >= thr


def test_crowdpose_skips_persons_without_keypoints(crowdpose_sample):
    cfg = make_data_cfg("crowdpose", image_size=(96, 128), heatmap_size=(24, 32))
    ds = TopDownCrowdPoseDataset(crowdpose_sample["ann"], crowdpose_sample["images"], cfg)
    assert len(ds) == len(_expected_gt_boxes(crowdpose_sample["ann"])) == 4
    assert ds[1]["joints"].shape == (14, 3)


def test_mpii_conventions(mpii_sample):
    cfg = make_data_cfg("mpii", image_size=(64, 64), heatmap_size=(16, 16))
    ds = TopDownMpiiDataset(mpii_sample["ann"], mpii_sample["images"], cfg)
    a = json.loads(mpii_sample["ann"].read_text())[0]
    rec = ds.records[0]
    np.testing.assert_allclose(rec["center"], [a["center"][0] - 1, a["center"][1] + 15 * a["scale"] - 1], rtol=1e-6)
    np.testing.assert_allclose(rec["scale"], [a["scale"] * 1.25] * 2, rtol=1e-6)
    np.testing.assert_allclose(rec["joints"][:, :2], np.array(a["joints"]) - 1)
    np.testing.assert_allclose(rec["headsize"], np.linalg.norm(np.subtract(a["joints"][9], a["joints"][8])))
    assert len(ds) == 5 and ds.num_images == 5 and ds[4]["img"].shape == (3, 64, 64)


def test_collate_with_workers_and_train_targets(coco_sample):
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, train=True, seed=0)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    torch.manual_seed(0)
    batch = next(iter(loader))
    assert batch["img"].shape == (4, 3, 128, 96) and batch["img"].dtype == torch.float32
    assert batch["target"].shape == (4, 17, 32, 24) and batch["target_weight"].shape == (4, 17, 1)
    assert batch["center"].shape == (4, 2) and batch["joints"].shape == (4, 17, 3)
    assert isinstance(batch["image_file"], list) and batch["idx"].tolist() == [0, 1, 2, 3]
    samples = []
    for _ in range(2):  # same torch seed, fresh dataset -> same augmentation
        torch.manual_seed(0)
        fresh = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, train=True, seed=0)
        samples.append(collate([fresh[i] for i in range(2)]))
    np.testing.assert_array_equal(samples[0]["target"], samples[1]["target"])
    np.testing.assert_array_equal(samples[0]["img"], samples[1]["img"])


# ------------------------------------------------------------------------------------------ input errors


def _copy_sample(coco_sample, tmp_path: Path, mutate=None, ann_name="ann.json") -> Path:
    data = json.loads(coco_sample["ann"].read_text())
    if mutate:
        mutate(data)
    p = tmp_path / ann_name
    p.write_text(json.dumps(data))
    return p


def test_missing_files(coco_sample, tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file .*nope.json"):
        TopDownCocoDataset(tmp_path / "nope.json", coco_sample["images"], COCO_CFG)
    with pytest.raises(FileNotFoundError, match="detection file"):
        TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=tmp_path / "d.json")
    with pytest.raises(FileNotFoundError, match="image folder"):
        TopDownCocoDataset(coco_sample["ann"], tmp_path / "nodir", COCO_CFG)


def test_missing_image_is_named(coco_sample, tmp_path):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for p in Path(coco_sample["images"]).glob("*.jpg"):
        if p.name != "000000040083.jpg":
            shutil.copy(p, img_dir)
    with pytest.raises(FileNotFoundError, match=r"1 of 4 images not found in folder .*imgs.*000000040083\.jpg"):
        TopDownCocoDataset(coco_sample["ann"], img_dir, COCO_CFG)


def test_malformed_annotations(coco_sample, tmp_path):
    bad = _copy_sample(coco_sample, tmp_path, lambda d: d.pop("images"))
    with pytest.raises(ValueError, match="missing the key 'images'"):
        TopDownCocoDataset(bad, coco_sample["images"], COCO_CFG)
    bad = _copy_sample(coco_sample, tmp_path, lambda d: d["annotations"][3].pop("keypoints"))
    with pytest.raises(ValueError, match=r"annotations\[3\] is missing the key 'keypoints'"):
        TopDownCocoDataset(bad, coco_sample["images"], COCO_CFG)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TopDownCocoDataset(bad, coco_sample["images"], COCO_CFG)
    with pytest.raises(ValueError, match="num_joints=17 but crowdpose has 14"):
        TopDownCrowdPoseDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG)


def test_detections_for_other_images(coco_sample, tmp_path):
    dets = json.loads(coco_sample["det"].read_text())
    for d in dets[:3]:
        d["image_id"] = 424242
    dets[5]["image_id"] = 99
    p = tmp_path / "det.json"
    p.write_text(json.dumps(dets))
    with pytest.raises(ValueError, match=r"2 image_ids are not in the annotation file.*99, 424242"):
        TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=p)
    p.write_text(json.dumps([{"image_id": 785, "bbox": [0, 0, 5, 5], "category_id": 1}]))
    with pytest.raises(ValueError, match="entry 0 is missing the key 'score'"):
        TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=p)


def test_empty_dataset(coco_sample, tmp_path):
    with pytest.raises(ValueError, match="no person boxes .*score >= 1.1"):
        TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, det_file=coco_sample["det"],
                           det_bbox_thr=1.1)
    empty = _copy_sample(coco_sample, tmp_path, lambda d: d.update(annotations=[]))
    with pytest.raises(ValueError, match="no person boxes"):
        TopDownCocoDataset(empty, coco_sample["images"], COCO_CFG)
    with pytest.raises(ValueError, match="no det_file given"):
        TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], COCO_CFG, use_gt_bbox=False)


def test_mpii_malformed(mpii_sample, tmp_path):
    data = json.loads(mpii_sample["ann"].read_text())
    data[2].pop("joints_vis")
    p = tmp_path / "mpii.json"
    p.write_text(json.dumps(data))
    cfg = make_data_cfg("mpii", image_size=(64, 64), heatmap_size=(16, 16))
    with pytest.raises(ValueError, match="entry 2 is missing the key 'joints_vis'"):
        TopDownMpiiDataset(p, mpii_sample["images"], cfg)


# ------------------------------------------------------------------------------------------ bottom-up (whole images)


def test_bottom_up_resize_align_keeps_the_aspect_ratio():
    from srpose.data.bottom_up import resize_align_size

    (w, h), center, scale = resize_align_size(425, 640, 512)  # landscape: height -> 512, width to 64-multiple
    assert (w, h) == (832, 512)
    assert center.tolist() == [320, 212]  # round(212.5) is 212, as Python (and mmpose) rounds
    np.testing.assert_allclose(scale, [832 / 512 * 425 / 200, 425 / 200])
    (w, h), _, scale = resize_align_size(640, 480, 512)  # portrait
    assert (w, h) == (512, 704)
    np.testing.assert_allclose(scale, [480 / 200, 704 / 512 * 480 / 200])
    with pytest.raises(ValueError, match="positive"):
        resize_align_size(0, 10, 512)


def test_bottom_up_dataset_errors(tmp_path):
    from srpose import get_config
    from srpose.data.bottom_up import BottomUpCocoDataset

    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(dict(images=[dict(id=1, file_name="x.jpg")], annotations=[],
                                   categories=[dict(id=1, name="person")])))
    with pytest.raises(FileNotFoundError, match="x.jpg"):
        BottomUpCocoDataset(ann, tmp_path, get_config("res50_coco_512x512").data)
    with pytest.raises(ValueError, match="multiple of 64"):
        BottomUpCocoDataset(ann, tmp_path, dict(image_size=[500, 500]))
