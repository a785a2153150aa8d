"""TensorRTBackend on the strict fake ``trt``: named outputs, checks against the sidecar card, and the runtime
defects of issue #13 (CUDA graphs across shape changes, failed captures, copy timing, unchecked returns,
close(), memory="auto")."""
from __future__ import annotations

import gc
import sys
import warnings

import numpy as np
import pytest
from _fake_trt import COPY_MS, EXEC_MS, FakeCudaTensor, fake_cudart, fake_outputs, make_onnx, tiny_card  # noqa: F401

from srpose.card import sidecar_path
from srpose.engines import tensorrt as trt_layer
from srpose.engines.base import Backend
from srpose.engines.tensorrt import BuildOptions, cuda


def _engine(tmp_path, card=True, name="tiny"):
    onnx_path = make_onnx(tmp_path / f"{name}.onnx", card=card)
    trt_layer.build_engine(onnx_path, tmp_path / f"{name}.engine", BuildOptions())
    return tmp_path / f"{name}.engine"


def _ref(x):
    return fake_outputs(x, {"heatmaps": (x.shape[0], 5, 8, 6)})["heatmaps"]


def _x(n, seed=0):
    return np.random.default_rng(seed + n).standard_normal((n, 3, 16, 12)).astype(np.float32)


def test_backend_runs_and_reports(tmp_path, fake):
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path))
    assert isinstance(be, Backend) and be.card is not None and be.card.engine["tensorrt_version"] == "10.16.1.11"
    assert be.output_names == ["heatmaps"] and be.output_kind == "heatmaps"
    assert be.flip_in_graph is True and be.decoded is False and be.precision == "fp16"
    assert be.batch_range == (1, 2, 4) and be.input_shape == (3, 16, 12) and be.device_memory_bytes == 1234
    for n in (3, 1, 4):
        out = be.infer(_x(n))
        assert list(out) == ["heatmaps"] and out["heatmaps"].dtype == np.float32
        np.testing.assert_allclose(out["heatmaps"], _ref(_x(n)), rtol=1e-5, atol=1e-5)
    assert be.last_timing_ms == EXEC_MS and be.last_copy_ms == 2 * COPY_MS and be.timing_source == "device"
    with pytest.raises(ValueError, match="outside the engine's profile 1..4"):
        be.infer(np.ones((5, 3, 16, 12), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        be.infer(np.ones((1, 3, 16, 16), np.float32))
    be.close()
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        be.infer(_x(1))
    assert all(ops.closed for ops in state.ops_made)
    flip_off = trt_layer.TensorRTBackend(_engine(tmp_path, card=tiny_card(flip=False), name="noflip"))
    assert flip_off.flip_in_graph is False


def test_backend_refuses_other_tensorrt_or_gpu(tmp_path, fake):
    state, install = fake
    engine = _engine(tmp_path)
    install(version="10.13.3.9")
    with pytest.raises(RuntimeError, match=r"built with TensorRT 10.16.1.11 but this is TensorRT 10.13.3.9.*"
                                           r"srpose build"):
        trt_layer.TensorRTBackend(engine)
    install(gpus={0: {"name": "Fake GPU", "compute_capability": "9.0"}})
    with pytest.raises(RuntimeError, match=r"compute capability 8.9 .* but this is 9.0 .*srpose build"):
        trt_layer.TensorRTBackend(engine)
    assert all(ops.closed for ops in state.ops_made)  # the half-made backend released its helpers
    install(gpus={0: {"name": "Other GPU", "compute_capability": "8.9"}})
    with pytest.raises(RuntimeError, match=r"GPU Fake GPU .* but this is Other GPU .*srpose build"):
        trt_layer.TensorRTBackend(engine)
    install()
    plan = engine.read_bytes()
    engine.write_bytes(plan + b" ")
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        trt_layer.TensorRTBackend(engine)
    engine.write_bytes(plan)
    sidecar_path(engine).unlink()
    with pytest.warns(UserWarning, match="no sidecar"):
        be = trt_layer.TensorRTBackend(engine)
    assert be.card is None and be.flip_in_graph is False and be.precision is None
    assert list(be.infer(_x(2))) == ["heatmaps"]


# ============================================================================ issue #13, runtime side


def test_cuda_graph_recaptured_after_each_shape_change(tmp_path, fake):
    """#1: shapes 3 -> 1 -> 3 must not replay the graph captured for the first 3 (the fake writes NaN for a
    replay after a shape change); at most one graph lives per context."""
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path), cuda_graph=True, slots=1)
    live = []
    for n in (3, 3, 1, 1, 3, 3, 3, 1):
        out = be.infer(_x(n))["heatmaps"]
        np.testing.assert_allclose(out, _ref(_x(n)), rtol=1e-5, atol=1e-5)
        live.append(len(state.live_graphs))
    assert state.undefined_replays == 0
    assert state.captures == 3  # captured on the second call of each run of equal shapes: 3, 1, 3
    assert state.replays == 4  # 3 (capture), 1 (capture), 3 (capture), 3
    assert max(live) == 1 and live[-1] == 0  # the last shape change dropped the graph
    assert be.graph_failure is None
    be.close()
    assert not state.live_graphs


def test_failed_capture_falls_back_to_plain_enqueue(tmp_path, fake):
    """#2: a capture failure warns once and the backend keeps running without graphs."""
    state, _ = fake
    state.fail_capture = True  # e.g. an engine with a loop or conditional
    be = trt_layer.TensorRTBackend(_engine(tmp_path), cuda_graph=True)
    with pytest.warns(UserWarning, match="CUDA graph capture failed") as caught:
        for _ in range(5):
            np.testing.assert_allclose(be.infer(_x(2))["heatmaps"], _ref(_x(2)), rtol=1e-5, atol=1e-5)
    assert len(caught) == 1 and "operation not permitted when stream is capturing" in be.graph_failure
    assert state.replays == 0 and be.last_timing_ms == EXEC_MS


def test_cuda_python_capture_keeps_the_original_error(fake_cudart):
    """#2 (cuda-python): ending an invalidated capture must not mask the enqueue's own error."""
    ops = cuda.cuda_ops("cuda-python", 0)
    fake_cudart.invalidate = True

    def enqueue():
        raise RuntimeError("TensorRT execute_async_v3 failed (loop)")

    with pytest.raises(RuntimeError, match=r"execute_async_v3 failed \(loop\)"):
        ops.capture(enqueue)
    assert not fake_cudart.capturing and "cudaGraphInstantiate" not in fake_cudart.log
    fake_cudart.invalidate = False  # the capture itself survives the error: its partial graph is destroyed
    with pytest.raises(RuntimeError, match=r"execute_async_v3 failed \(loop\)"):
        ops.capture(enqueue)
    assert fake_cudart.log[-2:] == ["cudaStreamEndCapture", "cudaGraphDestroy"]
    graph = ops.capture(lambda: None)
    graph.launch()
    graph.close()
    assert fake_cudart.log.count("cudaGraphExecDestroy") == 1
    ops.close()
    assert fake_cudart.log.count("cudaGraphExecDestroy") == 1  # not destroyed twice


def test_copy_timing_excludes_the_callers_gpu_work(tmp_path, fake):
    """#3: the copy interval starts after the wait on the caller's stream, not before it."""
    state, install = fake
    engine = _engine(tmp_path)
    install(memory_kind="torch")
    be = trt_layer.TensorRTBackend(engine)
    x = _x(2)
    state.caller_done_at = state.clock + 5.0  # the caller's preprocessing still runs for 5 ms
    out = be.infer(FakeCudaTensor(x))
    np.testing.assert_allclose(out["heatmaps"], _ref(x), rtol=1e-5, atol=1e-5)
    assert be.last_copy_ms == 2 * COPY_MS and be.last_timing_ms == EXEC_MS


def test_execution_context_none_is_an_error(tmp_path, fake):
    """#4: create_execution_context() returns None (e.g. out of device memory) rather than raising."""
    state, _ = fake
    engine = _engine(tmp_path)
    state.fail_context = True
    with pytest.raises(RuntimeError, match="could not create an execution context"):
        trt_layer.TensorRTBackend(engine)
    assert state.ops_made and all(ops.closed for ops in state.ops_made)


def test_set_input_shape_false_is_an_error(tmp_path, fake):
    """#4: set_input_shape returns False (it does not raise) for a shape the context refuses."""
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path))
    state.reject_shapes.add((3, 3, 16, 12))
    with pytest.raises(RuntimeError, match=r"refused input shape \(3, 3, 16, 12\).*set_input_shape returned False"):
        be.infer(_x(3))
    np.testing.assert_allclose(be.infer(_x(2))["heatmaps"], _ref(_x(2)), rtol=1e-5, atol=1e-5)  # still usable


def test_close_releases_buffers_and_events(tmp_path, fake):
    """#5: close() drops the device/pinned buffers, events, graph and context, not just the helper."""
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path), cuda_graph=True)  # two slots: two of everything
    for n in (2, 2, 2, 2):
        be.infer(_x(n))
    assert len(state.buffers) == 4 and len(state.events) == 8 and len(state.live_graphs) == 2
    be.close()
    gc.collect()
    assert len(state.buffers) == 0 and len(state.events) == 0 and not state.live_graphs and not state.mem
    assert be.card is not None  # what the engine was stays readable


def test_auto_memory_probes_cuda_bindings_not_any_cuda_package(tmp_path, monkeypatch):
    """#10: a ``cuda`` namespace package from another NVIDIA wheel is not cuda-python."""
    (tmp_path / "cuda" / "pathfinder").mkdir(parents=True)  # e.g. cuda-pathfinder: namespace package "cuda"
    (tmp_path / "cuda" / "pathfinder" / "__init__.py").write_text("")
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text("")
    for name in [m for m in sys.modules if m == "cuda" or m.startswith(("cuda.", "pycuda"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cuda, "_torch_cuda_available", lambda: False)
    assert cuda.resolve_memory("auto") == "pycuda"
    (tmp_path / "cuda" / "bindings").mkdir()
    (tmp_path / "cuda" / "bindings" / "__init__.py").write_text("")
    (tmp_path / "cuda" / "bindings" / "runtime.py").write_text("")
    for name in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    import importlib

    importlib.invalidate_caches()
    assert cuda.resolve_memory("auto") == "cuda-python"
    with pytest.raises(ValueError, match="memory='gpu'"):
        cuda.resolve_memory("gpu")


def test_engine_without_graph_support_refuses_cuda_graph(tmp_path, fake):
    state, _ = fake
    engine = _engine(tmp_path)
    from _fake_trt import FakeOps

    FakeOps.supports_graphs = False
    try:
        with pytest.raises(ValueError, match="cuda_graph=True needs memory='torch'"):
            trt_layer.TensorRTBackend(engine, cuda_graph=True)
    finally:
        FakeOps.supports_graphs = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trt_layer.TensorRTBackend(engine).close()


# ============================================================================ issue #20: two batches in flight


def test_two_slots_overlap_and_keep_each_batchs_outputs(tmp_path, fake):
    """Two contexts on two streams: a batch is submitted while the previous one is still pending, each result is its
    own batch's (the second submission does not overwrite the first's outputs), and a third submission collects the
    first slot's batch before reusing its buffers."""
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path))
    assert be.slots == 2 and len(state.contexts) == 2
    xs = [_x(n, seed=7) for n in (2, 3, 1)]
    first, second = be.submit(xs[0]), be.submit(xs[1])
    third = be.submit(xs[2])  # reuses the first slot: its batch is collected first
    for pending, x in zip((first, second, third), xs):
        np.testing.assert_allclose(pending.result()["heatmaps"], _ref(x), rtol=1e-5, atol=1e-5)
    streams = [s for _, s in state.executions]
    contexts = [c for c, _ in state.executions]
    assert streams[0] != streams[1] and streams[0] == streams[2]
    assert contexts[0] != contexts[1] and contexts[0] == contexts[2]
    with pytest.raises(ValueError, match="slots=0 must be >= 1"):
        trt_layer.TensorRTBackend(_engine(tmp_path, name="t2"), slots=0)


def test_pinned_input_arrays_are_uploaded_without_staging(tmp_path, fake):
    """Inputs written into ``input_arrays`` are the slot's pinned memory: no host copy before the upload; other
    arrays are staged once."""
    state, _ = fake
    be = trt_layer.TensorRTBackend(_engine(tmp_path))
    for n in (2, 4, 1):
        arrays = be.input_arrays({"input": (n, 3, 16, 12)})
        arrays["input"][...] = _x(n)
        np.testing.assert_allclose(be.submit(arrays).result()["heatmaps"], _ref(_x(n)), rtol=1e-5, atol=1e-5)
    assert state.staged_copies == 0
    be.infer(_x(2))
    assert state.staged_copies == 1
    with pytest.raises(ValueError, match="outside the engine's profile 1..4"):
        be.input_arrays({"input": (5, 3, 16, 12)})


def _image_engine(tmp_path, fake_state):
    """A tiny image-to-keypoints engine (exported by srpose, built by the fake TensorRT)."""
    from _export_utils import tiny_image_graph

    onnx_path = tiny_image_graph(tmp_path)
    trt_layer.build_engine(onnx_path, tmp_path / "image.engine", BuildOptions())
    return tmp_path / "image.engine"


def test_image_engine_takes_images_boxes_and_indices(tmp_path, fake):
    """An image-to-keypoints engine: three inputs with their own dtypes and profiles, outputs sized by the persons;
    the profile of each input is built and checked."""
    state, _ = fake
    engine = _image_engine(tmp_path, state)
    be = trt_layer.TensorRTBackend(engine)
    assert be.input_names == ["images", "boxes", "box_image"] and be.output_kind == "people"
    assert set(state.profiles[-1]) == {"images", "boxes", "box_image"}
    shapes = {"images": (2, 40, 56, 3), "boxes": (3, 5), "box_image": (3,)}
    arrays = be.input_arrays(shapes)
    assert arrays["images"].dtype == np.uint8 and arrays["box_image"].dtype == np.int32
    arrays["images"][...] = 7
    arrays["boxes"][...] = np.arange(15, dtype=np.float32).reshape(3, 5)
    arrays["box_image"][...] = [0, 1, 1]
    out = be.submit(arrays).result()
    k = be.card.num_joints
    assert out["keypoints"].shape == (3, k, 3) and out["scores"].shape == (3,)
    seen = state.seen_inputs[-1]
    np.testing.assert_array_equal(seen["boxes"], arrays["boxes"])
    assert seen["images"].dtype == np.uint8 and state.staged_copies == 0
    with pytest.raises(ValueError, match=r"input 'images' of shape \(2, 40, 4000, 3\) is outside"):
        be.infer({**shapes_arrays(shapes), "images": np.zeros((2, 40, 4000, 3), np.uint8)})


def shapes_arrays(shapes):
    from srpose.engines.base import empty_inputs

    return {k: np.zeros_like(v) for k, v in empty_inputs(shapes).items()}
