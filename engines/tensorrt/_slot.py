"""One buffer set of a :class:`~srpose.engines.tensorrt.runtime.TensorRTBackend`: an execution context with its own
CUDA helper (stream, events, at most one CUDA graph), device buffers and pinned host arrays for every I/O tensor.

A backend holds two slots by default: while the GPU runs one slot's batch, the caller fills the other slot's pinned
input arrays (:meth:`Slot.host_views`) and submits it on the other stream, so host work, uploads and execution
overlap. Inputs written into those arrays are uploaded as they are (no staging copy).

CUDA graphs: TensorRT binds a captured graph to the context's state at capture time, so a slot keeps at most one
graph, for its current input shapes. A shape change drops it and the next enqueue runs plainly; the graph is
captured on the next call with the same shapes and replayed while they stay. A capture that fails (graphs with
loops or conditionals) is reported once by the backend, which then runs plain enqueues.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # for the "trt.X" annotations only (the TensorRT-name test follows them)
    from ._compat import trt  # noqa: F401

__all__ = ["EngineIO", "Slot"]

Shapes = dict[str, tuple[int, ...]]


@dataclass
class EngineIO:
    """The engine's I/O: input names with their dtypes and (min, opt, max) profile shapes, output names and
    dtypes."""

    inputs: list[str]
    outputs: list[str]
    dtypes: dict[str, Any]
    profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def max_shapes(self) -> Shapes:
        return {n: self.profiles[n][2] for n in self.inputs}


class Slot:
    """See the module docstring. ``engine_path`` names the engine in errors."""

    def __init__(self, engine: "trt.ICudaEngine", ops: Any, io: EngineIO, engine_path: Path, *,
                 cuda_graph: bool) -> None:
        self.ops, self.io, self.engine_path = ops, io, engine_path
        self.cuda_graph = cuda_graph
        self.graph: Any = None
        self.shapes: Shapes | None = None
        self.settled = False  # a plain enqueue ran since the latest shape change
        self.pending: Any = None  # the Pending of the batch in flight, until collected
        self.bufs: dict[str, Any] = {}
        self.events: list = []
        self.out_shapes: Shapes = {}
        self.context = engine.create_execution_context()
        if self.context is None:
            from . import _compat

            raise RuntimeError(f"TensorRT could not create an execution context for {engine_path} (see its log "
                               f"above; usually too little free device memory: the engine needs "
                               f"{_compat.engine_device_memory(engine)} bytes per context)")
        for name, shape in io.max_shapes().items():  # the largest shapes size every buffer once
            self._set_input_shape(name, shape)
            self.bufs[name] = ops.alloc(int(np.prod(shape)), io.dtypes[name])
        for name in io.outputs:
            shape = tuple(int(v) for v in self.context.get_tensor_shape(name))
            self.bufs[name] = ops.alloc(int(np.prod(shape)), io.dtypes[name])
        for name, buf in self.bufs.items():
            if not self.context.set_tensor_address(name, buf.ptr):
                raise RuntimeError(f"TensorRT refused the device address of tensor {name!r} of {engine_path}")
        self.events = [ops.event() for _ in range(4)]

    # -- shapes ------------------------------------------------------------------------------------------------

    def _set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise RuntimeError(f"TensorRT refused input shape {shape} for {name!r} of {self.engine_path} "
                               "(set_input_shape returned False; see its log above)")

    def set_shapes(self, shapes: Shapes) -> None:
        """Set the context's input shapes when they change; that drops the captured graph."""
        if shapes == self.shapes:
            return
        self.drop_graph()
        self.shapes = None
        for name in self.io.inputs:
            self._set_input_shape(name, shapes[name])
        self.shapes, self.settled = dict(shapes), False
        self.out_shapes = {n: tuple(int(v) for v in self.context.get_tensor_shape(n)) for n in self.io.outputs}

    def host_views(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The pinned host arrays of the inputs, shaped ``shapes``: write a batch into them and submit them."""
        out = {}
        for name in self.io.inputs:
            n = int(np.prod(shapes[name]))
            buf = self.bufs[name]
            if n > buf.capacity:
                raise ValueError(f"input {name!r} of shape {tuple(shapes[name])} exceeds the engine's profile "
                                 f"maximum {self.io.profiles[name][2]}")
            out[name] = buf.host[:n].reshape(shapes[name])
        return out

    def owns(self, array: Any) -> bool:
        """Whether ``array`` is this slot's pinned host array of some input (no staging copy needed)."""
        if not isinstance(array, np.ndarray):
            return False
        ptr = array.__array_interface__["data"][0]
        return any(ptr == self.bufs[n].host.__array_interface__["data"][0] for n in self.io.inputs)

    # -- enqueue -----------------------------------------------------------------------------------------------

    def drop_graph(self) -> None:
        graph, self.graph = self.graph, None
        if graph is not None:
            graph.close()

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.ops.stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.engine_path} (see its log above)")

    def run(self, on_capture_failure: Callable[[Exception], None], graphs_failed: bool) -> None:
        """Enqueue the engine: replay this slot's graph, capture it, or run plainly (see the module doc)."""
        if self.graph is not None:
            self.graph.launch()
            return
        if not self.cuda_graph or graphs_failed or not self.settled:
            self._execute()
            self.settled = True
            return
        try:
            self.graph = self.ops.capture(self._execute)
        except Exception as e:  # noqa: BLE001 - e.g. loops/conditionals cannot be captured
            on_capture_failure(e)
            self._execute()
            return
        self.graph.launch()

    def enqueue(self, feed: Mapping[str, Any], run: Callable[[], None]) -> None:
        """Uploads (pinned arrays of this slot as they are; device tensors device to device), ``run`` and the
        output downloads, on this slot's stream, timed by its events."""
        ops, ev = self.ops, self.events
        device = [n for n in self.io.inputs if ops.is_device_array(feed[n])]
        if device:
            ops.wait_for_caller()  # before the start event: the caller's own GPU work is not copy time
        ops.record(ev[0])
        for name in self.io.inputs:
            (ops.upload_device if name in device else ops.upload)(self.bufs[name], feed[name])
        ops.record(ev[1])
        run()
        ops.record(ev[2])
        for name in self.io.outputs:
            ops.download(self.bufs[name], int(np.prod(self.out_shapes[name])))
        ops.record(ev[3])

    def finish(self) -> tuple[dict[str, np.ndarray], float, float]:
        """Wait for the slot's stream; (outputs copied out of the pinned arrays as float32, device ms, copy ms)."""
        ops, ev = self.ops, self.events
        ops.synchronize()
        outs = {}
        for name in self.io.outputs:
            shape = self.out_shapes[name]
            host = self.bufs[name].host[:int(np.prod(shape))].reshape(shape)
            outs[name] = host.astype(np.float32, copy=True)  # one copy: the pinned array is reused
        return outs, ops.elapsed_ms(ev[1], ev[2]), ops.elapsed_ms(ev[0], ev[1]) + ops.elapsed_ms(ev[2], ev[3])

    def close(self) -> None:
        self.drop_graph()
        self.bufs, self.events, self.context, self.pending = {}, [], None, None
