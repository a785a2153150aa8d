"""A strict fake ``tensorrt`` module and fake CUDA helpers for the TensorRT layer's tests (no TensorRT, no GPU).

The fake behaves like the real library where the layer's correctness depends on it (issue #13):

- one logger per process: a Builder/Runtime/parser given another logger than the first one records the warning
  TensorRT prints and ignores it; ``init_libnvinfer_plugins`` registers plugins per "process" (fake module), and
  a plan with a plugin layer deserialises to None without it;
- ``Profile.set_shape`` raises on inconsistent min/opt/max; ``set_input_shape`` returns False outside the profile
  (or on request); ``create_execution_context`` can return None; ``set_timing_cache`` returns False for another
  GPU's cache; timing caches hold entries that ``combine`` merges;
- a CUDA graph replays the shapes and device addresses captured at capture time, and a replay after any
  ``set_input_shape`` since the capture is undefined (it writes NaN); capturing an enqueue that did not follow a
  plain enqueue after a shape change fails; capture can fail on request (an engine with loops);
- the event clock advances during copies (0.25 ms each) and execution (1 ms), and a device input's producer on
  the caller's stream finishes at ``state.caller_done_at``;
- buffers are tracked (weakly) so a test sees whether ``close()`` released them; ``cuda_ops`` makes the device
  current (``state.current_device``) until the helper is closed, like pycuda's pushed context.

The ``fake`` fixture (registered in conftest.py) injects the module into ``srpose.engines.tensorrt._compat`` and
the helper factory into ``srpose.engines.tensorrt.cuda``.
"""
from __future__ import annotations

import itertools
import json
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

from srpose.engines.tensorrt import _compat, cuda

GPUS = {0: {"name": "Fake GPU", "compute_capability": "8.9"}, 1: {"name": "Fake GPU B", "compute_capability": "9.0"}}
EXEC_MS, COPY_MS = 1.0, 0.25
_PTRS = itertools.count(0x1000, 0x100)


class FakeState:
    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}  # fake device memory by pointer
        self.clock = 0.0  # ms, read by events
        self.caller_done_at = 0.0  # when the caller's stream finishes producing a device input
        self.flags = None
        self.flags_set: list = []
        self.profiles: list = []
        self.calls: list[str] = []
        self.fail_build = self.fail_parse = self.fail_capture = self.fail_context = False
        self.fail_timing_cache = False
        self.reject_shapes: set[tuple] = set()
        self.loggers: list = []
        self.logger_warnings: list[str] = []
        self.current_device = 0
        self.builder_devices: list[int] = []
        self.during_build: list = []  # callables run inside build_serialized_network
        self.capturing = None
        self.captures = self.replays = self.undefined_replays = 0
        self.buffers: weakref.WeakSet = weakref.WeakSet()
        self.events: weakref.WeakSet = weakref.WeakSet()
        self.live_graphs: set = set()
        self.ops_made: list = []
        self.gpus = dict(GPUS)
        self.contexts: list = []
        self.executions: list = []  # (context id, stream handle) of every plain enqueue
        self.seen_inputs: list = []  # the inputs every execution saw
        self.staged_copies = 0  # host copies into a buffer's pinned array before an upload

    def device_tag(self) -> str:
        g = self.gpus[self.current_device]
        return f"{g['name']}:{g['compute_capability']}"


def fake_outputs(x: np.ndarray, out_shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """What every fake engine computes: output j of sample n = mean(x[n]) + j + 0.001 * element index."""
    means = x.reshape(x.shape[0], -1).mean(axis=1)
    outs = {}
    for j, (name, shape) in enumerate(out_shapes.items()):
        per = int(np.prod(shape[1:]))
        vals = means[:, None] + j + 0.001 * np.arange(per, dtype=np.float32)[None]
        outs[name] = vals.reshape(shape).astype(np.float32)
    return outs


def fake_engine_outputs(inputs: dict[str, np.ndarray], out_shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """:func:`fake_outputs` of an engine with any inputs: each output is computed from the first input sharing its
    leading dimension's name-resolved size (a crop engine: its one input; an image engine: the boxes)."""
    outs = {}
    for j, (name, shape) in enumerate(out_shapes.items()):
        x = next((x for x in inputs.values() if x.shape[:1] == tuple(shape[:1])), next(iter(inputs.values())))
        vals = fake_outputs(x.astype(np.float32), {name: shape})[name]
        outs[name] = vals + j
    return outs


_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 6: "int32", 7: "int64"}


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


class _Snapshot:
    def __init__(self, ctx) -> None:
        self.ctx, self.generation, self.shapes, self.addr = ctx, ctx.generation, dict(ctx.shapes), dict(ctx.addr)


def make_fake_trt(state: FakeState, version: str = "10.16.1.11", weak: bool = True) -> types.ModuleType:
    """The TensorRT surface the layer uses; ``weak`` = 10.x (precision flags, calibrators exist), else 11.x."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    proc = types.SimpleNamespace(logger=None, plugins=False)  # per-"process" state of this module

    def use_logger(logger, who):
        if proc.logger is None:
            proc.logger = logger
        elif logger is not proc.logger:
            state.logger_warnings.append(f"{who}: the logger passed differs from the one already provided; "
                                         "it is ignored")

    class Logger:
        VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = 4, 3, 2, 1, 0

        def __init__(self, min_severity=2):
            self.min_severity = min_severity
            state.loggers.append(self)

    def init_libnvinfer_plugins(logger, namespace):
        use_logger(logger, "init_libnvinfer_plugins")
        proc.plugins = True
        return True

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
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            lo, opt, hi = tuple(lo), tuple(opt), tuple(hi)
            for what, s in (("min", lo), ("opt", opt), ("max", hi)):
                if len(s) != len(lo) or not all(a <= v <= b and a >= 1 for a, v, b in zip(lo, s, hi)):
                    raise RuntimeError(f"Shape provided for {what} is inconsistent with other shapes.")
            self.shapes[name] = (lo, opt, hi)

    class TimingCache:
        def __init__(self, tag, entries=()):
            self.tag, self.entries = tag, set(entries)

        def serialize(self):
            return memoryview(f"FAKETC|{self.tag}|{','.join(sorted(self.entries))}".encode())

        def combine(self, input_cache, ignore_mismatch):
            if input_cache.tag != self.tag and not ignore_mismatch:
                return False
            self.entries |= input_cache.entries
            return True

    class Config:
        def __init__(self):
            self.builder_optimization_level = 3
            self.cache = None
            self.profiles = []
            self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            state.calls.append(f"workspace {size}")

        def add_optimization_profile(self, p):
            state.profiles.append(dict(p.shapes))
            self.profiles.append(dict(p.shapes))
            return len(self.profiles) - 1

        def create_timing_cache(self, blob):
            text = bytes(blob).decode(errors="replace")
            if not text:
                return TimingCache(state.device_tag())
            parts = text.split("|")
            if len(parts) != 3 or parts[0] != "FAKETC":
                return None  # the real call logs an error and returns None for a corrupt blob
            return TimingCache(parts[1], [e for e in parts[2].split(",") if e])

        def set_timing_cache(self, cache, ignore_mismatch):
            if state.fail_timing_cache or (cache.tag != state.device_tag() and not ignore_mismatch):
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_flag(self, flag):
            state.flags_set.append(flag)

    if weak:
        Config.set_calibration_profile = lambda self, p: state.calls.append(("calibration_profile", p.shapes))

    class Network:
        def __init__(self):
            self.spec = None

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
            use_logger(logger, "OnnxParser")
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            if state.fail_parse:
                self.num_errors = 1
                return False
            import onnx

            m = onnx.load(str(path), load_external_data=False)
            inits = {i.name for i in m.graph.initializer}
            dyn = lambda dims: [d if isinstance(d, int) and d > 0 else -1 for d in dims]  # noqa: E731
            dtype = lambda v: _DTYPES[v.type.tensor_type.elem_type]  # noqa: E731
            self.network.spec = {
                "inputs": [[i.name, dyn(_dims(i)), _dims(i), dtype(i)] for i in m.graph.input if i.name not in inits],
                "outputs": [[o.name, dyn(_dims(o)), _dims(o), dtype(o)] for o in m.graph.output],
                "nodes": [n.name or n.op_type for n in m.graph.node], "source": Path(path).stem,
                "plugins": any(n.op_type.endswith("Plugin") for n in m.graph.node)}
            return True

        def get_error(self, i):
            return ParserError()

    class Builder:
        def __init__(self, logger):
            use_logger(logger, "Builder")
            state.builder_devices.append(state.current_device)

        def create_network(self, flags):
            state.flags = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            for hook in state.during_build:
                hook()
            if state.fail_build or network.spec is None or len(config.profiles) != 1:
                return None
            if sorted(config.profiles[0]) != sorted(i[0] for i in network.spec["inputs"]):
                return None  # "Network has dynamic or shape inputs, but no optimization profile has been defined"
            if config.cache is not None:
                config.cache.entries |= {f"{network.spec['source']}/{n}" for n in network.spec["nodes"]}
            profiles = {name: [list(s) for s in shapes] for name, shapes in config.profiles[0].items()}
            spec = dict(network.spec, profiles=profiles, device=state.current_device)
            return memoryview(b"PLAN:" + json.dumps(spec).encode())

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.shapes = engine, {}, {}
            self.generation, self.settled = 0, False
            state.contexts.append(self)

        @property
        def shape(self):  # the first input's shape (single-input engines)
            return self.shapes.get(self.engine.inputs[0])

        def set_input_shape(self, name, shape):
            shape = tuple(int(v) for v in shape)
            if name not in self.engine.inputs:
                return False
            lo, _, hi = self.engine.profiles[name]
            ok = len(shape) == len(lo) and all(a <= v <= b for a, v, b in zip(lo, shape, hi)) and \
                shape not in state.reject_shapes
            if ok:
                self.shapes[name], self.generation, self.settled = shape, self.generation + 1, False
            return ok

        def get_tensor_shape(self, name):
            return self.engine.actual_shape(name, self.shapes)

        def set_tensor_address(self, name, ptr):
            if name not in self.engine.names:
                return False
            self.addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            if set(self.shapes) != set(self.engine.inputs) or set(self.addr) != set(self.engine.names):
                return False
            if state.capturing is not None:
                if not self.settled:
                    state.capturing.error = "enqueue captured without a plain enqueue after the shape change"
                state.capturing.calls.append(_Snapshot(self))
                return True
            state.executions.append((id(self), stream_handle))
            self.engine.compute(dict(self.shapes), self.addr)
            self.settled = True
            return True

    class Engine:
        device_memory_size_v2 = 1234

        def __init__(self, spec):
            self.spec = spec
            self.inputs = [i[0] for i in spec["inputs"]]
            self.input = self.inputs[0]
            self.outputs = [o[0] for o in spec["outputs"]]
            self.names = [*self.inputs, *self.outputs]
            self.num_io_tensors = len(self.names)
            self.profiles = {n: tuple(tuple(s) for s in p) for n, p in spec["profiles"].items()}
            self.profile = list(self.profiles[self.input])
            self.dtypes = {t[0]: t[3] for t in [*spec["inputs"], *spec["outputs"]]}

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.dtypes[name]

        def get_tensor_shape(self, name):
            return tuple(next(t[1] for t in [*self.spec["inputs"], *self.spec["outputs"]] if t[0] == name))

        def get_tensor_profile_shape(self, name, index):
            if name not in self.inputs or index != 0:
                raise RuntimeError("no such profile tensor")
            return list(self.profiles[name])

        def actual_shape(self, name, shapes):
            if name in self.inputs:
                return shapes.get(name)
            by_name = {}
            for inp, _, named, _ in self.spec["inputs"]:
                if inp in shapes:
                    by_name.update(zip(named, shapes[inp]))
            _, dims, named, _ = next(o for o in self.spec["outputs"] if o[0] == name)
            return tuple(d if d > 0 else by_name[p] for d, p in zip(dims, named))

        def compute(self, shapes, addr, undefined=False):
            xs = {n: state.mem[addr[n]][:int(np.prod(shapes[n]))].reshape(shapes[n]) for n in self.inputs}
            outs = {o: self.actual_shape(o, shapes) for o in self.outputs}
            state.seen_inputs.append({n: x.copy() for n, x in xs.items()})
            for o, val in fake_engine_outputs(xs, outs).items():
                state.mem[addr[o]][: val.size] = np.nan if undefined else val.reshape(-1)
            state.clock += EXEC_MS

        def create_execution_context(self):
            return None if state.fail_context else Context(self)

    class Runtime:
        def __init__(self, logger):
            use_logger(logger, "Runtime")

        def deserialize_cuda_engine(self, plan):
            data = bytes(plan)
            if not data.startswith(b"PLAN:"):
                return None
            spec = json.loads(data[5:])
            if spec["plugins"] and not proc.plugins:
                return None  # "getPluginCreator could not find plugin": plugins were never registered
            return Engine(spec)

    for obj in (Logger, init_libnvinfer_plugins, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType,
                TensorIOMode, OnnxParser, Builder, Runtime):
        setattr(trt, obj.__name__, obj)
    trt.nptype = lambda dt: {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int32": np.int32,
                             "int64": np.int64}[dt]
    trt.process = proc
    return trt


class FakeGraph:
    """A captured graph: replays each captured enqueue with its captured shape and addresses."""

    def __init__(self, state: FakeState, calls: list) -> None:
        self.state, self.calls = state, calls
        state.live_graphs.add(self)

    def launch(self) -> None:
        for snap in self.calls:
            stale = snap.ctx.generation != snap.generation  # the context's shape changed after the capture
            self.state.undefined_replays += stale
            snap.ctx.engine.compute(snap.shapes, snap.addr, undefined=stale)
        self.state.replays += 1

    __call__ = launch  # helpers before issue #13 returned a plain launch function

    def close(self) -> None:
        self.state.live_graphs.discard(self)


class FakeEvent:
    t = None


class FakeCudaTensor:
    """Stands for a torch CUDA tensor produced on the caller's stream (see ``FakeState.caller_done_at``)."""

    __module__ = "torch.fake"
    is_cuda = True

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.shape = self.array.shape

    def numel(self) -> int:
        return self.array.size

    def reshape(self, *shape):
        return self.array.reshape(*shape)


class FakeOps(cuda.CudaOps):
    """Host memory posing as device memory on ``state``; the device stays current until ``close``."""

    supports_graphs = True

    def __init__(self, state: FakeState, device: int = 0, kind: str = "fake") -> None:
        self.state, self.device, self.kind = state, int(device), kind
        self._previous, state.current_device = state.current_device, int(device)
        self.stream_handle = next(_PTRS)
        self.closed = False
        self.captured = 0
        self._ptrs: list[int] = []

    def gpu(self):
        return dict(self.state.gpus[self.device])

    def alloc(self, capacity, dtype):
        ptr = next(_PTRS)
        self.state.mem[ptr] = np.zeros(capacity, dtype)
        self._ptrs.append(ptr)
        buf = cuda.DeviceBuffer(ptr, capacity, dtype, np.zeros(capacity, dtype), handle=("fake", ptr))
        self.state.buffers.add(buf)
        return buf

    def _dev(self, buf) -> np.ndarray:
        if self.closed:
            raise RuntimeError("fake CUDA: use of a closed helper")
        return self.state.mem[buf.ptr]

    def upload(self, buf, array):
        from srpose.engines.tensorrt._cuda_base import stage

        dev = self._dev(buf)
        if array.__array_interface__["data"][0] != buf.host.__array_interface__["data"][0]:
            self.state.staged_copies += 1
        n = stage(buf, array)
        dev[:n] = buf.host[:n]
        self.state.clock += COPY_MS

    def is_device_array(self, images):
        return self.kind == "torch" and isinstance(images, FakeCudaTensor)

    def wait_for_caller(self):
        self.state.clock = max(self.state.clock, self.state.caller_done_at)

    def upload_device(self, buf, tensor):
        self.wait_for_caller()  # what the helper did before issue #13; a no-op after an explicit wait
        self._dev(buf)[: tensor.numel()] = tensor.array.reshape(-1)
        self.state.clock += COPY_MS

    def download(self, buf, count):
        buf.host[:count] = self._dev(buf)[:count]
        self.state.clock += COPY_MS
        return buf.host[:count]

    def event(self):
        ev = FakeEvent()
        self.state.events.add(ev)
        return ev

    def record(self, ev):
        ev.t = self.state.clock

    def elapsed_ms(self, a, b):
        return b.t - a.t

    def synchronize(self):
        pass

    def capture(self, fn):
        cap = types.SimpleNamespace(calls=[], error=None)
        self.state.capturing = cap
        try:
            fn()
        finally:
            self.state.capturing = None
        if self.state.fail_capture:
            raise RuntimeError("fake CUDA error 900: operation not permitted when stream is capturing (the engine "
                               "has a loop)")
        if cap.error:
            raise RuntimeError(f"fake CUDA: capture invalidated: {cap.error}")
        self.captured += 1
        self.state.captures += 1
        return FakeGraph(self.state, cap.calls)

    def close(self):
        if self.closed:
            return
        for ptr in self._ptrs:
            self.state.mem.pop(ptr, None)
        self._ptrs = []
        self.state.current_device = self._previous
        self.closed = True


@pytest.fixture
def fake(monkeypatch):
    """Inject a fake 10.x ``trt`` and fake GPUs; returns (state, install(version, weak, memory_kind)).

    Each ``install`` is a fresh "process" (new module: no logger, no plugins registered yet)."""
    state = FakeState()

    def install(version="10.16.1.11", weak=True, memory_kind="fake", gpus=None):
        monkeypatch.setattr(_compat, "trt", make_fake_trt(state, version, weak))
        state.gpus = dict(GPUS if gpus is None else gpus)

        def cuda_ops(kind="auto", device=0):
            if int(device) not in state.gpus:
                raise RuntimeError(f"fake CUDA: invalid device ordinal {device}")
            state.ops_made.append(FakeOps(state, device, memory_kind))
            return state.ops_made[-1]

        monkeypatch.setattr(cuda, "cuda_ops", cuda_ops)

    install()
    return state, install


# ----------------------------------------------------------------------------------------- fake cuda-python


class FakeCudart(types.ModuleType):
    """``cuda.bindings.runtime`` with the calls :class:`_CudaPythonOps` makes. A capture whose work raised is
    invalidated: ``cudaStreamEndCapture`` then returns cudaErrorStreamCaptureInvalidated (901), as CUDA does."""

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self) -> None:
        super().__init__("cuda.bindings.runtime")
        self.log: list[str] = []
        self.capturing = False
        self.invalidate = False

    def _call(self, name, *ret):
        self.log.append(name)
        return (0, *ret)

    def cudaGetErrorString(self, err):
        return 0, {901: b"operation failed due to a previous error during capture"}.get(int(err), b"error")

    def cudaSetDevice(self, d):
        return self._call("cudaSetDevice")

    def cudaStreamCreate(self):
        return self._call("cudaStreamCreate", 77)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = True
        return self._call("cudaStreamBeginCapture")

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        self.log.append("cudaStreamEndCapture")
        if self.invalidate:
            return 901, None
        return 0, "graph"

    def cudaGraphInstantiate(self, graph, flags):
        return self._call("cudaGraphInstantiate", "exec")

    def cudaGraphDestroy(self, graph):
        return self._call("cudaGraphDestroy")

    def cudaGraphLaunch(self, exe, stream):
        return self._call("cudaGraphLaunch")

    def cudaGraphExecDestroy(self, exe):
        return self._call("cudaGraphExecDestroy")

    def cudaStreamSynchronize(self, stream):
        return self._call("cudaStreamSynchronize")

    def cudaStreamDestroy(self, stream):
        return self._call("cudaStreamDestroy")


@pytest.fixture
def fake_cudart(monkeypatch):
    """A fake cuda-python installed as ``cuda.bindings.runtime`` (and ``cuda.cudart``) in ``sys.modules``."""
    rt = FakeCudart()
    pkg, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    pkg.__path__, bindings.__path__ = [], []
    pkg.bindings, bindings.runtime, pkg.cudart = bindings, rt, rt
    for name, mod in (("cuda", pkg), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt),
                      ("cuda.cudart", rt)):
        monkeypatch.setitem(sys.modules, name, mod)
    return rt


# ----------------------------------------------------------------------------------------- tiny ONNX models


def tiny_card(**changes):
    """The card of :func:`make_onnx`'s model (top-down, 16 x 12 input, 5 joints at 8 x 6), with ``changes``."""
    from srpose.card import ArtifactCard

    base = dict(model_name="tiny", task="top-down", input_size=(12, 16), heatmap_size=(6, 8), num_joints=5,
                mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], flip_pairs=[[1, 2]], codec={"name": "msra"},
                output_names=["heatmaps"], flip=True, precision="fp16", batch=(1, 2, 4), opset=17)
    return ArtifactCard(**{**base, **changes})


def make_onnx(path: Path, *, batch="N", card=None, metadata: dict | None = None, channels=3, h=16, w=12, k=5,
              opset=17) -> Path:
    """Conv(3->k, 3x3, stride 2) + ReLU: N x 3 x h x w -> N x k x h/2 x w/2 ``heatmaps``; with ``card`` (an
    ArtifactCard, or True for :func:`tiny_card`) in its metadata, and raw ``metadata`` entries."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from srpose.card import card_to_onnx

    rng = np.random.default_rng(0)
    wgt = numpy_helper.from_array((rng.standard_normal((k, channels, 3, 3)) * 0.2).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(k).astype(np.float32) * 0.1, "b")
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["heatmaps"], name="relu")]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, h, w])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, k, h // 2, w // 2])],
        [wgt, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if card is not None:
        card_to_onnx(model, tiny_card() if card is True else card)
    for key, val in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = key, str(val)
    onnx.save(model, str(path))
    return path


def bottom_up_card(**changes):
    """The card of :func:`make_dynamic_onnx` (bottom-up, decoded: ``heatmaps`` and ``candidates``)."""
    base = dict(model_name="bu", task="bottom-up", input_size=(64, 64), heatmap_size=(64, 64), num_joints=3,
                output_names=["heatmaps", "candidates"], decode=True, flip=True, precision="fp32", batch=(1, 1, 2),
                hw_profile=((64, 64), (64, 128), (128, 192)), codec={"name": "associative_embedding"})
    return tiny_card(**{**base, **changes})


def make_dynamic_onnx(path: Path, card=None, metadata: dict | None = None) -> Path:
    """Dynamic N, H, W and two outputs: ``heatmaps`` (N x 3 x H x W) and ``candidates`` (N x 3 x 1 x 1)."""
    import onnx
    from onnx import TensorProto, helper

    from srpose.card import card_to_onnx

    nodes = [helper.make_node("Relu", ["input"], ["heatmaps"], name="relu"),
             helper.make_node("ReduceMean", ["input"], ["candidates"], name="mean", axes=[2, 3], keepdims=1)]
    graph = helper.make_graph(
        nodes, "bu", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("candidates", TensorProto.FLOAT, ["N", 3, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if card is not None:
        card_to_onnx(model, bottom_up_card() if card is True else card)
    for key, val in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = key, json.dumps(val)
    onnx.save(model, str(path))
    return path
