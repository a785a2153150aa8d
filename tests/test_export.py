"""ONNX export, one code path for both tasks: every preset matches PyTorch in ONNX Runtime; the graph carries its
artifact card; parity against PyTorch; bad requests refused; top-down flip/decode numerics; bottom-up dynamic
height and width and in-graph candidates. FP16 / INT8 graphs: test_export_precision.py; the CLI: test_export_cli.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _export_utils import (
    BU_PROFILE,
    TASKS,
    cached_export,
    crops,
    identity_center_scale,
    tiny_bottom_up_config,
    tiny_config,
    tiny_model,
    torch_out,
)

from srpose import build_model, get_config, list_models
from srpose.card import read_card
from srpose.decode import decode_heatmaps
from srpose.engines.onnxruntime import OnnxRuntimeBackend
from srpose.eval.backends import TorchBackend
from srpose.export.model_export import parity_report
from srpose.export.onnx_export import export_onnx, parse_batch, read_metadata
from srpose.tasks import parse_shape_profile, task_for

pytestmark = pytest.mark.usefixtures("one_thread")  # torch and ONNX Runtime share 2 cores


def _exported(task: str, decode: bool = False) -> tuple:
    """(path, model, cfg) of the shared tiny export of ``task`` (top-down: hrnet + simple head, 16x16 heatmaps;
    bottom-up: hrnet + SR head, the test shape profile), raw or decoded with the flip test in the graph."""
    kw = dict(decode=True, flip=True) if decode else {}
    return cached_export("hrnet", "simple", **kw) if task == "top-down" else cached_export("bottom-up", "sr", **kw)


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def _host_heatmaps(model: torch.nn.Module, cfg, x: np.ndarray, flip: bool) -> np.ndarray:
    """Top-down heatmaps of PyTorch with the flip test on the host (the evaluator's path)."""
    out, _ = task_for(cfg).infer(TorchBackend(model), {"img": x}, flip=flip)
    return out["heatmaps"]


def _dims(path: Path) -> list:
    return [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


# ------------------------------------------------------------------------------------------- every preset
def _presets() -> list:
    """Every COCO preset (the MPII / CrowdPose ones, these architectures with other joints, are exported at reduced
    width in test_presets_mpii_crowdpose.py); HRFormer ones (5000-node graphs, ~10 s of tracing each) are also
    marked ``slow``."""
    return [pytest.param(n, marks=pytest.mark.slow) if get_config(n).model["backbone"]["type"] == "HRT" else n
            for n in list_models() if get_config(n).data["dataset"] == "coco"]


@pytest.mark.parametrize("name", _presets())
def test_preset_exports_and_matches_pytorch(name: str, tmp_path: Path) -> None:
    cfg = get_config(name).with_input_size(64, 64)
    torch.manual_seed(0)
    model = build_model(cfg, init=False)
    # simplify=False keeps this loop fast; onnxsim is covered by the tiny-model tests
    path = export_onnx(model, cfg, tmp_path / "m.onnx", batch=(1, 2, 4), simplify=False)
    backend = OnnxRuntimeBackend(path, threads=1)
    shapes = [(1, 64, 64), (3, 64, 64)]
    if cfg.is_bottom_up:  # heatmaps + tag maps, any image size: dynamic height and width
        shapes.append((1, 64, 128))
        assert backend.card.task == "bottom-up" and backend.card.dynamic_hw and backend.output_names == ["outputs"]
    else:
        assert backend.card.task == "top-down" and not backend.card.dynamic_hw
        assert backend.output_names == ["heatmaps"]
    for i, (n, h, w) in enumerate(shapes):
        x = _images(n, h, w, seed=i)
        ref, (out,) = torch_out(model, x), backend.infer(x).values()
        assert out.shape == ref.shape and out.shape[:2] in ((n, cfg.num_joints), (n, 2 * cfg.num_joints))
        span = float(ref.max() - ref.min())
        assert np.abs(out - ref).max() <= 1e-4 * span, name


# ------------------------------------------------------------------------------------------- the card
_CARD = {  # what the shared tiny exports' cards say, per task
    "top-down": dict(output_names=["heatmaps"], dims=["batch", 3, 64, 64], out_dims=["batch", 17, 16, 16],
                     batch=(1, 2, 4), heatmap_size=(16, 16), codec="simple", hw_profile=None,
                     shapes=((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))),
    "bottom-up": dict(output_names=["outputs"], dims=["batch", 3, "height", "width"],
                      out_dims=["batch", 34, "out_height", "out_width"], batch=(1, 1, 4),
                      heatmap_size=(64, 64), codec="associative_embedding",
                      hw_profile=((64, 64), (64, 128), (128, 128)),
                      shapes=((1, 3, 64, 64), (1, 3, 64, 128), (4, 3, 128, 128))),
}


@pytest.mark.parametrize("task", TASKS)
def test_export_is_deterministic_and_carries_its_card(task: str, tmp_path: Path) -> None:
    want = _CARD[task]
    a, model, cfg = _exported(task)
    opts = dict(batch=(1, 2, 4)) if task == "top-down" else dict(shape_profile=BU_PROFILE)
    b = export_onnx(tiny_model(cfg), cfg, tmp_path / "b.onnx", **opts)  # fresh model, same seed
    assert a.read_bytes() == b.read_bytes()
    m = onnx.load(str(a))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == want["output_names"]
    assert _dims(a) == want["dims"]
    assert [d.dim_param or d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim] == want["out_dims"]
    card, meta = read_card(a), read_metadata(m)
    assert set(card.to_metadata()) <= set(meta) and meta["srpose_format"] == 2  # every card field, JSON-encoded
    assert (meta["batch_min"], meta["batch_opt"], meta["batch_max"]) == want["batch"] == card.batch
    assert card.task == task and card.input_size == (64, 64) and card.heatmap_size == want["heatmap_size"]
    assert card.precision == "fp32" and card.output_names == want["output_names"] and card.input_name == "input"
    assert card.flip is False and card.decode is False and card.output_kind == "heatmaps"
    assert card.codec["name"] == want["codec"] == task_for(cfg).codec.name
    assert card.hw_profile == want["hw_profile"] and card.input_shapes() == want["shapes"]
    assert card.checkpoint_sha256 is None and card.config["name"] == cfg.name and card.opset == 17
    assert card.mean == cfg.data["mean"] and card.flip_pairs == [list(p) for p in cfg.flip_pairs]
    if task == "bottom-up":  # the flat profile keys TensorRT tools read; the codec's NMS settings
        assert (meta["height_max"], meta["width_opt"], card.codec["nms_kernel"]) == (128, 128, 11)
    c = export_onnx(model, cfg, tmp_path / "c.onnx", metadata={"checkpoint_sha256": "ab" * 32}, **opts)
    assert read_card(c).checkpoint_sha256 == "ab" * 32
    assert model.training is False


# ------------------------------------------------------------------------------------------- parity with PyTorch
@pytest.mark.parametrize("task,decode", [("top-down", False), ("top-down", True), ("bottom-up", False),
                                         ("bottom-up", True)])
def test_graph_matches_pytorch_reference(task: str, decode: bool) -> None:
    """Each output of the graph (raw maps, keypoints, candidates) against the task's PyTorch reference with the same
    flip and decode, on the task's parity inputs and (bottom-up) both aspect ratios."""
    path, model, cfg = _exported(task, decode)
    card, t = read_card(path), task_for(cfg)
    assert card.decode is decode and card.flip is decode
    groups = t.parity_inputs(card)
    assert set(groups) == ({"random"} if task == "top-down" else {"64x64", "128x64"})
    if task == "bottom-up":
        groups.update({"64x128": [_images(1, 128, 64, seed=5)], "batch2": [_images(2, 64, 128, seed=6)]})
    report = parity_report(path, t.reference(model, flip=card.flip, decode=card.decode), groups, t)
    assert set(report) == set(groups)
    for group in report.values():
        assert set(group) == set(card.output_names)
        for name, e in group.items():
            if name == "keypoints":  # x, y in heatmap pixels and the peak score
                assert e["max_abs"] < 1e-3 and e["mean_kpt_px"] < 1e-4, (name, e)
            else:
                assert e["max_abs"] < 1e-4 and e["rel_l2"] < 1e-5, (name, e)


# ------------------------------------------------------------------------------------------- bad requests
def _bad_requests() -> list:
    td, bu = tiny_config("hrnet", "simple"), tiny_bottom_up_config("sr")
    unbiased = tiny_config("hrnet", "simple")
    unbiased.model["test_cfg"]["post_process"] = "unbiased"
    return [
        pytest.param(unbiased, unbiased, dict(decode=True), "unbiased", id="top-down-decode-unbiased"),
        pytest.param(td, td, dict(shape_profile=BU_PROFILE), "bottom-up models only", id="top-down-shape-profile"),
        pytest.param(bu, bu, dict(flip=True), "needs --decode", id="bottom-up-flip-without-decode"),
        pytest.param(bu, bu, dict(shape_profile="64x64,32x32,128x128"), "multiples of 64",
                     id="bottom-up-bad-shape-profile"),
        pytest.param(bu, td, {}, "the model returns shape", id="bottom-up-model-top-down-config"),
        pytest.param(td, bu, {}, "the model returns shape", id="top-down-model-bottom-up-config"),
        pytest.param(td, td, dict(opset=11), "opset", id="top-down-opset"),
        pytest.param(bu, bu, dict(opset=11), "opset", id="bottom-up-opset"),
        pytest.param(td, td, dict(batch=(4, 2, 8)), "batch", id="top-down-batch"),
        pytest.param(bu, bu, dict(batch=(0, 1, 4)), "batch", id="bottom-up-batch"),
    ]


@pytest.mark.parametrize("model_cfg,cfg,kw,match", _bad_requests())
def test_export_refuses_bad_requests_and_writes_nothing(model_cfg, cfg, kw: dict, match: str,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        export_onnx(tiny_model(model_cfg), cfg, tmp_path / "x.onnx", **kw)
    assert not list(tmp_path.iterdir())


def test_batch_and_shape_profile_parsing() -> None:
    assert parse_batch("1,8,32") == (1, 8, 32) and parse_batch("4") == (4, 4, 4)
    for bad in ("8,1,32", "0,1,2", "1,2", "a,b,c"):
        with pytest.raises(ValueError, match="batch"):
            parse_batch(bad)
    assert parse_shape_profile(" 64x64, 128x64,128x128") == ((64, 64), (64, 128), (128, 128))  # WxH in, (H, W) out
    assert task_for(get_config("hrnet_w32_sr_coco_512x512")).default_hw_profile() == ((512, 512), (512, 704),
                                                                                     (1536, 1536))
    for bad in ("64x64,128x64", "64x60,128x64,128x128", "128x128,64x64,128x128", "axb,1,2"):
        with pytest.raises(ValueError):
            parse_shape_profile(bad)
    assert task_for(tiny_config("hrnet", "sr")).default_batch == (1, 32, 64)  # the evaluator and Triton send 32
    assert task_for(tiny_bottom_up_config("sr")).default_batch == (1, 1, 4)


# ------------------------------------------------------------------------------------------- top-down numerics
@pytest.mark.parametrize("head", ["sr", "simple"])
def test_flip_graph_matches_python_flip_test(head: str) -> None:
    path, model, cfg = cached_export("hrnet", head, flip=True)
    backend = OnnxRuntimeBackend(path)
    assert backend.flip_in_graph and not backend.decoded and backend.card.output_kind == "heatmaps"
    x = crops(3, cfg)
    ref = _host_heatmaps(model, cfg, x, flip=True)
    out = backend.infer(x)["heatmaps"]
    assert np.abs(out - ref).max() <= 1e-5 * float(ref.max() - ref.min())
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Loop", "If", "Scan", "NonZero"}


@pytest.mark.parametrize("head,flip", [("sr", False), ("simple", False), ("srpose", True)])
def test_decode_graph_matches_numpy_decoder(head: str, flip: bool) -> None:
    path, model, cfg = cached_export("hrnet", head, decode=True, flip=flip)
    backend = OnnxRuntimeBackend(path)
    assert backend.card.output_kind == "keypoints" and backend.decoded and backend.flip_in_graph == flip
    assert backend.output_names == ["keypoints"]
    x = crops(4, cfg, seed=3)
    heat = _host_heatmaps(model, cfg, x, flip=flip)
    center, scale = identity_center_scale(len(x), cfg.heatmap_size)
    xy, score = decode_heatmaps(heat, center, scale, kind=task_for(cfg).codec.name)
    out = backend.infer(x)["keypoints"]
    assert out.shape == (4, cfg.num_joints, 3)
    np.testing.assert_allclose(out[..., :2], xy, atol=1e-3)
    np.testing.assert_allclose(out[..., 2:], score, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------- bottom-up specifics
def test_bottom_up_raw_graph_runs_any_size_in_the_generic_backend() -> None:
    path, model, cfg = _exported("bottom-up")
    backend = OnnxRuntimeBackend(path)  # the one backend of every graph
    assert backend.card.dynamic_hw and not backend.decoded and not backend.flip_in_graph
    reference = task_for(cfg).reference(model, flip=False, decode=False)
    for h, w in ((64, 128), (128, 64), (192, 64)):  # any aspect ratio, beyond the TensorRT profile too
        x = _images(1, h, w, seed=h + w)
        out = backend.infer(x)
        assert list(out) == ["outputs"] and out["outputs"].shape == (1, 34, h, w)
        np.testing.assert_allclose(out["outputs"], reference(x)["outputs"], atol=1e-4)


def test_decoded_bottom_up_graph_gives_the_same_people_as_the_host() -> None:
    path, model, cfg = cached_export("bottom-up", "simple", decode=True)
    backend = OnnxRuntimeBackend(path)
    codec = task_for(cfg).codec
    assert backend.card.output_kind == "bottomup_candidates" and backend.decoded
    assert backend.flip_in_graph  # the config's flip_test: the default of a decoded bottom-up export
    assert backend.output_names == ["heatmaps", "tags", "candidates"]
    rng = np.random.default_rng(1)
    for w, h in ((128, 64), (64, 128)):
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        out = backend.infer(x)
        assert out["heatmaps"].shape == (1, 17, h, w) and out["tags"].shape == (1, 17, h, w, 2)
        assert out["candidates"].shape == (1, 17, codec.max_num_people, 5)
        center, scale = np.array([w / 2, h / 2]), np.array([w / 200, h / 200])
        with torch.no_grad():
            raw, raw_f = model(torch.from_numpy(x)), model(torch.from_numpy(np.ascontiguousarray(x[..., ::-1])))
        for refine in (False, True):
            got = codec.decode_candidates(out["heatmaps"][0], out["tags"][0], out["candidates"][0], center, scale,
                                          refine=refine)
            ref = codec.decode(raw, raw_f, center, scale, input_size=(w, h), refine=refine)
            assert len(ref) > 0 and len(got) == len(ref)
            np.testing.assert_allclose(np.sort(got.scores), np.sort(ref.scores), atol=1e-5)
            same = np.isclose(got.keypoints, ref.keypoints, atol=1e-3).all(axis=2)
            # a random model's maps are full of near-ties (bilinear plateaus): 1e-8 differences between ONNX
            # Runtime and PyTorch may reorder candidates or tip refine's arg-max for a few joints
            assert same.mean() > (0.9 if refine else 0.98)
