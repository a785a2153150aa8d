"""FP16 and INT8 graphs from the FP32 export: strongly typed FP16 with float32 I/O for both tasks (bottom-up FP16 is
new with the unified export), explicit Q/DQ INT8 for top-down (bottom-up INT8 is refused), calibration crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_utils import cached_export, crops, tiny_bottom_up_config, tiny_config, tiny_model, torch_out
from onnx import TensorProto, numpy_helper

from srpose.card import read_card
from srpose.engines.onnxruntime import OnnxRuntimeBackend
from srpose.export.calibration import CalibrationReader, check_image_folder
from srpose.export.fp16 import convert_fp16
from srpose.export.int8 import quantize_int8
from srpose.export.model_export import ExportOptions, export_model
from srpose.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")  # torch and ONNX Runtime share 2 cores


def _dims(path: Path) -> list:
    return [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


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
    assert len([n for n in convs if "/converge" in n.name]) == 1  # the head's output conv: float16 too (#22)
    assert all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    norms = [n for n in m.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.input[0]] == TensorProto.FLOAT for n in norms)
    assert report.kept_fp32_ops.get("LayerNormalization") == len(norms)
    card = read_card(tmp_path / "m.fp16.onnx")
    assert any(n.op_type == "Cast" for n in m.graph.node) and card.precision == "fp16"
    assert card.precision_details["fp16"]["kept_fp32_ops"] == report.kept_fp32_ops
    x = crops(2, cfg)
    ref = torch_out(model, x)
    out = OnnxRuntimeBackend(tmp_path / "m.fp16.onnx").infer(x)["heatmaps"]
    assert out.dtype == np.float32
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 5e-3


def test_fp16_keeps_the_decoder_in_float32_and_runs_the_head_output_in_float16(tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrnet", "sr", decode=True)
    report = convert_fp16(path, tmp_path / "d.fp16.onnx")
    assert "/model/keypoint_head/heatmap_head/Conv" not in report.kept_fp32_nodes
    assert any(n.startswith("/decode/") for n in report.kept_fp32_nodes) and report.followed_fp32 >= 1
    m = onnx.load(str(tmp_path / "d.fp16.onnx"))
    head = next(n for n in m.graph.node if n.name == "/model/keypoint_head/heatmap_head/Conv")
    assert {t.name: t.data_type for t in m.graph.initializer}[head.input[1]] == TensorProto.FLOAT16
    kept = convert_fp16(path, tmp_path / "k.fp16.onnx", keep_fp32_nodes=["*heatmap_head*", "/decode/*"])
    assert "/model/keypoint_head/heatmap_head/Conv" in kept.kept_fp32_nodes  # still possible, by pattern
    x = crops(2, cfg)
    out = OnnxRuntimeBackend(tmp_path / "d.fp16.onnx").infer(x)["keypoints"]
    ref = OnnxRuntimeBackend(path).infer(x)["keypoints"]
    assert np.mean(np.abs(out[..., :2] - ref[..., :2]) < 1.01) > 0.9  # same peaks, up to a pixel


@pytest.mark.parametrize("decode", [False, True])
def test_bottom_up_fp16_graph_matches_pytorch(decode: bool, tmp_path: Path) -> None:
    """New with the unified export: bottom-up graphs convert to FP16 too (dynamic H/W kept, float32 I/O)."""
    path, model, cfg = cached_export("bottom-up", "sr", **(dict(decode=True, flip=True) if decode else {}))
    out = tmp_path / "bu.fp16.onnx"
    report = convert_fp16(path, out)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in [*m.graph.input, *m.graph.output])
    assert any(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer)
    card = read_card(out)
    assert card.precision == "fp16" and card.task == "bottom-up" and "fp16" in card.precision_details
    assert card.hw_profile == read_card(path).hw_profile and _dims(out) == ["batch", 3, "height", "width"]
    assert bool(report.kept_fp32_nodes) == decode  # the decoder stays float32; the head's output conv does not
    t = task_for(cfg)
    backend = OnnxRuntimeBackend(out)  # float16 rounding emulated on the CPU
    assert backend.fp16_emulated
    reference = t.reference(model, flip=card.flip, decode=card.decode)
    for h, w in ((64, 128), (128, 64)):
        x = np.random.default_rng(w).standard_normal((1, 3, h, w)).astype(np.float32)
        ref, got = reference(x), backend.infer(x)
        for name in ("outputs",) if not decode else ("heatmaps", "tags"):
            r, g = ref[name], got[name]
            assert g.shape == r.shape and g.dtype == np.float32
            assert np.linalg.norm(g - r) / np.linalg.norm(r) < 5e-3, name
        if decode:  # each joint's best candidate (the map's peak) within float16 rounding of the maps; the tail of
            # the top-k is not compared: float16 rounding turns a random model's near-ties into NMS plateaus
            r, g = t.compare_view("candidates", ref["candidates"]), t.compare_view("candidates", got["candidates"])
            assert np.abs(g[..., -1] - r[..., -1]).max() < 1e-3


# ------------------------------------------------------------------------------------------- INT8 (top-down)
def test_library_export_refuses_bottom_up_int8_before_any_work(tmp_path: Path) -> None:
    cfg = tiny_bottom_up_config("sr")
    with pytest.raises(ValueError, match=r"bottom-up models export fp32, fp16 \(INT8 calibration"):
        export_model(cfg, ExportOptions(tmp_path / "out", precisions=("fp32", "int8")), model=tiny_model(cfg))
    assert not list(tmp_path.iterdir())


def _qdq_checks(model: onnx.ModelProto, excluded: list[str]) -> None:
    """Q/DQ as TensorRT wants them: symmetric int8, per-tensor activations, per-output-channel int8 weights, float16
    scales and biases (opset 19); excluded convs read unquantised float16 tensors with float16 weights."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 19
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), n.name
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        x_dq, w_dq = producers.get(conv.input[0]), producers.get(conv.input[1])
        if conv.name in excluded:
            assert getattr(x_dq, "op_type", None) != "DequantizeLinear", conv.name
            assert conv.input[1] in inits and inits[conv.input[1]].data_type == TensorProto.FLOAT16
            continue
        assert x_dq is not None and x_dq.op_type == "DequantizeLinear", conv.name
        assert producers[x_dq.input[0]].op_type == "QuantizeLinear"
        assert numpy_helper.to_array(inits[x_dq.input[1]]).size == 1  # per-tensor activations
        assert w_dq is not None and w_dq.op_type == "DequantizeLinear", conv.name
        assert inits[w_dq.input[0]].data_type == TensorProto.INT8
        assert inits[w_dq.input[1]].data_type == TensorProto.FLOAT16
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        assert axis == 0 and numpy_helper.to_array(inits[w_dq.input[1]]).size == inits[w_dq.input[0]].dims[0]
        if len(conv.input) > 2:
            assert inits[conv.input[2]].data_type == TensorProto.FLOAT16  # float bias, in float16


def test_int8_graph_has_qdq_around_convs_and_caches_ranges(tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrnet", "sr")
    calib = [crops(4, cfg, seed=s) for s in range(3)] + [crops(2, cfg, seed=9)]
    out = tmp_path / "m.int8.onnx"
    rep = quantize_int8(path, out, calib, method="entropy", cache_dir=tmp_path / "cache", data_key="random-4")
    assert rep.calibration_crops == 14 and not rep.cache_hit and Path(rep.cache_file).is_file()
    assert rep.excluded_nodes == []  # the head's output conv is INT8 too (#22)
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    _qdq_checks(m, rep.excluded_nodes)
    assert rep.quantized_nodes == sum(n.op_type == "Conv" for n in m.graph.node) and rep.residual_adds > 0
    card = read_card(out)
    assert card.precision == "int8" and card.precision_details["int8"]["calibration_crops"] == 14
    x = crops(3, cfg, seed=7)
    # the evaluator's backend runs INT8 graphs as TensorRT does: float16 outside the INT8 layers, rounded (#22)
    backend = OnnxRuntimeBackend(out, threads=1)
    assert backend.fp16_emulated and backend.precision == "int8"
    ref, q = torch_out(model, x), backend.infer(x)["heatmaps"]
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
    assert rep.excluded_nodes == [] and rep.cache_file is None
    _qdq_checks(onnx.load(str(tmp_path / "q.onnx")), rep.excluded_nodes)
    assert OnnxRuntimeBackend(tmp_path / "q.onnx", threads=1).infer(crops(2, cfg))["heatmaps"].shape == (2, 17, 16, 16)


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


def test_int8_engine_modelopt_says_how_to_get_modelopt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ModelOpt (it lives in an environment of its own), ``--int8-engine modelopt`` names the fix; an
    unknown engine is refused. tests/test_modelopt_compare.py runs the engine where ModelOpt is installed."""
    from srpose.export._modelopt_int8 import modelopt_python

    path, model, cfg = cached_export("hrnet", "simple")
    monkeypatch.delenv("SRPOSE_MODELOPT_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    if modelopt_python() is not None:  # pragma: no cover - ModelOpt importable in this environment
        pytest.skip("ModelOpt is importable here")
    with pytest.raises(RuntimeError, match="make modelopt-deps"):
        quantize_int8(path, tmp_path / "q.onnx", [crops(2, cfg)], method="max", engine="modelopt")
    with pytest.raises(ValueError, match="INT8 engine 'tensorrt' is unknown"):
        quantize_int8(path, tmp_path / "q.onnx", [crops(2, cfg)], engine="tensorrt")
    assert not (tmp_path / "q.onnx").exists()
