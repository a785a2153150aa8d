"""Run a TensorRT engine as a :class:`~srpose.engines.base.Backend`: named float32 outputs, device timing.

CUDA graphs (``cuda_graph=True``): TensorRT binds a captured graph to the execution context's state at capture
time, so one context keeps at most one graph, for the current input shape. A shape change drops it, and the call
after it runs a plain ``execute_async_v3``; the graph is captured on the next call with the same shape and replayed
while the shape stays. Alternating shapes (e.g. bottom-up images of varying size) thus never hold more than one
graph and never replay a stale one. A capture that fails (graphs with loops or conditionals) is reported once and
the backend falls back to plain enqueues; the context stays usable.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from srpose.card import ArtifactCard, read_card, sidecar_path

from . import _compat, cuda
from srpose.engines.base import Backend

if TYPE_CHECKING:  # for the "trt.X" annotations only; code reads _compat.require_trt() at call time
    from ._compat import trt  # noqa: F401

__all__ = ["TensorRTBackend", "read_engine_card"]


def read_engine_card(engine_path: Path) -> ArtifactCard | None:
    """The engine's card from its sidecar; None (with a warning) when there is no sidecar."""
    if not sidecar_path(engine_path).is_file():
        warnings.warn(f"{engine_path} has no sidecar {sidecar_path(engine_path).name}: cannot check that it was "
                      "built for this TensorRT/GPU, and what the graph computes (flip, decode) is unknown")
        return None
    return read_card(engine_path)


class TensorRTBackend(Backend):
    """A TensorRT engine behind the :class:`Backend` interface.

    ``memory`` picks the CUDA helper for buffers and streams ("auto": torch CUDA, else cuda-python, else pycuda).
    ``infer`` takes numpy arrays or (with torch memory) torch CUDA tensors and returns ``{output name: float32
    array}``. ``last_timing_ms`` is the device time of the enqueue (CUDA events); ``last_copy_ms`` the
    host<->device copies around it (measured from after the wait on the caller's stream).
    """

    name = "tensorrt"
    timing_source = "device"

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0, cuda_graph: bool = False,
                 memory: str = "auto", verbose: bool = False) -> None:
        super().__init__()
        self.last_wall_ms: float | None = None
        self._ops = self._context = self._engine = self._runtime = self._graph = None
        self._in_buf: Any = None
        self._out_bufs: dict[str, Any] = {}
        self._events: list = []
        trt = _compat.require_trt()
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"engine {self.engine_path} does not exist: build one with `srpose build`")
        self.card = read_engine_card(self.engine_path)
        self._check_version()
        self._ops = cuda.cuda_ops(memory, device)
        try:
            self._load(trt, cuda_graph, verbose)
        except BaseException:
            self.close()
            raise

    def _load(self, trt: Any, cuda_graph: bool, verbose: bool) -> None:
        if cuda_graph and not self._ops.supports_graphs:
            raise ValueError(f"cuda_graph=True needs memory='torch' or memory='cuda-python', not "
                             f"{self._ops.kind!r}")
        self.cuda_graph = cuda_graph
        self.graph_failure: str | None = None
        self.gpu = self._ops.gpu()
        plan = self.engine_path.read_bytes()
        self._check_gpu_and_hash(plan)
        logger = _compat.get_logger(verbose)
        _compat.init_plugins(logger)  # before deserialising: engines with plugin layers need the registry
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {self.engine_path} (see its log above): "
                               f"{_compat.REBUILD_HINT}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for {self.engine_path} (see its "
                               f"log above; usually too little free device memory: the engine needs "
                               f"{_compat.engine_device_memory(self._engine)} bytes)")
        self.device_memory_bytes = _compat.engine_device_memory(self._engine)
        self._setup_io(trt)
        self.precision = self.card.precision if self.card is not None else None
        self._shape: tuple[int, ...] | None = None
        self._settled = False  # a plain enqueue ran since the latest shape change

    # -- checks ----------------------------------------------------------------------------------------------

    def _engine_facts(self) -> dict[str, Any]:
        return (self.card.engine or {}) if self.card is not None else {}

    def _check_version(self) -> None:
        built = self._engine_facts().get("tensorrt_version")
        here = _compat.trt_version()
        if self.card is not None and built != here:
            raise RuntimeError(f"engine {self.engine_path} was built with TensorRT {built} but this is TensorRT "
                               f"{here}: engines only run on the TensorRT version that built them; "
                               f"{_compat.REBUILD_HINT}")

    def _check_gpu_and_hash(self, plan: bytes) -> None:
        facts = self._engine_facts()
        built, here = facts.get("gpu") or {}, self.gpu
        for key, what in (("compute_capability", "compute capability"), ("name", "GPU")):
            if built.get(key) and here.get(key) and built[key] != here[key]:
                raise RuntimeError(f"engine {self.engine_path} was built for {what} {built[key]} "
                                   f"({built.get('name')}) but this is {here[key]} ({here.get('name')}): "
                                   f"engines are tied to the GPU that built them; {_compat.REBUILD_HINT}")
        want = (facts.get("engine") or {}).get("sha256")
        if want and want != hashlib.sha256(plan).hexdigest():
            raise RuntimeError(f"sidecar {sidecar_path(self.engine_path)} describes another engine (sha256 "
                               f"mismatch): {_compat.REBUILD_HINT}")

    # -- I/O -------------------------------------------------------------------------------------------------

    def _io_names(self, trt: Any) -> tuple[list[str], list[str]]:
        eng = self._engine
        inputs, outputs = [], []
        for i in range(eng.num_io_tensors):
            name = str(eng.get_tensor_name(i))
            (inputs if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}: expected one "
                             "image input and at least one output")
        if self.card is not None and sorted(self.card.output_names) != sorted(outputs):
            raise ValueError(f"engine {self.engine_path} has outputs {outputs} but its sidecar's card names "
                             f"{self.card.output_names}: {_compat.REBUILD_HINT}")
        return inputs, outputs

    def _setup_io(self, trt: Any) -> None:
        eng = self._engine
        inputs, self.output_names = self._io_names(trt)
        self.input_name = inputs[0]
        pmin, popt, pmax = (tuple(int(v) for v in s) for s in eng.get_tensor_profile_shape(self.input_name, 0))
        self.batch_range = (pmin[0], popt[0], pmax[0])
        self.input_shape = tuple(pmax[1:])  # C, H, W (the largest, when H and W are dynamic)
        self.input_shape_min = tuple(pmin[1:])
        self.dynamic_hw = self.input_shape_min != self.input_shape
        self.input_dtype = _compat.nptype(eng.get_tensor_dtype(self.input_name))
        self._set_input_shape(pmax)  # the largest shape sizes every buffer once: addresses never change
        self._in_buf = self._ops.alloc(int(np.prod(pmax)), self.input_dtype)
        self._bind(self.input_name, self._in_buf)
        for name in self.output_names:
            shape = tuple(int(v) for v in self._context.get_tensor_shape(name))
            self._out_bufs[name] = self._ops.alloc(int(np.prod(shape)), _compat.nptype(eng.get_tensor_dtype(name)))
            self._bind(name, self._out_bufs[name])
        self._events = [self._ops.event() for _ in range(4)]

    def _bind(self, name: str, buf: Any) -> None:
        if not self._context.set_tensor_address(name, buf.ptr):
            raise RuntimeError(f"TensorRT refused the device address of tensor {name!r} of {self.engine_path}")

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(self.input_name, shape):
            raise RuntimeError(f"TensorRT refused input shape {shape} for {self.input_name!r} of "
                               f"{self.engine_path} (set_input_shape returned False; see its log above)")

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if not self.dynamic_hw:
            if len(shape) != 4 or shape[1:] != self.input_shape:
                raise ValueError(f"input shape {shape} does not match the engine's N x {self.input_shape}")
        else:
            lo, hi = self.input_shape_min, self.input_shape
            if len(shape) != 4 or shape[1] != hi[0] or \
                    not all(a <= v <= b for a, v, b in zip(lo[1:], shape[2:], hi[1:])):
                raise ValueError(f"input shape {shape} does not match the engine's N x {hi[0]} x H x W with H in "
                                 f"{lo[1]}..{hi[1]} and W in {lo[2]}..{hi[2]}: rebuild from an export whose "
                                 "--shape-profile covers it")
        lo_n, _, hi_n = self.batch_range
        if not lo_n <= shape[0] <= hi_n:
            raise ValueError(f"batch of {shape[0]} is outside the engine's profile {lo_n}..{hi_n}: rebuild with "
                             f"`srpose build --batch MIN,OPT,MAX` covering it")

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """Set the context's input shape when it changes; that invalidates the captured graph."""
        if shape == self._shape:
            return
        self._drop_graph()
        self._shape = None
        self._set_input_shape(shape)
        self._shape, self._settled = shape, False

    # -- enqueue and graphs ----------------------------------------------------------------------------------

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._ops.stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.engine_path} (see its log above)")

    def _drop_graph(self) -> None:
        graph, self._graph = self._graph, None
        if graph is not None:
            graph.close()

    def _run(self) -> None:
        """Enqueue the engine: replay the graph of this shape, capture it, or run plainly (see the module doc)."""
        if self._graph is not None:
            self._graph.launch()
            return
        if not self.cuda_graph or self.graph_failure is not None or not self._settled:
            self._execute()
            self._settled = True
            return
        try:
            self._graph = self._ops.capture(self._execute)
        except Exception as e:  # noqa: BLE001 - e.g. loops/conditionals cannot be captured
            self.graph_failure = f"{type(e).__name__}: {e}"
            warnings.warn(f"CUDA graph capture failed for {self.engine_path} ({self.graph_failure}); running "
                          "without CUDA graphs from now on")
            self._execute()
            return
        self._graph.launch()

    # -- Backend -----------------------------------------------------------------------------------------------

    @property
    def output_kind(self) -> str:
        """``heatmaps`` / ``keypoints`` / ``bottomup_candidates`` (the card's; ``heatmaps`` without a card)."""
        return self.card.output_kind if self.card is not None else "heatmaps"

    def _prepare(self, images: Any) -> tuple[Any, bool]:
        if self._context is None:
            raise RuntimeError("TensorRTBackend is closed")
        on_device = self._ops.is_device_array(images)
        if not on_device:
            host = images.detach().cpu().numpy() if hasattr(images, "detach") else images
            images = np.ascontiguousarray(host, dtype=self.input_dtype)
        return images, on_device

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run N x C x H x W inputs (numpy, or a torch CUDA tensor with torch memory); ``{name: float32 array}``
        for every output of the engine."""
        images, on_device = self._prepare(images)
        shape = tuple(int(v) for v in images.shape)
        self._check_shape(shape)
        t0 = time.perf_counter()
        self._set_shape(shape)
        ops, ev = self._ops, self._events
        if on_device:
            ops.wait_for_caller()  # before the start event: the caller's own GPU work is not copy time
        ops.record(ev[0])
        (ops.upload_device if on_device else ops.upload)(self._in_buf, images)
        ops.record(ev[1])
        self._run()
        ops.record(ev[2])
        hosts = {}
        for name in self.output_names:
            out_shape = tuple(int(v) for v in self._context.get_tensor_shape(name))
            hosts[name] = (ops.download(self._out_bufs[name], int(np.prod(out_shape))), out_shape)
        ops.record(ev[3])
        ops.synchronize()
        outs = {name: host.reshape(s).astype(np.float32, copy=True) for name, (host, s) in hosts.items()}
        self.last_timing_ms = ops.elapsed_ms(ev[1], ev[2])
        self.last_copy_ms = ops.elapsed_ms(ev[0], ev[1]) + ops.elapsed_ms(ev[2], ev[3])
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        return outs

    def close(self) -> None:
        """Free the graph, context, engine, device and pinned buffers and events. Safe to call twice."""
        self._drop_graph()
        self._in_buf, self._out_bufs, self._events = None, {}, []
        self._context = self._engine = self._runtime = None
        ops, self._ops = self._ops, None
        if ops is not None:
            ops.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
