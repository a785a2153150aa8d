"""A fake ``tensorrt`` module and fake CUDA buffers for the TensorRT layer's tests (no TensorRT, no GPU needed).

The ``fake`` fixture (registered in conftest.py) injects them into ``engines._trt_compat``.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from srpose.engines import _trt_compat as compat


class FakeState:
    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}  # fake device memory by pointer
        self.flags = None
        self.flags_set: list = []
        self.profiles: list = []
        self.calls: list[str] = []
        self.fail_build = False
        self.fail_parse = False


def make_fake_trt(state: FakeState, version: str = "10.16.1.11", weak: bool = True) -> types.ModuleType:
    """The minimal TensorRT surface the layer uses; ``weak`` = 10.x (precision flags exist), else 11.x."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        VERBOSE, WARNING = 0, 2

        def __init__(self, severity):
            self.severity = severity

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5

    class BuilderFlag:
        pass

    if weak:
        BuilderFlag.FP16, BuilderFlag.INT8 = "FP16", "INT8"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = {name: (tuple(lo), tuple(opt), tuple(hi))}

    class Cache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return memoryview(self.blob + b"+tuned")

    class Config:
        builder_optimization_level = 3

        def set_memory_pool_limit(self, pool, size):
            state.calls.append(f"workspace {size}")

        def add_optimization_profile(self, p):
            state.profiles.append(p.shapes)

        def create_timing_cache(self, blob):
            return Cache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            state.flags_set.append(flag)

    class ParserError:
        def node(self):
            return 1

        def node_name(self):
            return "relu"

        def node_operator(self):
            return "Relu"

        def desc(self):
            return "unsupported thing"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            self.num_errors = int(state.fail_parse)
            return not state.fail_parse

        def get_error(self, i):
            return ParserError()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            state.flags = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if state.fail_build else memoryview(b"PLAN:tiny-engine")

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.n = engine, {}, None

        def set_input_shape(self, name, shape):
            self.n = shape[0]
            return True

        def get_tensor_shape(self, name):
            s = self.engine.shapes[name]
            return (self.n, *s[1:])

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            x = state.mem[self.addr["input"]]
            n = self.n
            xin = x[: n * 3 * 16 * 12].reshape(n, 3, 16, 12)
            out = state.mem[self.addr["heatmaps"]]
            vals = xin.mean(axis=(1, 2, 3))[:, None] + np.arange(5 * 8 * 6, dtype=np.float32)[None]
            out[: n * 5 * 8 * 6] = vals.reshape(-1)
            return True

    class Engine:
        shapes = {"input": (-1, 3, 16, 12), "heatmaps": (-1, 5, 8, 6)}
        num_io_tensors = 2
        device_memory_size_v2 = 1234

        def get_tensor_name(self, i):
            return ["input", "heatmaps"][i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def get_tensor_profile_shape(self, name, index):
            return [(1, 3, 16, 12), (2, 3, 16, 12), (4, 3, 16, 12)]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine() if bytes(plan).startswith(b"PLAN:") else None

    trt.Logger, trt.NetworkDefinitionCreationFlag, trt.BuilderFlag = Logger, NetworkDefinitionCreationFlag, BuilderFlag
    trt.MemoryPoolType, trt.TensorIOMode, trt.OnnxParser = MemoryPoolType, TensorIOMode, OnnxParser
    trt.Builder, trt.Runtime = Builder, Runtime
    trt.nptype = lambda dt: {"float32": np.float32, "float16": np.float16}[dt]
    return trt


class FakeOps(compat.CudaOps):
    """Host memory posing as device memory; events advance a fake clock by 1 ms for the compute interval."""

    kind = "fake"
    supports_graphs = True

    def __init__(self, state: FakeState, gpu=None) -> None:
        self.state, self._gpu = state, gpu or {"name": "Fake GPU", "compute_capability": "8.9"}
        self.t = 0.0
        self.closed = False
        self.captured = 0

    def gpu(self):
        return dict(self._gpu)

    def alloc(self, capacity, dtype):
        dev = np.zeros(capacity, dtype)
        ptr = 1000 + len(self.state.mem)
        self.state.mem[ptr] = dev
        return compat.DeviceBuffer(ptr, capacity, dtype, np.zeros(capacity, dtype))

    def upload(self, buf, array):
        self.state.mem[buf.ptr][: array.size] = array.reshape(-1)
        self.t += 0.25

    def download(self, buf, count):
        buf.host[:count] = self.state.mem[buf.ptr][:count]
        self.t += 0.25
        return buf.host[:count]

    def event(self):
        return [None]

    def record(self, ev):
        self.t += 0.0
        ev[0] = self.t

    def elapsed_ms(self, a, b):
        return b[0] - a[0]

    def synchronize(self):
        pass

    def capture(self, fn):
        self.captured += 1
        return fn

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    """Inject a fake 10.x ``trt`` and a fake GPU into ``_trt_compat``; returns (state, install(version, weak, gpu))."""
    state = FakeState()
    ops_made: list[FakeOps] = []

    def install(version="10.16.1.11", weak=True, gpu=None):
        monkeypatch.setattr(compat, "trt", make_fake_trt(state, version, weak))
        info = gpu or {"name": "Fake GPU", "compute_capability": "8.9"}
        monkeypatch.setattr(compat, "gpu_info", lambda device=0, memory="auto": dict(info))

        def cuda_ops(kind="auto", device=0):
            ops_made.append(FakeOps(state, info))
            return ops_made[-1]

        monkeypatch.setattr(compat, "cuda_ops", cuda_ops)

    install()
    state.ops_made = ops_made
    return state, install
