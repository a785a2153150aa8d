"""The three CUDA helpers behind :func:`srpose.engines.tensorrt.cuda.cuda_ops`: torch, cuda-python, pycuda.

The torch helper uses the torch module the calling process has already imported (``sys.modules``): the runtime
layer never imports torch, so it stays importable and usable where torch is absent or broken.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any, Callable

import numpy as np

from ._cuda_base import CudaGraph, CudaOps, DeviceBuffer, capture_keeping_error, stage

__all__ = ["HELPERS"]


def _cc(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"


class _TorchOps(CudaOps):
    """torch CUDA tensors and streams (lets preprocessing stay on the GPU)."""

    kind = "torch"
    supports_graphs = True

    def __init__(self, device: int) -> None:
        torch = sys.modules.get("torch")  # the caller's torch: the runtime layer never imports it itself
        if torch is None:
            raise RuntimeError("memory='torch' works with the torch of the calling process, and torch is not "
                               "imported: `import torch` (a CUDA build) before opening the engine, or use "
                               "memory='cuda-python' (pip install cuda-python) or memory='pycuda'")
        if not torch.cuda.is_available():
            raise RuntimeError("memory='torch' needs a CUDA build of torch and a GPU (torch.cuda.is_available() is "
                               "False): install a CUDA torch, or use memory='cuda-python' (pip install cuda-python) "
                               "or memory='pycuda'")
        self._torch = torch
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.stream: Any = torch.cuda.Stream(device=self.device)
        self.stream_handle = int(self.stream.cuda_stream)
        self._buffers: list[DeviceBuffer] = []
        self._events: list = []
        self._graphs: list = []

    def gpu(self) -> dict:
        p = self._torch.cuda.get_device_properties(self.device)
        return {"name": p.name, "compute_capability": _cc(p.major, p.minor)}

    def alloc(self, capacity: int, dtype: Any) -> DeviceBuffer:
        torch = self._torch
        tdtype = torch.from_numpy(np.empty(0, dtype)).dtype
        dev = torch.empty(int(capacity), dtype=tdtype, device=self.device)
        host = torch.empty(int(capacity), dtype=tdtype, pin_memory=True)
        buf = DeviceBuffer(dev.data_ptr(), capacity, dtype, host.numpy(), handle=(dev, host))
        self._buffers.append(buf)
        return buf

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        n = stage(buf, array)
        dev, host = buf.handle
        with self._torch.cuda.stream(self.stream):
            dev[:n].copy_(host[:n], non_blocking=True)

    def is_device_array(self, images: Any) -> bool:
        return isinstance(images, self._torch.Tensor) and images.is_cuda

    def wait_for_caller(self) -> None:
        self.stream.wait_stream(self._torch.cuda.current_stream(self.device))

    def upload_device(self, buf: DeviceBuffer, tensor: Any) -> None:
        dev, _ = buf.handle
        with self._torch.cuda.stream(self.stream):
            dev[: tensor.numel()].copy_(tensor.reshape(-1), non_blocking=True)

    def download(self, buf: DeviceBuffer, count: int) -> np.ndarray:
        dev, host = buf.handle
        with self._torch.cuda.stream(self.stream):
            host[:count].copy_(dev[:count], non_blocking=True)
        return buf.host[:count]

    def event(self) -> Any:
        ev = self._torch.cuda.Event(enable_timing=True)
        self._events.append(ev)
        return ev

    def record(self, event: Any) -> None:
        event.record(self.stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, fn: Callable[[], None]) -> CudaGraph:
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        self.stream.synchronize()
        with torch.cuda.stream(self.stream):  # left whatever happens inside, so the caller's stream is restored
            # thread_local: TensorRT may query the stream from its own calls while the capture is open.
            capture_keeping_error(lambda: graph.capture_begin(capture_error_mode="thread_local"), fn,
                                  graph.capture_end, lambda _: graph.reset())
        self._graphs.append(graph)

        def launch() -> None:
            with torch.cuda.stream(self.stream):  # replay() launches on the current stream
                graph.replay()

        def close() -> None:
            if graph in self._graphs:
                self._graphs.remove(graph)
            graph.reset()

        return CudaGraph(launch, close)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()
        for graph in self._graphs:
            graph.reset()
        for buf in self._buffers:  # drop the tensors: device and pinned memory go back to torch's allocators
            buf.handle, buf.host = None, None
        self._graphs, self._events, self._buffers, self.stream = [], [], [], None


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
        self._dev: list = []
        self._host: list = []
        self._events: list = []
        self._graphs: list = []
        self._stream = None
        self._ck(cudart.cudaSetDevice(self.device))
        self._stream = self._ck(cudart.cudaStreamCreate())
        self.stream_handle = int(self._stream)

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
        n = stage(buf, array)
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

    def capture(self, fn: Callable[[], None]) -> CudaGraph:
        rt = self._rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        graph = capture_keeping_error(lambda: self._ck(rt.cudaStreamBeginCapture(self._stream, mode)), fn,
                                      lambda: self._ck(rt.cudaStreamEndCapture(self._stream)),
                                      lambda g: g is not None and rt.cudaGraphDestroy(g))
        try:
            exe = self._ck(rt.cudaGraphInstantiate(graph, 0))
        finally:
            rt.cudaGraphDestroy(graph)  # the instantiated graph keeps what it needs
        if isinstance(exe, tuple):  # some cuda-python releases also return the error node
            exe = exe[0]
        self._graphs.append(exe)

        def close() -> None:
            if exe in self._graphs:
                self._graphs.remove(exe)
                rt.cudaGraphExecDestroy(exe)

        return CudaGraph(lambda: self._ck(rt.cudaGraphLaunch(exe, self._stream)), close)

    def close(self) -> None:
        rt = self._rt
        if self._stream is not None:
            rt.cudaStreamSynchronize(self._stream)
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
    """``pycuda`` on the device's primary context (shared with TensorRT's runtime API calls). No CUDA graphs.

    The primary context stays pushed (current on this thread) until :meth:`close`, so TensorRT works on this
    device in between."""

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
        self._allocs.append((mem, host))
        return DeviceBuffer(int(mem), capacity, dtype, host, handle=mem)

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        n = stage(buf, array)
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
        if self._ctx is None:
            return
        self._stream.synchronize()
        for mem, host in self._allocs:
            mem.free()
            base = getattr(host, "base", None)  # pagelocked_empty's HostAllocation
            if hasattr(base, "free"):
                base.free()
        self._allocs = []
        self._ctx.pop()
        self._ctx = None


#: memory kind -> helper class
HELPERS: dict[str, type] = {"torch": _TorchOps, "cuda-python": _CudaPythonOps, "pycuda": _PycudaOps}
