"""Image-to-keypoints graphs (issue #20): the crop against OpenCV's, the post-processing against the host decoder,
the stitched ONNX graph against PyTorch for every precision, the TensorRT parser check, and the evaluator's
whole-image path against the host pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from _export_utils import cached_export, cached_image_graph, tiny_config, tiny_model

from srpose.card import BOX_IMAGE, BOXES, IMAGES, KEYPOINTS, SCORES, read_card
from srpose.data.transforms import box_to_center_scale, normalize_image, warp_affine_crop
from srpose.engines import open_backend
from srpose.engines.tensorrt.onnx_check import check_onnx_for_tensorrt
from srpose.eval import EvalOptions, evaluate
from srpose.export.image_graph import ImageGraphOptions, image_graph, write_image_graph
from srpose.tasks import task_for
from srpose.tasks._image_batches import feed_shapes, fill_feed, plan_batches
from srpose.tasks._image_graph import ImageCrops

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _images(rng: np.random.Generator) -> list[np.ndarray]:
    """Two smooth BGR images of different sizes (bright bottom rows, so a crop reading the next image would show)."""
    out = []
    for h, w in ((70, 90), (50, 120)):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
        img[-3:] = 255
        out.append(img)
    return out


def _padded(images: list[np.ndarray]) -> np.ndarray:
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    batch = np.zeros((len(images), h, w, 3), np.uint8)
    for b, img in enumerate(images):
        batch[b, :img.shape[0], :img.shape[1]] = img
    return batch


@pytest.mark.parametrize("pixel_format", ["bgr", "rgb"])
def test_crops_match_opencv_warp_affine(pixel_format: str) -> None:
    """Inside, across every border of both images (never reading the neighbouring image), and wide / tall boxes:
    within one grey level of mmpose's cv2.warpAffine crop (OpenCV rounds at 1/32 pixel and to uint8)."""
    rng = np.random.default_rng(0)
    images = _images(rng)
    boxes = np.array([[10, 5, 30, 40, 1], [-15, -10, 40, 50, 1], [60, 40, 50, 45, 1],  # inside, top-left, bottom
                      [80, 20, 60, 20, 1], [5, 30, 20, 60, 1], [-100, -100, 10, 10, 1]], np.float32)  # out entirely
    box_image = np.array([0, 0, 0, 1, 1, 1], np.int32)
    m = ImageCrops((48, 64), MEAN, STD, pixel_format=pixel_format).eval()
    feed = _padded([i if pixel_format == "bgr" else i[..., ::-1].copy() for i in images])
    with torch.no_grad():
        got = m(torch.from_numpy(feed), torch.from_numpy(boxes), torch.from_numpy(box_image)).numpy()
    for i, (box, b) in enumerate(zip(boxes, box_image)):
        c, s = box_to_center_scale(*box[:4], (48, 64))
        crop, _ = warp_affine_crop(cv2.cvtColor(images[b], cv2.COLOR_BGR2RGB), c, s, 0.0, (48, 64))
        want = normalize_image(crop, MEAN, STD)
        grey = np.abs(got[i] - want) * np.asarray(STD, np.float32)[:, None, None] * 255
        assert grey.max() < 1.0, (i, grey.max())
    assert np.allclose(got[5], normalize_image(np.zeros((64, 48, 3), np.uint8), MEAN, STD))  # zeros, as OpenCV


def test_flipped_crops_follow_the_crops() -> None:
    rng = np.random.default_rng(1)
    feed = _padded(_images(rng))
    boxes, box_image = np.array([[5, 5, 40, 40, 1], [3, 3, 50, 30, 1]], np.float32), np.array([1, 0], np.int32)
    args = (torch.from_numpy(feed), torch.from_numpy(boxes), torch.from_numpy(box_image))
    with torch.no_grad():
        plain = ImageCrops((48, 64), MEAN, STD)(*args)
        both = ImageCrops((48, 64), MEAN, STD, flip=True)(*args)
    assert both.shape[0] == 4
    torch.testing.assert_close(both[:2], plain)
    torch.testing.assert_close(both[2:], plain.flip(3))


def test_post_processing_equals_the_host_decoder() -> None:
    """Flip merge + decoder + back-projection + rescoring in the graph = the evaluator's numpy path."""
    from srpose.tasks._rescore import rescore

    cfg = tiny_config("hrnet", "srpose")
    task = task_for(cfg)
    _, post = task.image_graph_parts(flip=True)
    w, h = task.codec.heatmap_size
    rng = np.random.default_rng(2)
    heat = rng.random((6, cfg.num_joints, h, w), dtype=np.float32) * 0.3
    boxes = np.array([[10, 20, 30, 60, 0.9], [0, 0, 80, 40, 0.5], [5, 5, 5, 5, 1.0]], np.float32)
    with torch.no_grad():
        kp, scores = (t.numpy() for t in post(torch.from_numpy(heat), torch.from_numpy(boxes)))
    merged = task.codec.flip_merge(heat[:3], heat[3:])
    cs = [box_to_center_scale(*b[:4], cfg.image_size) for b in boxes]
    center, scale = np.stack([c for c, _ in cs]), np.stack([s for _, s in cs])
    xy, sc = task.codec.decode_to_image(merged, center, scale)
    np.testing.assert_allclose(kp[..., :2], xy, atol=2e-3)
    np.testing.assert_allclose(kp[..., 2:], sc, atol=1e-6)
    want = [rescore(np.concatenate([x, s], -1), b[4], 0.2) for x, s, b in zip(xy, sc, boxes)]
    np.testing.assert_allclose(scores, want, rtol=1e-5)


def test_image_graph_file_card_parser_check_and_parity() -> None:
    path, model, cfg = cached_image_graph()
    card = read_card(path)
    assert card.image_input and card.flip and card.decode and card.output_kind == "people"
    assert card.input_names == [IMAGES, BOXES, BOX_IMAGE] and card.output_names == [KEYPOINTS, SCORES]
    assert card.batch == (1, 4, 8) and card.image_batch == (1, 2, 4) and card.pixel_format == "bgr"
    assert card.hw_profile == ((16, 16), (64, 96), (256, 256))
    assert check_onnx_for_tensorrt(path) == []
    proto = onnx.load(str(path))
    names = [n.name for n in proto.graph.node]
    assert sum(n.op_type == "GridSample" for n in proto.graph.node) == 1  # one crop for every person of every image
    assert any(n.startswith("/preprocess/") for n in names) and any(n.startswith("/postprocess/") for n in names)
    assert any(n.startswith("/model/") for n in names)  # the network's own node names are kept
    task = task_for(cfg)
    feed = task.parity_inputs(card)["random"][0]
    ref = task.reference_for(model, card)(feed)
    got = open_backend(path).infer(feed)
    np.testing.assert_allclose(got[KEYPOINTS], ref[KEYPOINTS], atol=1e-3)
    np.testing.assert_allclose(got[SCORES], ref[SCORES], atol=1e-5)


def test_wrapping_refuses_what_cannot_be_wrapped(tmp_path: Path) -> None:
    core, _, _ = cached_export("hrnet", "srpose")
    proto = onnx.load(str(core))
    with pytest.raises(ValueError, match="already takes images"):
        image_graph(onnx.load(str(cached_image_graph()[0])))
    old = onnx.load(str(core))
    old.opset_import[0].version = 15
    with pytest.raises(ValueError, match="opset >= 16"):
        image_graph(old)
    flipped, _, _ = cached_export("hrnet", "srpose", flip=True)
    with pytest.raises(ValueError, match="has the flip test in its graph"):
        image_graph(onnx.load(str(flipped)), ImageGraphOptions(flip=False))
    decoded, _, _ = cached_export("hrnet", "srpose", decode=True)
    with pytest.raises(ValueError, match="cannot be added after decoding"):
        image_graph(onnx.load(str(decoded)), ImageGraphOptions(flip=True))
    both = image_graph(onnx.load(str(cached_export("hrnet", "srpose", decode=True, flip=True)[0])))
    assert sum(n.op_type == "GridSample" for n in both.graph.node) == 1  # flip and decode stay in the network
    assert proto.graph.input[0].name == "input"


def test_every_precision_wraps_and_parses(tmp_path: Path) -> None:
    """FP16 (strongly typed casts), INT8 and mixed INT8/FP16 (Q/DQ) networks keep their conversion inside the
    image graph; the pre- and post-processing stay float32."""
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8

    core, model, cfg = cached_export("hrnet", "srpose")
    rng = np.random.default_rng(3)
    calib = [rng.standard_normal((2, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    from srpose.eval._int8_groups import quantisable_nodes
    from srpose.export._int8_mixed import write_mixed_model
    from srpose.export.int8 import calibration_ranges

    convert_fp16(core, tmp_path / "n.fp16.onnx")
    quantize_int8(core, tmp_path / "n.int8.onnx", calib, method="max", cache_dir=None)
    ranges = calibration_ranges(core, calib, method="max")  # srpose quantize's graph: some layers FP16, the rest INT8
    fp16_half = [n.name for n in quantisable_nodes(onnx.load(str(core)), ranges.op_types)][::2]
    write_mixed_model(core, tmp_path / "n.mixed.onnx", ranges, fp16_half)
    task = task_for(cfg)
    for precision in ("fp16", "int8", "mixed"):
        out = write_image_graph(tmp_path / f"n.{precision}.onnx", tmp_path / f"i.{precision}.onnx")
        card = read_card(out)
        assert card.precision == precision and card.image_input
        assert check_onnx_for_tensorrt(out) == []
        proto = onnx.load(str(out))
        pre = [n for n in proto.graph.node if n.name.startswith(("/preprocess/", "/postprocess/"))]
        assert pre and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in pre)
        assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node) == (precision != "fp16")
        feed = task.parity_inputs(card)["random"][0]
        got = open_backend(out).infer(feed)
        assert got[KEYPOINTS].shape == (len(feed[BOXES]), cfg.num_joints, 3)
        assert np.isfinite(got[KEYPOINTS]).all()


def test_plan_batches_packs_whole_images_and_splits_crowds() -> None:
    class Records:
        records = [dict(image_file=f) for f in "aaabbbbbcdd"] + [dict(image_file="a")]

    plans = plan_batches(Records(), None, persons=4, max_persons=4, max_images=2)
    flat = [(name, list(idx)) for plan in plans for name, idx in plan]
    assert flat[0] == ("a", [0, 1, 2, 11])  # an image's records together, in order of first appearance
    assert [len(p) for p in plans] == [1, 1, 2, 1]  # b (5 persons) is split at the profile's 4; 2 images at most
    assert sum(len(idx) for _, idx in flat) == 12 and all(sum(len(i) for _, i in p) <= 4 for p in plans)
    assert [name for plan in plans for name, _ in plan] == ["a", "b", "b", "c", "d"]
    assert plan_batches(Records(), [9, 10, 3], persons=32, max_persons=8, max_images=4)[0][0][0] == "d"
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_batches(Records(), None, persons=0, max_persons=4, max_images=2)


def test_fill_feed_pads_with_zeros_over_stale_data() -> None:
    rng = np.random.default_rng(4)
    images = _images(rng)
    batch = dict(images=images, boxes=np.zeros((3, 5), np.float32), box_image=np.array([0, 1, 1], np.int32),
                 idx=np.arange(3))
    shapes = feed_shapes(batch)
    assert shapes[IMAGES] == (2, 96, 128, 3)  # padded to multiples of 32
    stale = {k: np.full(s, 7, dtype) for (k, s), dtype in zip(shapes.items(), (np.uint8, np.float32, np.int32))}
    feed = fill_feed(batch, stale)
    np.testing.assert_array_equal(feed[IMAGES][0, :70, :90], images[0])
    assert not feed[IMAGES][0, 70:].any() and not feed[IMAGES][0, :70, 90:].any()
    assert feed_shapes(batch, hw_max=(80, 120))[IMAGES] == (2, 80, 120, 3)  # rounding stops at the profile


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluator_image_path_matches_the_graph_and_the_host_pipeline(coco_sample: dict, workers: int) -> None:
    """COCO sample with detections (118 persons, images of up to 37): the evaluator's whole-image batches give the
    graph's own keypoints (fed by hand) and, against the crop graph with the host flip and decoder, the same
    keypoints up to interpolation (OpenCV's 1/32-pixel crop vs bilinear)."""
    path, model, cfg = cached_image_graph()
    crop_path, _, _ = cached_export("hrnet", "srpose")
    task = task_for(cfg)
    ds = task.dataset(str(coco_sample["ann"]), str(coco_sample["images"]), det=str(coco_sample["det"]))
    img = evaluate(task, open_backend(path), ds, EvalOptions(progress=False, workers=workers, batch_size=5))
    host = evaluate(task, open_backend(crop_path), ds, EvalOptions(progress=False, workers=0, flip=True))
    assert img.num_persons == host.num_persons == len(ds) == 118
    d = np.linalg.norm(img.keypoints[..., :2] - host.keypoints[..., :2], axis=-1)
    assert np.median(d) < 0.5, np.median(d)
    # the first image's persons fed by hand give exactly the evaluator's keypoints
    rec = ds.records
    first = [i for i, r in enumerate(rec) if r["image_file"] == rec[0]["image_file"]][:8]
    bgr = cv2.imread(str(Path(coco_sample["images"]) / rec[0]["image_file"]))
    from srpose.tasks._image_batches import person_boxes

    boxes = person_boxes(ds)[first]
    out = open_backend(path).infer({IMAGES: bgr[None], BOXES: boxes, BOX_IMAGE: np.zeros(len(first), np.int32)})
    np.testing.assert_allclose(out[KEYPOINTS], img.keypoints[first], atol=1e-3)


def test_evaluator_refuses_an_image_graph_without_flip_when_flip_is_asked(coco_sample: dict) -> None:
    path, _, cfg = cached_image_graph(flip=False)
    task = task_for(cfg)
    ds = task.dataset(str(coco_sample["ann"]), str(coco_sample["images"]), gt_bbox=True)
    with pytest.raises(ValueError, match="exported without the flip test"):
        evaluate(task, open_backend(path), ds, EvalOptions(progress=False, workers=0, flip=True))
    res = evaluate(task, open_backend(path), ds, EvalOptions(progress=False, workers=0, flip=False))
    assert res.num_persons == len(ds) and not res.flip


def test_mpii_center_scale_records_become_equivalent_boxes(mpii_sample: dict) -> None:
    from srpose.tasks._image_batches import person_boxes
    from srpose.tasks._image_graph import BoxGeometry

    ds = task_for("res50_mpii_256x256").dataset(str(mpii_sample["ann"]), str(mpii_sample["images"]))
    boxes = person_boxes(ds)
    center, scale = BoxGeometry((256, 256))(torch.from_numpy(boxes))
    np.testing.assert_allclose(center.numpy(), np.stack([r["center"] for r in ds.records]), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(scale.numpy(), np.stack([r["scale"] for r in ds.records]), rtol=1e-6)


def test_export_cli_writes_image_graphs_with_their_report(tmp_path: Path) -> None:
    from srpose.cli import main

    cfg = tiny_config("hrnet", "srpose")
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny_model(cfg).state_dict()}, ckpt)
    out = tmp_path / "out"
    assert main(["export", str(cfg_path), "--checkpoint", str(ckpt), "--out-dir", str(out), "--precision", "fp32",
                 "fp16", "--image-input", "--image-batch", "1,2,4", "--batch", "1,8,16",
                 "--shape-profile", "32x32,320x240,640x640"]) == 0
    report = json.loads((out / f"{cfg.name}.export.json").read_text())
    assert report["image_input"] and report["output"] == "people" and report["flip"]
    assert report["batch"] == {"min": 1, "opt": 8, "max": 16} and report["image_batch"] == {"min": 1, "opt": 2,
                                                                                            "max": 4}
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{cfg.name}.export.json", f"{cfg.name}.fp16.onnx",
                                                            f"{cfg.name}.fp32.onnx"])  # no crop graph beside
    for entry in report["files"]:
        assert [i["name"] for i in entry["inputs"]] == [IMAGES, BOXES, BOX_IMAGE]
        assert entry["parity"]["random"][KEYPOINTS]["max_abs"] < (1e-2 if entry["precision"] == "fp32" else 50)
        assert read_card(out / entry["file"]).hw_profile == ((32, 32), (240, 320), (640, 640))


def test_torch_image_backend_equals_the_exported_graph(coco_sample: dict) -> None:
    """The PyTorch model run as its image graph (no export) gives the exported graph's keypoints in the
    evaluator."""
    from srpose.eval.backends import TorchImageBackend

    path, model, cfg = cached_image_graph()
    task = task_for(cfg)
    ds = task.dataset(str(coco_sample["ann"]), str(coco_sample["images"]), gt_bbox=True)
    be = TorchImageBackend(model, task, flip=True)
    assert be.image_input and be.card.flip and be.card.output_kind == "people"
    got = evaluate(task, be, ds, EvalOptions(progress=False, workers=0))
    want = evaluate(task, open_backend(path), ds, EvalOptions(progress=False, workers=0))
    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
    with pytest.raises(ValueError, match="fp16 on a CUDA device"):
        TorchImageBackend(model, task, precision="fp16")


def test_image_feed_pads_within_the_graphs_image_profile() -> None:
    """Frames given as a list (srpose predict) are padded to a multiple of 32 only while the graph's largest
    image size allows it: a profile ending at 90 x 90 takes an 80 x 80 frame as 90 x 90, not 96 x 96."""
    from srpose.engines.standin import StandInBackend
    from srpose.export.image_graph import ImageGraphOptions, image_card

    task = task_for("res18w16_srpose_coco_96x64")
    raw = task.make_card(decode=False, flip=False, batch=task.default_batch)
    backend = StandInBackend(image_card(raw, task, ImageGraphOptions(shape_profile="32x32,64x64,90x90")))
    batch = dict(images=[np.zeros((80, 80, 3), np.uint8)], boxes=np.array([[1, 1, 20, 40, 1]], np.float32),
                 box_image=np.zeros(1, np.int32), idx=np.arange(1))
    assert task.image_feed(backend, batch)[IMAGES].shape == (1, 90, 90, 3)
