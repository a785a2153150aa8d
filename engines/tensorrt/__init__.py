"""TensorRT (optional): build strongly typed engines from ONNX files and run them as a backend.

- :mod:`._compat`: the one place importing ``tensorrt`` (``trt`` is None without it), feature probes, the one
  process-wide TensorRT logger and the plugin registration.
- :mod:`.cuda`: CUDA buffers, stream, events and graphs (torch, cuda-python or pycuda).
- :mod:`.onnx_card` / :mod:`.onnx_check`: the card and optimisation profile of an ONNX file; whether TensorRT 10's
  ONNX parser takes it.
- :mod:`.build` (+ :mod:`.legacy`, TensorRT 10.x weak typing): :func:`build_engine` with :class:`BuildOptions`.
- :mod:`.runtime`: :class:`TensorRTBackend`.

``trt`` and ``TRT_IMPORT_ERROR`` are read from :mod:`._compat` at access time (tests swap in a fake module there).
"""
from __future__ import annotations

from typing import Any

from srpose.card import sidecar_path

from . import _compat, cuda
from ._compat import INSTALL_HINT, REBUILD_HINT, has_weak_typing, require_trt, tensorrt_status, trt_version
from .build import BuildOptions, build_engine
from .cuda import MEMORY_KINDS, gpu_info
from .legacy import check_legacy_supported
from .onnx_check import OnnxCheckError, Problem, check_onnx_for_tensorrt
from .runtime import TensorRTBackend

__all__ = [
    "TensorRTBackend", "BuildOptions", "build_engine", "check_legacy_supported", "check_onnx_for_tensorrt",
    "Problem", "OnnxCheckError", "tensorrt_status", "require_trt", "trt_version", "has_weak_typing", "gpu_info",
    "sidecar_path", "MEMORY_KINDS", "INSTALL_HINT", "REBUILD_HINT", "trt", "TRT_IMPORT_ERROR", "cuda",
]


def __getattr__(name: str) -> Any:
    if name in ("trt", "TRT_IMPORT_ERROR"):
        return getattr(_compat, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
