"""Helpers of the Triton tests: the server's Python, graphs with a non-trivial AP, request sets."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def server_python() -> Path:
    """The server's Python of the tests (``$SRPOSE_TRITON_PYTHON`` or ``.venv-triton``, made by ``make serve-deps``),
    or skip saying how to get one."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: run `make serve-deps`")
    env = os.environ.get("SRPOSE_TRITON_PYTHON")
    py = Path(env) if env else REPO / ".venv-triton" / "bin" / "python"
    if not py.exists():
        pytest.skip(f"no Triton server environment at {py}: run `make serve-deps` (or set SRPOSE_TRITON_PYTHON)")
    if shutil.which("tritonserver") is None and not list((py.parent.parent / "lib").glob(
            "python3*/site-packages/pytriton/tritonserver/bin/tritonserver")):
        pytest.skip(f"{py} has no nvidia-pytriton wheel and no tritonserver is on PATH: run `make serve-deps`")
    return py


def mean_pose_graph(src: Path, dst: Path, task: Any, dataset: Any, weight: float = 0.05) -> Path:
    """``src`` (a top-down export) with its heatmaps turned into ``weight`` x heatmaps + the rendered mean pose of
    ``dataset``'s crops: the network still computes, and the keypoints land near people (AP > 0 without training).
    The card (metadata) is kept."""
    import onnx
    from onnx import helper, numpy_helper

    joints = np.stack([dataset[i]["joints"] for i in range(len(dataset))])  # crop pixels (TopDownPipeline)
    vis = joints[..., 2:3] > 0
    mean = (joints[..., :2] * vis).sum(0) / np.maximum(vis.sum(0), 1)
    mean_joints = np.concatenate([mean, np.ones((len(mean), 1))], 1).astype(np.float32)
    target = task.codec.encode(mean_joints)[0][None].astype(np.float32)
    model = onnx.load(str(src))
    g = model.graph
    out = g.output[0].name
    for node in g.node:
        node.output[:] = ["raw_" + o if o == out else o for o in node.output]
    g.initializer.extend([numpy_helper.from_array(np.array(weight, np.float32), "mp_weight"),
                          numpy_helper.from_array(target, "mp_mean")])
    g.node.extend([helper.make_node("Mul", ["raw_" + out, "mp_weight"], ["mp_scaled"]),
                   helper.make_node("Add", ["mp_scaled", "mp_mean"], [out])])
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def request_set(task: Any, dataset: Any, max_persons: int, n: int = 25) -> list[dict[str, Any]]:
    """``n`` top-down requests (image bytes + boxes) cycling over the dataset's images with 1..max_persons boxes."""
    from srpose.tasks.served import served_requests, wire_request

    wire = [wire_request(r) for r in served_requests(task, dataset)]
    out = []
    for i in range(n):
        w = wire[i % len(wire)]
        k = 1 + (i // len(wire)) % max_persons
        out.append({"image": w["image"], "boxes": w["boxes"][:k]})
    return out


def tiny_graph(dst: Path, dataset: str, seed: int = 0) -> Path:
    """A small top-down graph of ``dataset``'s joints with its card (64x64 crops -> 16x16 heatmaps: one strided
    convolution, random weights, then a softmax-free positive map). MPII records have centre/scale, no box;
    CrowdPose has 14 joints and its own AP (easy/medium/hard)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from srpose.card import card_to_onnx
    from srpose.config import PoseConfig, make_data_cfg
    from srpose.tasks import task_for

    cfg = PoseConfig(name=f"tiny_{dataset}", model=dict(type="TopDown", test_cfg=dict(
        flip_test=True, shift_heatmap=True, post_process="default", modulate_kernel=11)),
        data=make_data_cfg(dataset, image_size=(64, 64), heatmap_size=(16, 16), sigma=2, decoder="simple"))
    task = task_for(cfg)
    k = cfg.data["num_joints"]
    w = np.random.default_rng(seed).standard_normal((k, 3, 4, 4)).astype(np.float32) * 0.3
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 64, 64])
    y = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", k, 16, 16])
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], strides=[4, 4]),
             helper.make_node("Sigmoid", ["c"], ["heatmaps"])]
    graph = helper.make_graph(nodes, f"tiny_{dataset}", [x], [y], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    card_to_onnx(model, task.make_card(decode=False, flip=False, batch=(1, 8, 32), opset=17))
    onnx.save(model, str(dst))
    return dst


def fake_engine(onnx_path: Path, dst: Path, tensorrt_version: str = "10.5.0.18") -> Path:
    """A stand-in TensorRT engine file at ``dst`` with a real sidecar: the card of the exported ``onnx_path``, the
    I/O an engine of it has (the graph's inputs and outputs, dynamic dims -1), and the TensorRT version that "built"
    it."""
    import onnx

    from srpose.card import read_card, write_sidecar

    card = read_card(onnx_path)
    dst.write_bytes(b"plan")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    np_type = {1: "float32", 10: "float16", 2: "uint8", 6: "int32", 7: "int64"}

    def tensor(v):
        tt = v.type.tensor_type
        return {"name": v.name, "dtype": np_type[tt.elem_type],
                "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]}

    io = {"inputs": [tensor(v) for v in graph.input if v.name not in inits],
          "outputs": [tensor(v) for v in graph.output]}
    write_sidecar(dst, card.replace(engine={"tensorrt_version": tensorrt_version, **io}))
    return dst
