"""TensorRT builder on the strict fake ``trt``: plan + card sidecar, profile, checks, legacy path, and the build-side
defects of issue #13 (device selection, one logger, merged timing cache, plugins)."""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from _fake_trt import GPUS, bottom_up_card, make_onnx, tiny_card

from srpose.card import read_card, sidecar_path
from srpose.engines import tensorrt as trt_layer
from srpose.engines.tensorrt import BuildOptions, _compat, build as build_mod


def _build(onnx_path, out, **options):
    return trt_layer.build_engine(onnx_path, out, BuildOptions(**options))


def test_build_writes_plain_plan_and_card_sidecar(tmp_path, fake):
    state, _ = fake
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=True)
    card = _build(onnx_path, tmp_path / "tiny.engine", workspace_gib=0.5, opt_level=4)
    plan = (tmp_path / "tiny.engine").read_bytes()
    assert plan.startswith(b"PLAN:")  # a plain plan: no header of ours
    assert state.flags == 1 << 5  # 10.x: STRONGLY_TYPED flag, never EXPLICIT_BATCH
    assert state.flags_set == []  # no precision flags on a strongly typed build
    assert "workspace 536870912" in state.calls
    assert state.profiles == [{"input": ((1, 3, 16, 12), (2, 3, 16, 12), (4, 3, 16, 12))}]  # the card's batch
    assert read_card(tmp_path / "tiny.engine") == card  # the sidecar is the card
    assert card.replace(engine=None) == tiny_card()  # ... of the ONNX file, plus the engine section
    eng = card.engine
    assert eng["tensorrt_version"] == "10.16.1.11" and eng["gpu"] == GPUS[0]
    assert eng["legacy"] is None and eng["strongly_typed"] is True and card.precision == "fp16"
    assert eng["profile"] == {"input": "input", "min": [1, 3, 16, 12], "opt": [2, 3, 16, 12], "max": [4, 3, 16, 12]}
    assert eng["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 3, 16, 12]}]
    assert eng["outputs"] == [{"name": "heatmaps", "dtype": "float32", "shape": [-1, 5, 8, 6]}]
    assert eng["engine"]["sha256"] == hashlib.sha256(plan).hexdigest() and eng["engine"]["bytes"] == len(plan)
    assert eng["engine"]["device_memory_bytes"] == 1234 and eng["engine"]["path"] == "tiny.engine"
    assert eng["onnx"] == {"path": str(onnx_path), "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
                           "card": "onnx"}
    assert eng["build"]["opt_level"] == 4 and eng["build"]["seconds"] >= 0 and eng["build"]["device"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.engine", "tiny.engine.json", "tiny.onnx"]
    assert state.ops_made[-1].closed and state.current_device == 0  # the build's device helper was released


def test_card_less_onnx_gets_a_derived_card(tmp_path, fake):
    state, install = fake
    install(version="11.4.0.106", weak=False)
    flat = {"batch_min": 1, "batch_opt": 2, "batch_max": 4}
    card = _build(make_onnx(tmp_path / "m.onnx", metadata=flat), tmp_path / "m.engine")
    assert state.flags == 0  # 11.x: always strongly typed, no flag
    assert card.engine["onnx"]["card"] == "derived" and card.batch == (1, 2, 4)
    assert (card.task, card.input_size, card.heatmap_size, card.num_joints) == ("top-down", (12, 16), (6, 8), 5)
    assert card.output_names == ["heatmaps"] and not card.flip and not card.decode and card.precision == "fp32"
    assert read_card(tmp_path / "m.engine") == card
    _build(make_onnx(tmp_path / "a.onnx"), tmp_path / "a.engine")  # dynamic batch, no metadata: 1
    assert state.profiles[-1]["input"][0] == (1, 3, 16, 12) == state.profiles[-1]["input"][2]
    _build(make_onnx(tmp_path / "s.onnx", batch=3), tmp_path / "s.engine")  # static batch 3
    assert state.profiles[-1]["input"][1][0] == 3


def test_build_batch_checks_and_card_vs_graph(tmp_path, fake):
    static = make_onnx(tmp_path / "s.onnx", batch=3)
    with pytest.raises(ValueError, match="static batch of 3"):
        _build(static, tmp_path / "s2.engine", batch=(1, 2, 8))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        _build(make_onnx(tmp_path / "a.onnx", card=True), tmp_path / "b.engine", batch=(4, 2, 8))
    with pytest.raises(FileNotFoundError, match="srpose export"):
        _build(tmp_path / "missing.onnx", tmp_path / "b.engine")
    edited = make_onnx(tmp_path / "e.onnx", card=tiny_card(output_names=["keypoints"]))
    with pytest.raises(ValueError, match="differ from its card's"):
        _build(edited, tmp_path / "b.engine")
    wrong_size = make_onnx(tmp_path / "w.onnx", card=tiny_card(input_size=(16, 16)))
    with pytest.raises(ValueError, match="input width is 12 but its card's profile gives 16"):
        _build(wrong_size, tmp_path / "b.engine")
    with pytest.raises(ValueError, match="opt_level=7"):
        _build(static, tmp_path / "b.engine", opt_level=7)
    assert not list(tmp_path.glob("*.engine*"))


def test_fake_profile_refuses_inconsistent_shapes(fake):
    """The strict fake raises like the bindings (``Shape provided for min is inconsistent``)."""
    trt = _compat.require_trt()
    builder = trt.Builder(_compat.get_logger())
    bad = bottom_up_card(hw_profile=((128, 64), (64, 64), (64, 64)))  # min H above opt H
    with pytest.raises(RuntimeError, match="inconsistent with other shapes"):
        build_mod.configure_builder(trt, builder, bad, BuildOptions())


def test_failing_build_and_parse_leave_no_file(tmp_path, fake):
    state, _ = fake
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=True)
    before = sorted(tmp_path.iterdir())
    state.fail_build = True
    with pytest.raises(RuntimeError, match="failed to build"):
        _build(onnx_path, tmp_path / "tiny.engine", timing_cache=str(tmp_path / "t.cache"))
    state.fail_build, state.fail_parse = False, True
    with pytest.raises(RuntimeError, match=r"node 1 'relu' \(Relu\): unsupported thing"):
        _build(onnx_path, tmp_path / "tiny.engine")
    assert sorted(tmp_path.iterdir()) == before  # no engine, sidecar, cache or temporary file
    assert all(ops.closed for ops in state.ops_made)


def test_sidecar_write_failure_removes_the_new_plan(tmp_path, fake, monkeypatch):
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=True)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(build_mod, "write_sidecar", boom)
    with pytest.raises(OSError, match="disk full"):
        _build(onnx_path, tmp_path / "tiny.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_onnx_check_runs_before_building(tmp_path, fake):
    state, _ = fake
    bad = make_onnx(tmp_path / "bad.onnx", card=True, opset=21)
    with pytest.raises(ValueError, match=r"(?s)would not parse with TensorRT 10.*opset 21 is outside.*9-20"):
        _build(bad, tmp_path / "bad.engine")
    assert state.builder_devices == []  # refused before any TensorRT object was made
    _build(bad, tmp_path / "bad.engine", check_onnx=False)  # the escape hatch (e.g. for plugin nodes)
    assert (tmp_path / "bad.engine").exists()


def test_legacy_refused_on_11_and_flags_on_10(tmp_path, fake):
    state, install = fake
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=tiny_card(precision="fp32"))
    card = _build(onnx_path, tmp_path / "l.engine", legacy="fp16")
    assert state.flags == 0 and state.flags_set == ["FP16"]  # weakly typed network + FP16 flag (10.x)
    assert card.precision == "fp16" and card.engine["legacy"] == "fp16" and not card.engine["strongly_typed"]
    with pytest.raises(ValueError, match="legacy='fp8'"):
        _build(onnx_path, tmp_path / "x.engine", legacy="fp8")
    install(version="11.4.0.106", weak=False)
    for legacy in ("fp16", "int8"):
        with pytest.raises(RuntimeError, match=rf"TensorRT 11.4.0.106 removed .*srpose export --precision {legacy}"):
            trt_layer.build_engine(onnx_path, tmp_path / "x.engine", BuildOptions(legacy=legacy), calib_batches=[])
    assert not (tmp_path / "x.engine").exists()


def test_legacy_int8_calibrator_rebatches_on_the_build_device(tmp_path, fake):
    state, _ = fake
    trt = _compat.trt
    calib_made = []

    class IInt8EntropyCalibrator2:
        def __init__(self):
            calib_made.append(self)

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    batches = [np.full((3, 3, 16, 12), i + 1, np.float32) for i in range(3)]  # 9 images -> 4 batches of 2
    cache = tmp_path / "c.calib"
    card = trt_layer.build_engine(make_onnx(tmp_path / "t.onnx", card=True), tmp_path / "t.engine",
                                  BuildOptions(legacy="int8", calib_cache=str(cache), device=1), calib_batches=batches)
    assert state.flags_set == ["FP16", "INT8"] and card.precision == "int8"
    assert ("calibration_profile", {"input": ((2, 3, 16, 12),) * 3}) in state.calls  # at the opt batch
    assert len(state.ops_made) == 1 and state.ops_made[0].device == 1  # one helper: builder and calibration
    cal = calib_made[0]
    assert cal.get_batch_size() == 2 and cal.read_calibration_cache() is None
    state.ops_made[0].closed = False  # feed it as TensorRT would during the build
    got = []
    while (ptrs := cal.get_batch(["input"])) is not None:
        got.append(state.mem[ptrs[0]][: 2 * 3 * 16 * 12].reshape(2, 3, 16, 12)[:, 0, 0, 0].tolist())
    assert got == [[1, 1], [1, 2], [2, 2], [3, 3]]
    cal.write_calibration_cache(memoryview(b"scales"))
    assert cache.read_bytes() == b"scales" and cal.read_calibration_cache() == b"scales"


# ============================================================================ issue #13, build side


def test_build_selects_the_device_before_the_builder(tmp_path, fake):
    """#6: ``device=N`` makes N current before the Builder exists (and for the whole build)."""
    state, _ = fake
    card = _build(make_onnx(tmp_path / "t.onnx", card=True), tmp_path / "t.engine", device=1)
    assert state.builder_devices == [1]
    assert card.engine["gpu"] == GPUS[1] and card.engine["build"]["device"] == 1
    assert state.current_device == 0  # restored when the build's helper closed
    with pytest.raises(RuntimeError, match="cannot select CUDA device 7"):
        _build(make_onnx(tmp_path / "t.onnx", card=True), tmp_path / "u.engine", device=7)


def test_one_tensorrt_logger_per_process(tmp_path, fake):
    """#7: every Builder, parser and Runtime gets the same logger; verbose only changes its severity."""
    state, _ = fake
    onnx_path = make_onnx(tmp_path / "t.onnx", card=True)
    _build(onnx_path, tmp_path / "a.engine")
    _build(onnx_path, tmp_path / "b.engine", verbose=True)
    trt_layer.TensorRTBackend(tmp_path / "b.engine").close()
    assert state.logger_warnings == [] and len(state.loggers) == 1
    assert state.loggers[0].min_severity == _compat.trt.Logger.WARNING  # the backend asked for warnings only
    _build(onnx_path, tmp_path / "c.engine", verbose=True)
    assert state.loggers[0].min_severity == _compat.trt.Logger.VERBOSE and len(state.loggers) == 1


def _entries(path):
    return set(path.read_bytes().decode().split("|")[2].split(","))


def test_timing_cache_is_merged_not_overwritten(tmp_path, fake):
    """#8: a build re-reads the cache file under a lock and combines it, so parallel builds keep their timings."""
    state, _ = fake
    cache = tmp_path / "shared.timing"
    a, b = make_onnx(tmp_path / "a.onnx", card=True), make_onnx(tmp_path / "b.onnx", card=True)
    _build(a, tmp_path / "a.engine", timing_cache=str(cache))
    assert _entries(cache) == {"a/conv", "a/relu"}

    def parallel_build_finishes():  # another process writes the file while this build runs
        cache.write_bytes(f"FAKETC|{state.device_tag()}|a/conv,a/relu,c/conv".encode())

    state.during_build.append(parallel_build_finishes)
    _build(b, tmp_path / "b.engine", timing_cache=str(cache))
    assert _entries(cache) == {"a/conv", "a/relu", "b/conv", "b/relu", "c/conv"}
    state.during_build.clear()
    assert (tmp_path / "shared.timing.lock").exists()


def test_timing_cache_of_another_gpu_or_corrupt(tmp_path, fake):
    state, _ = fake
    cache = tmp_path / "t.timing"
    cache.write_bytes(b"FAKETC|Other GPU:7.5|x/old")
    with pytest.warns(UserWarning, match="does not match this GPU"):
        _build(make_onnx(tmp_path / "a.onnx", card=True), tmp_path / "a.engine", timing_cache=str(cache))
    assert _entries(cache) == {"a/conv", "a/relu", "x/old"}  # merged, mismatch ignored
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning) as caught:
        _build(make_onnx(tmp_path / "a.onnx", card=True), tmp_path / "a.engine", timing_cache=str(cache))
    assert ["is unreadable" in str(w.message) or "could not be merged" in str(w.message) for w in caught] == [True] * 2
    assert _entries(cache) == {"a/conv", "a/relu"}
    state.fail_timing_cache = True  # the real set_timing_cache returns False rather than raising
    with pytest.raises(RuntimeError, match="could not create an empty timing cache"), \
            pytest.warns(UserWarning, match="does not match"):
        _build(make_onnx(tmp_path / "a.onnx", card=True), tmp_path / "x.engine", timing_cache=str(cache))


def test_plugins_registered_before_parse_and_deserialise(tmp_path, fake):
    """#9: ``init_libnvinfer_plugins`` runs once per process before deserialising (build and runtime)."""
    state, install = fake
    import onnx
    from onnx import helper

    path = make_onnx(tmp_path / "p.onnx", card=True)
    m = onnx.load(str(path))
    m.graph.node.append(helper.make_node("ScatterPlugin", ["heatmaps"], ["heatmaps2"], name="plugin",
                                         domain="trt.plugins"))
    m.graph.output[0].name = "heatmaps2"
    m.graph.node[1].output[0] = "heatmaps"
    from srpose.card import card_to_onnx

    card_to_onnx(m, tiny_card(output_names=["heatmaps2"]))
    onnx.save(m, str(path))
    _build(path, tmp_path / "p.engine", check_onnx=False)  # the plan is read back: needs the plugins
    install()  # a fresh process: no plugins registered yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        be = trt_layer.TensorRTBackend(tmp_path / "p.engine")
    assert be.output_names == ["heatmaps2"]
    be.close()


def test_without_tensorrt_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_compat, "trt", None)
    monkeypatch.setattr(_compat, "TRT_IMPORT_ERROR", ImportError("No module named 'tensorrt'"))
    with pytest.raises(RuntimeError, match=r"TensorRT is not installed: pip install tensorrt \(needs an NVIDIA GPU\)"):
        trt_layer.build_engine(tmp_path / "x.onnx", tmp_path / "x.engine")
    assert trt_layer.tensorrt_status() == "TensorRT is not installed (ImportError: No module named 'tensorrt')"
    assert trt_layer.trt is None and "tensorrt" in str(trt_layer.TRT_IMPORT_ERROR)
    assert sidecar_path(tmp_path / "x.engine").name == "x.engine.json"


def test_tensorrt_status_needs_a_gpu(fake):
    state, install = fake
    assert trt_layer.tensorrt_status() is None and trt_layer.trt is _compat.trt
    assert trt_layer.tensorrt_status(5).startswith("no CUDA GPU 5 is visible")
    install(gpus={})
    assert trt_layer.tensorrt_status().startswith("no CUDA GPU 0 is visible")
