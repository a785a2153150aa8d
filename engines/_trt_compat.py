"""The one place that imports TensorRT and probes version features; CUDA buffer/stream helpers.

TensorRT is optional: ``trt`` is ``None`` when it cannot be imported and ``TRT_IMPORT_ERROR`` keeps the reason.
Version differences are decided here by probing the bindings (``hasattr``), never by comparing version strings
elsewhere. Code elsewhere reads ``_trt_compat.trt`` at call time (tests inject a fake module object here).

Naming convention checked by ``tests/test_tensorrt_layer.py``: the TensorRT module is always called ``trt``, and
parameters holding TensorRT objects are annotated with a ``"trt.X"`` string. Functions and classes whose name
contains ``legacy`` serve TensorRT 10.x only (weakly typed builds); every other TensorRT name must exist in 10.x and
11.x.

CUDA helpers (:func:`cuda_ops`): device buffers, pinned host staging, one stream, timing events and CUDA graphs,
backed by torch CUDA tensors, ``cuda-python`` (``cuda.bindings.runtime``) or ``pycuda``.
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable

import numpy as np

try:  # TensorRT wheels raise ImportError, or OSError when the CUDA/TensorRT libraries are missing.
    import tensorrt as trt

    TRT_IMPORT_ERROR: BaseException | None = None
except Exception as _e:  # noqa: BLE001 - any failure means "not usable here"
    trt = None
    TRT_IMPORT_ERROR = _e

INSTALL_HINT = "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"
MEMORY_KINDS = ("auto", "torch", "cuda-python", "pycuda")

__all__ = [
    "trt", "TRT_IMPORT_ERROR", "INSTALL_HINT", "MEMORY_KINDS", "require_trt", "trt_version", "has_weak_typing",
    "strongly_typed_flags", "make_logger", "engine_device_memory", "nptype", "dtype_name", "cuda_ops", "CudaOps",
    "DeviceBuffer",
]


# ----------------------------------------------------------------------------------------- TensorRT probes


def require_trt() -> Any:
    """The ``tensorrt`` module; RuntimeError with the install hint (and the import error) when it is absent."""
    if trt is None:
        detail = f" ({type(TRT_IMPORT_ERROR).__name__}: {TRT_IMPORT_ERROR})" if TRT_IMPORT_ERROR else ""
        raise RuntimeError(INSTALL_HINT + detail)
    return trt


def trt_version() -> str:
    """Version string of the installed TensorRT bindings."""
    trt = require_trt()
    return str(trt.__version__)


def has_weak_typing() -> bool:
    """Whether precision builder flags (weakly typed networks) exist: TensorRT 10.x yes, 11.x no.

    TensorRT 11 removed ``BuilderFlag.FP16/INT8`` and the INT8 calibrators; networks are always strongly typed.
    """
    trt = require_trt()
    return hasattr(trt.BuilderFlag, "FP16")


def strongly_typed_flags() -> int:
    """``create_network`` flags for a strongly typed network.

    10.x needs the STRONGLY_TYPED flag; on 11.x the flag still exists but does nothing (always strongly typed),
    so 0 is passed there. EXPLICIT_BATCH is never used: deprecated in 10 (always explicit), gone in 11.
    """
    trt = require_trt()
    if has_weak_typing():
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def make_logger(verbose: bool = False) -> Any:
    """A TensorRT logger printing warnings (or everything when ``verbose``)."""
    trt = require_trt()
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def engine_device_memory(engine: "trt.ICudaEngine") -> int | None:
    """Device memory (bytes) the engine's execution context needs.

    ``device_memory_size`` was removed in 11.x; ``device_memory_size_v2`` exists since 10.0. The old name is probed
    only as a fallback for bindings without the new one.
    """
    if hasattr(engine, "device_memory_size_v2"):
        return int(engine.device_memory_size_v2)
    if hasattr(engine, "device_memory_size"):
        return int(getattr(engine, "device_memory_size"))
    return None


def nptype(dtype: "trt.DataType") -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType``; TypeError naming the type when numpy has none (bf16, fp8)."""
    trt = require_trt()
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as e:
        raise TypeError(f"TensorRT data type {dtype} has no numpy equivalent: keep the engine's I/O tensors in "
                        "float32/float16 (export with keep_io_types)") from e


def dtype_name(dtype: "trt.DataType") -> str:
    """A short name for a TensorRT ``DataType`` (numpy name when there is one, e.g. ``float32``)."""
    try:
        return nptype(dtype).name
    except TypeError:
        return str(dtype).split(".")[-1].lower()


# ----------------------------------------------------------------------------------------- CUDA helpers


class DeviceBuffer:
    """A device allocation of ``capacity`` elements of ``dtype`` plus its pinned host staging array."""

    def __init__(self, ptr: int, capacity: int, dtype: np.dtype, host: np.ndarray, handle: Any = None) -> None:
        self.ptr = int(ptr)
        self.capacity = int(capacity)
        self.dtype = np.dtype(dtype)
        self.host = host  # 1-D pinned numpy array of ``capacity`` elements
        self.handle = handle  # the owning object (torch tensor pair, pycuda allocation, ...)

    @property
    def nbytes(self) -> int:
        return self.capacity * self.dtype.itemsize


class CudaOps:
    """Buffers, one stream, events and graphs on one GPU. All copies are asynchronous on ``stream_handle``."""

    kind = "base"
    supports_graphs = False
    stream_handle: int = 0

    def gpu(self) -> dict:
        """``{"name": ..., "compute_capability": "M.m"}`` of the device."""
        raise NotImplementedError

    def alloc(self, capacity: int, dtype: Any) -> DeviceBuffer:
        """Device memory for ``capacity`` elements with pinned host staging."""
        raise NotImplementedError

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        """Copy a host array into the start of ``buf`` (through the pinned staging array)."""
        raise NotImplementedError

    def upload_device(self, buf: DeviceBuffer, tensor: Any) -> None:
        """Copy a torch CUDA tensor into ``buf`` on the device (torch helper only)."""
        raise TypeError(f"memory={self.kind!r} cannot take torch CUDA tensors: pass a numpy array or use "
                        "memory='torch'")

    def download(self, buf: DeviceBuffer, count: int) -> np.ndarray:
        """Queue a copy of the first ``count`` elements to the staging array; valid after ``synchronize``."""
        raise NotImplementedError

    def event(self) -> Any:
        raise NotImplementedError

    def record(self, event: Any) -> None:
        raise NotImplementedError

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (after ``synchronize``)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Capture ``fn``'s work on the stream into a CUDA graph; returns a function that launches it."""
        raise ValueError(f"CUDA graphs need memory='torch' or memory='cuda-python', not {self.kind!r}")

    def close(self) -> None:
        """Free everything this helper allocated. Safe to call twice."""


def _cc(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"


class _TorchOps(CudaOps):
    """torch CUDA tensors and streams (lets preprocessing stay on the GPU)."""

    kind = "torch"
    supports_graphs = True

    def __init__(self, device: int) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("memory='torch' needs a CUDA build of torch and a GPU (torch.cuda.is_available() is "
                               "False): install a CUDA torch, or use memory='cuda-python' (pip install cuda-python) "
                               "or memory='pycuda'")
        self._torch = torch
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.stream_handle = int(self.stream.cuda_stream)
        self._graphs: list = []

    def gpu(self) -> dict:
        p = self._torch.cuda.get_device_properties(self.device)
        return {"name": p.name, "compute_capability": _cc(p.major, p.minor)}

    def alloc(self, capacity: int, dtype: Any) -> DeviceBuffer:
        torch = self._torch
        tdtype = torch.from_numpy(np.empty(0, dtype)).dtype
        dev = torch.empty(int(capacity), dtype=tdtype, device=self.device)
        host = torch.empty(int(capacity), dtype=tdtype, pin_memory=True)
        return DeviceBuffer(dev.data_ptr(), capacity, dtype, host.numpy(), handle=(dev, host))

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        n = array.size
        buf.host[:n] = array.reshape(-1)
        dev, host = buf.handle
        with self._torch.cuda.stream(self.stream):
            dev[:n].copy_(host[:n], non_blocking=True)

    def upload_device(self, buf: DeviceBuffer, tensor: Any) -> None:
        dev, _ = buf.handle
        # The producer of ``tensor`` ran on the caller's current stream: order our copy after it.
        self.stream.wait_stream(self._torch.cuda.current_stream(self.device))
        with self._torch.cuda.stream(self.stream):
            dev[: tensor.numel()].copy_(tensor.reshape(-1), non_blocking=True)

    def download(self, buf: DeviceBuffer, count: int) -> np.ndarray:
        dev, host = buf.handle
        with self._torch.cuda.stream(self.stream):
            host[:count].copy_(dev[:count], non_blocking=True)
        return buf.host[:count]

    def event(self) -> Any:
        return self._torch.cuda.Event(enable_timing=True)

    def record(self, event: Any) -> None:
        event.record(self.stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        # thread_local: TensorRT may query the stream from its own calls while the capture is open.
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            fn()
        self._graphs.append(graph)

        def launch() -> None:
            with torch.cuda.stream(self.stream):  # replay() launches on the current stream
                graph.replay()

        return launch

    def close(self) -> None:
        self._graphs.clear()


class _CudaPythonOps(CudaOps):
    """NVIDIA ``cuda-python`` runtime bindings (what TensorRT's own samples use since 10.13)."""

    kind = "cuda-python"
    supports_graphs = True

    def __init__(self, device: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python layout
            except ImportError as e:
                raise RuntimeError("memory='cuda-python' needs cuda-python: pip install cuda-python") from e
        self._rt = cudart
        self.device = int(device)
        self._ck(cudart.cudaSetDevice(self.device))
        self._stream = self._ck(cudart.cudaStreamCreate())
        self.stream_handle = int(self._stream)
        self._dev: list = []
        self._host: list = []
        self._events: list = []
        self._graphs: list = []

    def _ck(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = self._rt.cudaGetErrorString(err)[1]
            raise RuntimeError(f"CUDA error {int(err)}: {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def gpu(self) -> dict:
        p = self._ck(self._rt.cudaGetDeviceProperties(self.device))
        name = p.name.decode(errors="replace") if isinstance(p.name, bytes) else str(p.name)
        return {"name": name.rstrip("\x00"), "compute_capability": _cc(p.major, p.minor)}

    def alloc(self, capacity: int, dtype: Any) -> DeviceBuffer:
        dtype = np.dtype(dtype)
        nbytes = max(int(capacity) * dtype.itemsize, 1)
        dptr = int(self._ck(self._rt.cudaMalloc(nbytes)))
        self._dev.append(dptr)
        hptr = int(self._ck(self._rt.cudaMallocHost(nbytes)))
        self._host.append(hptr)
        raw = np.ctypeslib.as_array(ctypes.cast(hptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        return DeviceBuffer(dptr, capacity, dtype, raw[: int(capacity) * dtype.itemsize].view(dtype))

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        n = array.size
        buf.host[:n] = array.reshape(-1)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ck(self._rt.cudaMemcpyAsync(buf.ptr, buf.host.ctypes.data, n * buf.dtype.itemsize, kind, self._stream))

    def download(self, buf: DeviceBuffer, count: int) -> np.ndarray:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ck(self._rt.cudaMemcpyAsync(buf.host.ctypes.data, buf.ptr, count * buf.dtype.itemsize, kind,
                                          self._stream))
        return buf.host[:count]

    def event(self) -> Any:
        ev = self._ck(self._rt.cudaEventCreate())
        self._events.append(ev)
        return ev

    def record(self, event: Any) -> None:
        self._ck(self._rt.cudaEventRecord(event, self._stream))

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._ck(self._rt.cudaEventElapsedTime(start, end)))

    def synchronize(self) -> None:
        self._ck(self._rt.cudaStreamSynchronize(self._stream))

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        rt = self._rt
        self._ck(rt.cudaStreamBeginCapture(self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            fn()
        finally:
            graph = self._ck(rt.cudaStreamEndCapture(self._stream))
        exe = self._ck(rt.cudaGraphInstantiate(graph, 0))
        if isinstance(exe, tuple):  # some cuda-python releases also return the error node
            exe = exe[0]
        self._ck(rt.cudaGraphDestroy(graph))  # the instantiated graph keeps what it needs
        self._graphs.append(exe)
        return lambda: self._ck(rt.cudaGraphLaunch(exe, self._stream))

    def close(self) -> None:
        rt = self._rt
        for exe in self._graphs:
            rt.cudaGraphExecDestroy(exe)
        for ev in self._events:
            rt.cudaEventDestroy(ev)
        for p in self._dev:
            rt.cudaFree(p)
        for p in self._host:
            rt.cudaFreeHost(p)
        if self._stream is not None:
            rt.cudaStreamDestroy(self._stream)
        self._graphs, self._events, self._dev, self._host, self._stream = [], [], [], [], None


class _PycudaOps(CudaOps):
    """``pycuda`` on the device's primary context (shared with TensorRT's runtime API calls). No CUDA graphs."""

    kind = "pycuda"

    def __init__(self, device: int) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise RuntimeError("memory='pycuda' needs pycuda: pip install pycuda") from e
        cuda.init()
        self._cuda = cuda
        self._dev = cuda.Device(int(device))
        # The primary context, not pycuda.autoinit's private one: TensorRT uses the runtime API (primary context).
        self._ctx = self._dev.retain_primary_context()
        self._ctx.push()
        self._stream = cuda.Stream()
        self.stream_handle = int(self._stream.handle)
        self._allocs: list = []

    def gpu(self) -> dict:
        major, minor = self._dev.compute_capability()
        return {"name": self._dev.name(), "compute_capability": _cc(major, minor)}

    def alloc(self, capacity: int, dtype: Any) -> DeviceBuffer:
        dtype = np.dtype(dtype)
        mem = self._cuda.mem_alloc(max(int(capacity) * dtype.itemsize, 1))
        host = self._cuda.pagelocked_empty(int(capacity), dtype)
        self._allocs.append(mem)
        return DeviceBuffer(int(mem), capacity, dtype, host, handle=mem)

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        n = array.size
        buf.host[:n] = array.reshape(-1)
        self._cuda.memcpy_htod_async(buf.ptr, buf.host[:n], self._stream)

    def download(self, buf: DeviceBuffer, count: int) -> np.ndarray:
        self._cuda.memcpy_dtoh_async(buf.host[:count], buf.ptr, self._stream)
        return buf.host[:count]

    def event(self) -> Any:
        return self._cuda.Event()

    def record(self, event: Any) -> None:
        event.record(self._stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(end.time_since(start))

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        for mem in self._allocs:
            mem.free()
        self._allocs = []
        if self._ctx is not None:
            self._ctx.pop()
            self._ctx = None


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_memory(kind: str) -> str:
    """The concrete helper for ``kind``: ``auto`` picks torch CUDA, then cuda-python, then pycuda."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"memory={kind!r} is not one of {MEMORY_KINDS}")
    if kind != "auto":
        return kind
    if _torch_cuda_available():
        return "torch"
    if _module_available("cuda"):
        return "cuda-python"
    if _module_available("pycuda"):
        return "pycuda"
    raise RuntimeError("no CUDA buffer library found: install a CUDA build of torch, or pip install cuda-python "
                       "(or pycuda)")


def cuda_ops(kind: str = "auto", device: int = 0) -> CudaOps:
    """CUDA buffers/stream/events on ``device`` backed by ``kind`` (see :data:`MEMORY_KINDS`)."""
    kind = resolve_memory(kind)
    cls = {"torch": _TorchOps, "cuda-python": _CudaPythonOps, "pycuda": _PycudaOps}[kind]
    return cls(device)


def gpu_info(device: int = 0, memory: str = "auto") -> dict | None:
    """Name and compute capability of ``device``, or None when no CUDA library can tell."""
    try:
        ops = cuda_ops(memory, device)
    except RuntimeError:
        return None
    try:
        return ops.gpu()
    finally:
        ops.close()
