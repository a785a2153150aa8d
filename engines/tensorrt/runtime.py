"""Run a TensorRT engine as a :class:`~srpose.engines.base.Backend`: named outputs, device timing, two batches in
flight.

The backend keeps ``slots`` buffer sets (two by default, :mod:`._slot`): each an execution context with its own
stream, device buffers and pinned host arrays. :meth:`TensorRTBackend.input_arrays` hands out the next slot's
pinned input arrays; a caller writes its batch there and :meth:`~TensorRTBackend.submit` uploads them as they are
(no staging copy) and enqueues the engine on that slot's stream, while the previous batch may still run on the other
one; ``Pending.result()`` waits for its slot. ``infer`` is submit + result. Image-to-keypoints engines take
``{input name: array}`` (uint8 images, boxes, box image indices); crop engines one array.

CUDA graphs (``cuda_graph=True``) are kept per slot, for the slot's current input shapes (see :mod:`._slot`).
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
from ._slot import EngineIO, Slot
from srpose.engines.base import Backend, Pending

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
    """A TensorRT engine behind the :class:`Backend` interface (see the module docstring).

    ``memory`` picks the CUDA helper for buffers and streams ("auto": torch CUDA, else cuda-python, else pycuda);
    ``slots`` the buffer sets (batches in flight; 1 turns the overlap off). ``infer`` and ``submit`` take numpy
    arrays, or (with torch memory) torch CUDA tensors, and return ``{output name: float32 array}``.
    ``last_timing_ms`` is the device time of the latest collected batch's enqueue (CUDA events);
    ``last_copy_ms`` the host<->device copies around it (measured from after the wait on the caller's stream).
    """

    name = "tensorrt"
    timing_source = "device"

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0, cuda_graph: bool = False,
                 memory: str = "auto", verbose: bool = False, slots: int = 2) -> None:
        super().__init__()
        self.last_wall_ms: float | None = None
        self._engine = self._runtime = None
        self._slots: list[Slot] = []
        self._ops_list: list[Any] = []
        trt = _compat.require_trt()
        if int(slots) < 1:
            raise ValueError(f"slots={slots} must be >= 1")
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"engine {self.engine_path} does not exist: build one with `srpose build`")
        self.card = read_engine_card(self.engine_path)
        self._check_version()
        try:
            for _ in range(int(slots)):
                self._ops_list.append(cuda.cuda_ops(memory, device))
            self._load(trt, cuda_graph, verbose)
        except BaseException:
            self.close()
            raise

    @property
    def _ops(self) -> Any:
        """The first slot's CUDA helper (device facts)."""
        return self._ops_list[0] if self._ops_list else None

    @property
    def slots(self) -> int:  # type: ignore[override]
        return len(self._slots)

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
        self.io = self._engine_io(trt)
        self.device_memory_bytes = _compat.engine_device_memory(self._engine)
        self._slots = [Slot(self._engine, ops, self.io, self.engine_path, cuda_graph=cuda_graph)
                       for ops in self._ops_list]
        self._next = 0
        self.precision = self.card.precision if self.card is not None else None

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

    def _engine_io(self, trt: Any) -> EngineIO:
        eng = self._engine
        inputs, outputs = [], []
        for i in range(eng.num_io_tensors):
            name = str(eng.get_tensor_name(i))
            (inputs if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        want = self.card.input_names if self.card is not None else None
        if not inputs or not outputs or (want is not None and sorted(want) != sorted(inputs)) or \
                (want is None and len(inputs) != 1):
            raise ValueError(f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}: expected "
                             f"{want or 'one image input'} and at least one output")
        if self.card is not None and sorted(self.card.output_names) != sorted(outputs):
            raise ValueError(f"engine {self.engine_path} has outputs {outputs} but its sidecar's card names "
                             f"{self.card.output_names}: {_compat.REBUILD_HINT}")
        inputs = list(want) if want is not None else inputs
        profiles = {n: tuple(tuple(int(v) for v in s) for s in eng.get_tensor_profile_shape(n, 0)) for n in inputs}
        dtypes = {n: _compat.nptype(eng.get_tensor_dtype(n)) for n in inputs + outputs}
        self.input_name, self.input_names, self.output_names = inputs[0], inputs, outputs
        #: each output's shape as the engine declares it (-1: dynamic)
        self.output_shapes = {n: tuple(int(v) for v in eng.get_tensor_shape(n)) for n in outputs}
        pmin, popt, pmax = profiles[inputs[0]]
        self.batch_range = (pmin[0], popt[0], pmax[0])
        self.input_shape = tuple(pmax[1:])  # C, H, W (the largest, when H and W are dynamic)
        self.input_shape_min = tuple(pmin[1:])
        self.dynamic_hw = self.input_shape_min != self.input_shape
        self.input_dtype = dtypes[inputs[0]]
        return EngineIO(inputs, outputs, dtypes, profiles)  # type: ignore[arg-type]

    def _check_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        if len(self.io.inputs) == 1 and not (self.card is not None and self.card.image_input):
            self._check_crop_shape(shapes[self.input_name])
            return
        for name in self.io.inputs:
            lo, _, hi = self.io.profiles[name]
            shape = tuple(shapes[name])
            if len(shape) != len(lo) or not all(a <= v <= b for a, v, b in zip(lo, shape, hi)):
                raise ValueError(f"input {name!r} of shape {shape} is outside the engine's profile {lo} .. {hi}: "
                                 "send fewer persons or images per call (or smaller images), or re-export with "
                                 "--batch / --image-batch / --shape-profile covering it and rebuild")

    def _check_crop_shape(self, shape: tuple[int, ...]) -> None:
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

    # -- Backend -----------------------------------------------------------------------------------------------

    @property
    def output_kind(self) -> str:
        """``heatmaps`` / ``keypoints`` / ``people`` / ``bottomup_candidates`` (the card's; ``heatmaps`` without a
        card)."""
        return self.card.output_kind if self.card is not None else "heatmaps"

    def _take_slot(self) -> Slot:
        """The next slot, its previous batch collected first (its outputs copied out) so its buffers are free."""
        if not self._slots:
            raise RuntimeError("TensorRTBackend is closed")
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.pending is not None:
            slot.pending.result()
        return slot

    def input_arrays(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """The next slot's pinned input arrays, shaped ``shapes``: fill them and :meth:`submit` them."""
        self._check_shapes(shapes)
        slot = self._take_slot()
        self._handed = slot
        return slot.host_views(shapes)

    def _feed(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            missing = [n for n in self.io.inputs if n not in inputs]
            if missing:
                raise ValueError(f"engine {self.engine_path.name} needs inputs {self.io.inputs}; missing {missing}")
            feed = {n: inputs[n] for n in self.io.inputs}
        elif len(self.io.inputs) == 1:
            feed = {self.input_name: inputs}
        else:
            raise ValueError(f"engine {self.engine_path.name} takes {self.io.inputs}: pass {{input name: array}}")
        ops = self._ops
        for n, x in feed.items():
            if not ops.is_device_array(x):
                host = x.detach().cpu().numpy() if hasattr(x, "detach") else x
                feed[n] = np.ascontiguousarray(host, dtype=self.io.dtypes[n])
        return feed

    def submit(self, inputs: Any) -> Pending:
        """Upload and enqueue a batch on the next slot (the slot whose arrays ``inputs`` are, after
        :meth:`input_arrays`); ``result()`` waits for it."""
        if not self._slots:
            raise RuntimeError("TensorRTBackend is closed")
        t0 = time.perf_counter()
        feed = self._feed(inputs)
        shapes = {n: tuple(int(v) for v in x.shape) for n, x in feed.items()}
        self._check_shapes(shapes)
        handed, self._handed = getattr(self, "_handed", None), None
        slot = handed if handed is not None and handed.owns(next(iter(feed.values()))) else self._take_slot()
        slot.set_shapes(shapes)
        slot.enqueue(feed, lambda: slot.run(self._capture_failed, self.graph_failure is not None))
        pending = Pending(lambda: self._collect(slot, t0))
        slot.pending = pending
        return pending

    def _capture_failed(self, e: Exception) -> None:
        self.graph_failure = f"{type(e).__name__}: {e}"
        warnings.warn(f"CUDA graph capture failed for {self.engine_path} ({self.graph_failure}); running without "
                      "CUDA graphs from now on")

    def _collect(self, slot: Slot, t0: float) -> dict[str, np.ndarray]:
        outs, self.last_timing_ms, self.last_copy_ms = slot.finish()
        slot.pending = None
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        return outs

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run a batch (N x C x H x W numpy or a torch CUDA tensor with torch memory; image engines: ``{input name:
        array}``) and wait for it: ``{name: float32 array}`` for every output of the engine."""
        return self.submit(images).result()

    def close(self) -> None:
        """Free the graphs, contexts, engine, device and pinned buffers, events and streams. Safe to call twice."""
        for slot in self._slots:
            slot.close()
        self._slots, self._handed = [], None
        self._engine = self._runtime = None
        ops_list, self._ops_list = self._ops_list, []
        for ops in ops_list:
            ops.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
