"""The interface of the CUDA helpers (:mod:`.cuda` opens one, :mod:`._cuda_libs` implements them)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["DeviceBuffer", "CudaGraph", "CudaOps", "capture_keeping_error", "stage"]


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


def stage(buf: DeviceBuffer, array: np.ndarray) -> int:
    """Put ``array`` at the start of ``buf``'s pinned host array (nothing to copy when it already lives there, e.g.
    the arrays a backend hands out to be filled); returns its element count."""
    n = int(array.size)
    if n > buf.capacity:
        raise ValueError(f"{n} elements do not fit a buffer of {buf.capacity}")
    if array.__array_interface__["data"][0] != buf.host.__array_interface__["data"][0]:
        buf.host[:n] = array.reshape(-1)
    return n


class CudaGraph:
    """An instantiated CUDA graph: :meth:`launch` replays it on the helper's stream; :meth:`close` frees it."""

    def __init__(self, launch: Callable[[], None], close: Callable[[], None] = lambda: None) -> None:
        self._launch, self._close = launch, close

    def launch(self) -> None:
        self._launch()

    def close(self) -> None:
        close, self._close = self._close, (lambda: None)
        close()


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
        """Copy a host array into the start of ``buf`` through its pinned host array (:func:`stage`: no staging
        copy for an array that is that pinned array)."""
        raise NotImplementedError

    def is_device_array(self, images: Any) -> bool:
        """Whether ``images`` already lives on this device (a torch CUDA tensor for the torch helper)."""
        return False

    def wait_for_caller(self) -> None:
        """Order the helper's stream after the work the caller queued on its own current stream (the producer of
        a device input). Call it before recording a start event, so the caller's work is not timed as a copy."""

    def upload_device(self, buf: DeviceBuffer, tensor: Any) -> None:
        """Copy a device tensor into ``buf`` on the device; call :meth:`wait_for_caller` first."""
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

    def capture(self, fn: Callable[[], None]) -> CudaGraph:
        """Capture ``fn``'s work on the stream into a CUDA graph. When ``fn`` or the capture fails, the capture
        is ended, the stream stays usable and ``fn``'s own exception propagates (never one from the cleanup)."""
        raise ValueError(f"CUDA graphs need memory='torch' or memory='cuda-python', not {self.kind!r}")

    def close(self) -> None:
        """Free every buffer, event, graph and stream this helper made. Safe to call twice."""


def capture_keeping_error(begin: Callable[[], None], fn: Callable[[], None], end: Callable[[], Any],
                          discard: Callable[[Any], None] = lambda graph: None) -> Any:
    """``begin()``, ``fn()``, ``end()`` -> the captured graph. When ``fn`` raises, the capture is still ended and
    whatever it produced is ``discard``-ed, but a failure of that cleanup (a capture invalidated by ``fn``'s error)
    is dropped: ``fn``'s exception is the one the caller sees."""
    begin()
    try:
        fn()
    except BaseException:
        try:
            discard(end())
        except Exception:  # noqa: BLE001 - the capture is invalid anyway; keep fn's error
            pass
        raise
    return end()
