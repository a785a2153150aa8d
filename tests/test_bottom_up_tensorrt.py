"""TensorRT layer for bottom-up exports on a fake ``trt``: dynamic H/W optimisation profile from the export
metadata, per-call input shapes, and every output of multi-output (decoded) engines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from srpose.engines import _trt_compat as compat
from srpose.engines import tensorrt as trt_layer

BU_META = {"batch_min": 1, "batch_opt": 1, "batch_max": 2, "height_min": 64, "height_opt": 64, "height_max": 128,
           "width_min": 64, "width_opt": 128, "width_max": 192, "shape_min": [1, 3, 64, 64],
           "shape_opt": [1, 3, 64, 128], "shape_max": [2, 3, 128, 192], "flip": True, "precision": "fp32",
           "output_kind": "bottomup_candidates", "bottom_up": True}


def make_dynamic_onnx(path: Path, metadata: dict) -> Path:
    """Identity-like graph with dynamic N, H, W and two outputs; metadata JSON-encoded as ``srpose export`` does."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input"], ["heatmaps"], name="relu"),
             helper.make_node("ReduceMean", ["input"], ["candidates"], name="mean", axes=[2, 3], keepdims=1)]
    graph = helper.make_graph(
        nodes, "bu", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("candidates", TensorProto.FLOAT, ["N", 3, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, val in metadata.items():
        p = model.metadata_props.add()
        p.key, p.value = key, json.dumps(val)
    onnx.save(model, str(path))
    return path


def _install_multi_output_engine(state) -> None:
    """Replace the fake runtime's engine by one with dynamic H/W and outputs ``heatmaps`` (= input) and
    ``candidates`` (N x 3 x 1 x 1 channel means)."""
    trt = compat.trt

    class Context:
        def __init__(self) -> None:
            self.addr, self.shape, self.shapes_set = {}, None, []

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            self.shapes_set.append(self.shape)
            return True

        def get_tensor_shape(self, name):
            n, c, h, w = self.shape
            return {"input": self.shape, "heatmaps": self.shape, "candidates": (n, c, 1, 1)}[name]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            size = int(np.prod(self.shape))
            x = state.mem[self.addr["input"]][:size].reshape(self.shape)
            state.mem[self.addr["heatmaps"]][:size] = x.reshape(-1)
            state.mem[self.addr["candidates"]][: self.shape[0] * 3] = x.mean(axis=(2, 3)).reshape(-1)
            return True

    class Engine:
        num_io_tensors = 3
        device_memory_size_v2 = 99
        names = ["input", "heatmaps", "candidates"]

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return {"input": (-1, 3, -1, -1), "heatmaps": (-1, 3, -1, -1), "candidates": (-1, 3, 1, 1)}[name]

        def get_tensor_profile_shape(self, name, index):
            return [tuple(BU_META["shape_min"]), tuple(BU_META["shape_opt"]), tuple(BU_META["shape_max"])]

        def create_execution_context(self):
            self.context = Context()
            return self.context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine() if bytes(plan).startswith(b"PLAN:") else None

    trt.Runtime = Runtime


def test_build_profile_from_dynamic_hw_metadata(tmp_path, fake):
    state, _ = fake
    onnx_path = make_dynamic_onnx(tmp_path / "bu.onnx", BU_META)
    side = trt_layer.build_engine(onnx_path, tmp_path / "bu.engine")
    assert state.profiles == [{"input": ((1, 3, 64, 64), (1, 3, 64, 128), (2, 3, 128, 192))}]
    assert side["profile"] == {"input": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 128],
                               "max": [2, 3, 128, 192]}
    state.profiles.clear()
    trt_layer.build_engine(onnx_path, tmp_path / "bu2.engine", batch=(1, 2, 4))
    assert state.profiles == [{"input": ((1, 3, 64, 64), (2, 3, 64, 128), (4, 3, 128, 192))}]


def test_build_dynamic_hw_without_profile_metadata_is_refused(tmp_path, fake):
    meta = {k: v for k, v in BU_META.items() if not k.startswith(("height", "width"))}
    onnx_path = make_dynamic_onnx(tmp_path / "bu.onnx", meta)
    with pytest.raises(ValueError, match="dynamic height/width.*--shape-profile"):
        trt_layer.build_engine(onnx_path, tmp_path / "bu.engine")
    bad = make_dynamic_onnx(tmp_path / "bad.onnx", {**BU_META, "height_min": 256})
    with pytest.raises(ValueError, match="min <= opt <= max"):
        trt_layer.build_engine(bad, tmp_path / "bad.engine")
    assert not (tmp_path / "bu.engine").exists() and not (tmp_path / "bad.engine").exists()


def test_backend_dynamic_hw_and_all_outputs(tmp_path, fake):
    state, _ = fake
    onnx_path = make_dynamic_onnx(tmp_path / "bu.onnx", BU_META)
    trt_layer.build_engine(onnx_path, tmp_path / "bu.engine")
    _install_multi_output_engine(state)
    be = trt_layer.TensorRTBackend(tmp_path / "bu.engine", cuda_graph=True)
    assert be.output_kind == "bottomup_candidates" and be.flip_in_graph is True and be.dynamic_hw
    assert be.meta["bottom_up"] is True and be.meta["shape_max"] == [2, 3, 128, 192]
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 64, 128), (2, 3, 128, 64), (1, 3, 64, 128)):
        x = rng.standard_normal(shape).astype(np.float32)
        out = be.infer(x)
        assert isinstance(out, dict) and sorted(out) == ["candidates", "heatmaps"]
        np.testing.assert_allclose(out["heatmaps"], x, rtol=1e-6)
        np.testing.assert_allclose(out["candidates"], x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    assert state.ops_made[-1].captured == 2  # one CUDA graph per distinct input shape
    with pytest.raises(ValueError, match="H in 64..128 and W in 64..192"):
        be.infer(np.ones((1, 3, 64, 256), np.float32))
    with pytest.raises(ValueError, match="outside the engine's profile 1..2"):
        be.infer(np.ones((3, 3, 64, 64), np.float32))
    be.close()
