"""CUDA helpers for the TensorRT layer: device buffers with pinned host staging, one stream, timing events and
CUDA graphs, backed by torch CUDA tensors, ``cuda-python`` (``cuda.bindings.runtime``) or ``pycuda``.

``memory="auto"`` picks torch when the calling process has imported a CUDA build of torch (this layer never imports
torch itself), else cuda-python when its runtime bindings are installed (``cuda.bindings.runtime`` or the older
``cuda.cudart``; a bare ``cuda`` namespace package from another NVIDIA wheel does not count), else pycuda.

:func:`cuda_ops` opens one helper on one device; creating it makes that device current for the calling thread
(what TensorRT's builder and runtime then use), and :meth:`CudaOps.close` frees everything it allocated.
"""
from __future__ import annotations

import importlib.util
import sys

from ._cuda_base import CudaGraph, CudaOps, DeviceBuffer
from ._cuda_libs import HELPERS

__all__ = ["MEMORY_KINDS", "DeviceBuffer", "CudaGraph", "CudaOps", "resolve_memory", "cuda_ops", "gpu_info"]

MEMORY_KINDS = ("auto", "torch", "cuda-python", "pycuda")


def _torch_cuda_available() -> bool:
    """torch of the calling process (never imported here: the runtime layer stays torch-free) with a GPU."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and hasattr(torch, "cuda") and torch.cuda.is_available())


def _module_available(name: str) -> bool:
    """Whether ``name`` (dotted) can be imported, without importing it; False when a parent is missing."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _cuda_python_available() -> bool:
    """cuda-python's runtime bindings, not just any ``cuda`` namespace package (other NVIDIA wheels install one)."""
    return _module_available("cuda.bindings.runtime") or _module_available("cuda.cudart")


def resolve_memory(kind: str) -> str:
    """The concrete helper for ``kind``: ``auto`` picks torch CUDA, then cuda-python, then pycuda."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"memory={kind!r} is not one of {MEMORY_KINDS}")
    if kind != "auto":
        return kind
    if _torch_cuda_available():
        return "torch"
    if _cuda_python_available():
        return "cuda-python"
    if _module_available("pycuda.driver"):
        return "pycuda"
    raise RuntimeError("no CUDA buffer library found: install a CUDA build of torch, or pip install cuda-python "
                       "(or pycuda)")


def cuda_ops(kind: str = "auto", device: int = 0) -> CudaOps:
    """CUDA buffers/stream/events on ``device`` (made current for this thread), backed by ``kind``."""
    kind = resolve_memory(kind)
    return HELPERS[kind](device)


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
