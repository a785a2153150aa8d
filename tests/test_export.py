"""ONNX export: every preset matches PyTorch in ONNX Runtime; flip/decode graphs; FP16 and INT8 graphs; the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _export_utils import cached_export, crops, identity_center_scale, tiny_config, tiny_model, torch_out
from onnx import TensorProto, numpy_helper

from srpose.engines.onnxruntime import OnnxRuntimeBackend
from srpose.eval.backends import TorchBackend
from srpose.eval.evaluator import predict_heatmaps
from srpose.export.calibration import CalibrationReader, check_image_folder
from srpose.export.fp16 import convert_fp16
from srpose.export.int8 import quantize_int8
from srpose.export.onnx_export import METADATA_KEYS, export_onnx, parse_batch, read_metadata
from srpose import build_model, get_config, list_models, save_checkpoint
from srpose.cli import main as cli_main
from srpose.decode import decode_heatmaps
from srpose.models.bottom_up import is_bottom_up


# ------------------------------------------------------------------------------------------- every preset
def _presets() -> list:
    """Every preset; HRFormer ones (5000-node graphs, ~10 s of tracing each) are also marked ``slow``."""
    return [pytest.param(n, marks=pytest.mark.slow) if get_config(n).model["backbone"]["type"] == "HRT" else n
            for n in list_models()]


@pytest.mark.parametrize("name", _presets())
def test_preset_exports_and_matches_pytorch(name: str, tmp_path: Path) -> None:
    cfg = get_config(name).with_input_size(64, 64)
    torch.manual_seed(0)
    model = build_model(cfg, init=False)
    # simplify=False keeps this loop fast; onnxsim is covered by the tiny-model tests
    path = export_onnx(model, cfg, tmp_path / "m.onnx", batch=(1, 2, 4), simplify=False)
    backend = OnnxRuntimeBackend(path, threads=1)
    shapes = [(1, 64, 64), (3, 64, 64)]
    if is_bottom_up(cfg):  # heatmaps + tag maps, any image size (export.bottom_up): dynamic height and width
        shapes.append((1, 64, 128))
        assert backend.meta["bottom_up"] and backend.meta["dynamic_hw"]
    for i, (n, h, w) in enumerate(shapes):
        x = np.random.default_rng(i).standard_normal((n, 3, h, w)).astype(np.float32)
        ref, out = torch_out(model, x), backend.infer(x)
        assert out.shape == ref.shape and out.shape[:2] in ((n, cfg.num_joints), (n, 2 * cfg.num_joints))
        span = float(ref.max() - ref.min())
        assert np.abs(out - ref).max() <= 1e-4 * span, name


# ------------------------------------------------------------------------------------------- graph properties
def test_export_is_deterministic_and_carries_metadata(tmp_path: Path) -> None:
    a, model, cfg = cached_export("hrnet", "simple")
    b = export_onnx(tiny_model(cfg), cfg, tmp_path / "b.onnx", batch=(1, 2, 4))  # fresh model, same seed
    assert a.read_bytes() == b.read_bytes()
    m = onnx.load(str(a))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["heatmaps"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = read_metadata(m)
    assert set(METADATA_KEYS) <= set(meta)
    assert (meta["batch_min"], meta["batch_opt"], meta["batch_max"]) == (1, 2, 4)
    assert meta["input_size"] == [64, 64] and meta["heatmap_size"] == [16, 16] and meta["precision"] == "fp32"
    assert meta["flip"] is False and meta["decode"] is False and meta["output_kind"] == "heatmaps"
    assert meta["checkpoint_sha256"] is None and meta["config"]["name"] == cfg.name
    c = export_onnx(model, cfg, tmp_path / "c.onnx", batch=(1, 2, 4), metadata={"checkpoint_sha256": "ab" * 32})
    assert read_metadata(c)["checkpoint_sha256"] == "ab" * 32
    assert meta["mean"] == cfg.data["mean"] and meta["flip_pairs"] == [list(p) for p in cfg.flip_pairs]
    assert model.training is False


@pytest.mark.parametrize("head", ["sr", "simple"])
def test_flip_graph_matches_python_flip_test(head: str) -> None:
    path, model, cfg = cached_export("hrnet", head, flip=True)
    backend = OnnxRuntimeBackend(path)
    assert backend.flip_in_graph and backend.output_kind == "heatmaps"
    x = crops(3, cfg)
    ref, _ = predict_heatmaps(TorchBackend(model), x, {}, flip=True, flip_pairs=cfg.flip_pairs,
                              shift_heatmap=cfg.test_cfg["shift_heatmap"])
    out = backend.infer(x)
    assert np.abs(out - ref).max() <= 1e-5 * float(ref.max() - ref.min())
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Loop", "If", "Scan", "NonZero"}


@pytest.mark.parametrize("head,flip", [("sr", False), ("simple", False), ("srpose", True)])
def test_decode_graph_matches_numpy_decoder(head: str, flip: bool) -> None:
    path, model, cfg = cached_export("hrnet", head, decode=True, flip=flip)
    backend = OnnxRuntimeBackend(path)
    assert backend.output_kind == "keypoints" and backend.flip_in_graph == flip
    x = crops(4, cfg, seed=3)
    heat, _ = predict_heatmaps(TorchBackend(model), x, {}, flip=flip, flip_pairs=cfg.flip_pairs,
                               shift_heatmap=cfg.test_cfg["shift_heatmap"])
    center, scale = identity_center_scale(len(x), cfg.heatmap_size)
    xy, score = decode_heatmaps(heat, center, scale, kind=cfg.data["decoder"])
    out = backend.infer(x)
    assert out.shape == (4, cfg.num_joints, 3)
    np.testing.assert_allclose(out[..., :2], xy, atol=1e-3)
    np.testing.assert_allclose(out[..., 2:], score, rtol=1e-4, atol=1e-6)


def test_decode_refuses_what_it_cannot_export(tmp_path: Path) -> None:
    cfg = tiny_config("hrnet", "simple")
    cfg.model["test_cfg"]["post_process"] = "unbiased"
    with pytest.raises(ValueError, match="unbiased"):
        export_onnx(tiny_model(cfg), cfg, tmp_path / "x.onnx", decode=True)
    assert not list(tmp_path.iterdir())


def test_batch_and_opset_checks(tmp_path: Path) -> None:
    assert parse_batch("1,8,32") == (1, 8, 32) and parse_batch("4") == (4, 4, 4)
    for bad in ("8,1,32", "0,1,2", "1,2", "a,b,c"):
        with pytest.raises(ValueError, match="batch"):
            parse_batch(bad)
    cfg = tiny_config("hrnet", "simple")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model(cfg), cfg, tmp_path / "x.onnx", opset=11)


# ------------------------------------------------------------------------------------------- FP16
def test_fp16_graph_is_strongly_typed_with_float32_io(tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrt", "srpose")
    report = convert_fp16(path, tmp_path / "m.fp16.onnx")
    m = onnx.load(str(tmp_path / "m.fp16.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    head = [n for n in convs if "/converge" in n.name]
    assert len(head) == 1 and types[head[0].input[1]] == TensorProto.FLOAT  # the output conv stays float32
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs if n not in head)
    norms = [n for n in m.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.input[0]] == TensorProto.FLOAT for n in norms)
    assert report.kept_fp32_ops.get("LayerNormalization") == len(norms)
    assert any(n.op_type == "Cast" for n in m.graph.node) and read_metadata(m)["precision"] == "fp16"
    x = crops(2, cfg)
    ref = torch_out(model, x)
    out = OnnxRuntimeBackend(tmp_path / "m.fp16.onnx").infer(x)
    assert out.dtype == np.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 5e-3


def test_fp16_keeps_the_head_output_and_decoder_in_float32(tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrnet", "sr", decode=True)
    report = convert_fp16(path, tmp_path / "d.fp16.onnx")
    assert "/model/keypoint_head/heatmap_head/Conv" in report.kept_fp32_nodes
    assert any(n.startswith("/decode/") for n in report.kept_fp32_nodes) and report.followed_fp32 >= 1
    m = onnx.load(str(tmp_path / "d.fp16.onnx"))
    head = next(n for n in m.graph.node if n.name == "/model/keypoint_head/heatmap_head/Conv")
    assert {t.name: t.data_type for t in m.graph.initializer}[head.input[1]] == TensorProto.FLOAT
    x = crops(2, cfg)
    out = OnnxRuntimeBackend(tmp_path / "d.fp16.onnx").infer(x)
    ref = OnnxRuntimeBackend(path).infer(x)
    assert np.mean(np.abs(out[..., :2] - ref[..., :2]) < 1.01) > 0.9  # same peaks, up to a pixel


# ------------------------------------------------------------------------------------------- INT8
def _qdq_checks(model: onnx.ModelProto, excluded: list[str]) -> None:
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), n.name
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        x_dq, w_dq = producers.get(conv.input[0]), producers.get(conv.input[1])
        if conv.name in excluded:
            assert conv.input[1] in inits and inits[conv.input[1]].data_type == TensorProto.FLOAT
            continue
        assert x_dq is not None and x_dq.op_type == "DequantizeLinear", conv.name
        assert producers[x_dq.input[0]].op_type == "QuantizeLinear"
        assert numpy_helper.to_array(inits[x_dq.input[1]]).size == 1  # per-tensor activations
        assert w_dq is not None and w_dq.op_type == "DequantizeLinear", conv.name
        assert inits[w_dq.input[0]].data_type == TensorProto.INT8
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        assert axis == 0 and numpy_helper.to_array(inits[w_dq.input[1]]).size == inits[w_dq.input[0]].dims[0]
        if len(conv.input) > 2:
            assert inits[conv.input[2]].data_type == TensorProto.FLOAT  # float bias


def test_int8_graph_has_qdq_around_convs_and_caches_ranges(tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrnet", "sr")
    calib = [crops(4, cfg, seed=s) for s in range(3)] + [crops(2, cfg, seed=9)]
    out = tmp_path / "m.int8.onnx"
    rep = quantize_int8(path, out, calib, method="entropy", cache_dir=tmp_path / "cache", data_key="random-4")
    assert rep.calibration_crops == 14 and not rep.cache_hit and Path(rep.cache_file).is_file()
    assert rep.excluded_nodes == ["/model/keypoint_head/heatmap_head/Conv"]
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    _qdq_checks(m, rep.excluded_nodes)
    assert rep.quantized_nodes == sum(n.op_type == "Conv" for n in m.graph.node) - 1
    assert read_metadata(m)["precision"] == "int8"
    x = crops(3, cfg, seed=7)
    ref, q = torch_out(model, x), OnnxRuntimeBackend(out).infer(x)
    cos = float((ref * q).sum() / np.linalg.norm(ref) / np.linalg.norm(q))
    assert cos > 0.95
    # same model + data + method: ranges come from the cache, no calibration data needed, same bytes
    rep2 = quantize_int8(path, tmp_path / "again.onnx", None, method="entropy", cache_dir=tmp_path / "cache",
                         data_key="random-4")
    assert rep2.cache_hit and (tmp_path / "again.onnx").read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="calibration data"):
        quantize_int8(path, tmp_path / "x.onnx", None, method="max", cache_dir=tmp_path / "cache",
                      data_key="random-4")


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_int8_methods_run(tmp_path: Path, method: str) -> None:
    path, model, cfg = cached_export("hrnet", "simple")
    rep = quantize_int8(path, tmp_path / "q.onnx", [crops(4, cfg, seed=s) for s in range(2)], method=method)
    assert rep.excluded_nodes == ["/model/keypoint_head/final_layer/Conv"] and rep.cache_file is None
    _qdq_checks(onnx.load(str(tmp_path / "q.onnx")), rep.excluded_nodes)
    assert OnnxRuntimeBackend(tmp_path / "q.onnx").infer(crops(2, cfg)).shape == (2, 17, 16, 16)


def test_calibration_reader_streams_crops(coco_sample: dict, tmp_path: Path) -> None:
    cfg = tiny_config("hrnet", "sr", size=(48, 64))
    r = CalibrationReader(coco_sample["ann"], coco_sample["images"], cfg, num=5, batch_size=2)
    shapes = [b.shape for b in r]
    assert shapes == [(2, 3, 64, 48), (2, 3, 64, 48), (1, 3, 64, 48)] and len(r) == 3 and r.num_crops == 5
    assert r.get_next()["input"].shape == (2, 3, 64, 48)
    key = r.data_key()
    assert key == CalibrationReader(coco_sample["ann"], coco_sample["images"], cfg, num=5, batch_size=2).data_key()
    assert key != CalibrationReader(coco_sample["ann"], coco_sample["images"], cfg, num=4, batch_size=2).data_key()
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no images"):
        check_image_folder(tmp_path)


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_cfg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cfg")
    cfg = tiny_config("hrnet", "sr")
    p = d / "tiny_hrnet_sr.json"
    p.write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(tiny_model(cfg), d / "tiny.pth")
    return p


def test_cli_export_writes_files_and_complete_report(tiny_cfg_file: Path, tmp_path: Path, coco_sample: dict,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "new" / "out"
    ckpt = tiny_cfg_file.parent / "tiny.pth"
    rc = cli_main(["export", str(tiny_cfg_file), "--checkpoint", str(ckpt), "--out-dir", str(out), "--precision",
                   "fp32", "fp16", "int8", "--batch", "1,2,4", "--calib-ann", str(coco_sample["ann"]),
                   "--calib-images", str(coco_sample["images"]), "--calib-num", "6", "--calib-batch", "3",
                   "--parity-crops", "4"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "tiny_hrnet_sr.export.json").read_text())
    assert [f["precision"] for f in rep["files"]] == ["fp32", "fp16", "int8"]
    for f in rep["files"]:
        assert (out / f["file"]).stat().st_size == f["bytes"] > 0
        assert f["inputs"] == [dict(name="input", shape=["batch", 3, 64, 64], dtype="float32")]
        assert f["outputs"] == [dict(name="heatmaps", shape=["batch", 17, 64, 64], dtype="float32")]
        for kind in ("random", "real"):
            assert set(f["parity"][kind]) >= {"max_abs", "rel_l2", "cosine"}
    fp32 = rep["files"][0]["parity"]
    assert fp32["random"]["rel_l2"] < 1e-5 and fp32["real"]["cosine"] > 0.99999
    assert rep["files"][2]["int8"]["calibration_crops"] == 6 and rep["parity_inputs"] == dict(random=4, real=4)
    assert rep["batch"] == dict(min=1, opt=2, max=4) and len(rep["checkpoint_sha256"]) == 64
    meta = read_metadata(out / "tiny_hrnet_sr.fp32.onnx")
    assert meta["checkpoint_sha256"] == rep["checkpoint_sha256"]
    # a re-export reuses the calibration cache
    rc = cli_main(["export", str(tiny_cfg_file), "--checkpoint", str(ckpt), "--out-dir", str(out), "--precision",
                   "int8", "--batch", "1,2,4", "--calib-ann", str(coco_sample["ann"]), "--calib-images",
                   str(coco_sample["images"]), "--calib-num", "6", "--calib-batch", "3", "--parity-crops", "0"])
    assert rc == 0
    assert json.loads((out / "tiny_hrnet_sr.export.json").read_text())["files"][0]["int8"]["cache_hit"] is True


def _fails(argv: list[str], capsys: pytest.CaptureFixture, match: str) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_cli_export_bad_inputs_leave_nothing(tiny_cfg_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import srpose.checkpoint

    monkeypatch.setattr(srpose.checkpoint, "find_matching_presets", lambda sd: [])  # skip the slow preset scan
    out = tmp_path / "out"
    _fails(["export", "res50_srpose_coco_256x19", "--out-dir", str(out)], capsys, "unknown model")
    other = tmp_path / "other.pth"
    save_checkpoint(tiny_model(tiny_config("hrnet", "simple")), other)
    _fails(["export", str(tiny_cfg_file), "--checkpoint", str(other), "--out-dir", str(out)], capsys,
           "does not fit")
    (tmp_path / "afile").write_text("x")
    _fails(["export", str(tiny_cfg_file), "--out-dir", str(tmp_path / "afile" / "sub")], capsys, "cannot create")
    empty = tmp_path / "noimages"
    empty.mkdir()
    _fails(["export", str(tiny_cfg_file), "--out-dir", str(out), "--precision", "int8", "--calib-ann",
            str(tiny_cfg_file), "--calib-images", str(empty)], capsys, "holds no images")
    _fails(["export", str(tiny_cfg_file), "--out-dir", str(out), "--precision", "int8"], capsys,
           "needs calibration data")
    assert not out.exists()
