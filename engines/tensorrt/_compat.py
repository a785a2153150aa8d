"""The one place that imports TensorRT, probes its version features and owns the process's TensorRT logger.

TensorRT is optional: ``trt`` is ``None`` when it cannot be imported and ``TRT_IMPORT_ERROR`` keeps the reason.
Version differences are decided here by probing the bindings (``hasattr``), never by comparing version strings
elsewhere. Code elsewhere reads ``_compat.trt`` at call time through :func:`require_trt` (tests inject a fake
module object here).

Naming convention checked by ``tests/test_tensorrt_layer.py``: the TensorRT module is always called ``trt``, and
parameters holding TensorRT objects are annotated with a ``"trt.X"`` string. Functions and classes whose name
contains ``legacy`` serve TensorRT 10.x only (weakly typed builds); every other TensorRT name must exist in 10.x and
11.x.

TensorRT keeps one logger per process: a second ``trt.Logger`` handed to a Builder or Runtime is ignored (with a
warning). :func:`get_logger` therefore returns one logger per imported ``tensorrt`` module, as Polygraphy's
``get_trt_logger()`` does, and only changes its ``min_severity``. :func:`init_plugins` registers TensorRT's
plugin library once, before the first parse or deserialisation (Polygraphy's ``EngineFromBytes`` does the same).
"""
from __future__ import annotations

from typing import Any

import numpy as np

try:  # TensorRT wheels raise ImportError, or OSError when the CUDA/TensorRT libraries are missing.
    import tensorrt as trt

    TRT_IMPORT_ERROR: BaseException | None = None
except Exception as _e:  # noqa: BLE001 - any failure means "not usable here"
    trt = None
    TRT_IMPORT_ERROR = _e

INSTALL_HINT = "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"
REBUILD_HINT = "rebuild it on this machine with `srpose build MODEL.onnx --out ENGINE`"

__all__ = [
    "trt", "TRT_IMPORT_ERROR", "INSTALL_HINT", "REBUILD_HINT", "require_trt", "trt_version", "has_weak_typing",
    "strongly_typed_flags", "get_logger", "init_plugins", "engine_device_memory", "nptype", "dtype_name",
    "tensorrt_status",
]

# (tensorrt module, its one logger) and the modules whose plugin library is registered; keyed on the module
# object so that a test swapping ``trt`` gets fresh state without resetting anything.
_LOGGER: list[tuple[Any, Any]] = []
_PLUGINS_READY: list[Any] = []


def require_trt() -> Any:
    """The ``tensorrt`` module; RuntimeError with the install hint (and the import error) when it is absent."""
    if trt is None:
        detail = f" ({type(TRT_IMPORT_ERROR).__name__}: {TRT_IMPORT_ERROR})" if TRT_IMPORT_ERROR else ""
        raise RuntimeError(INSTALL_HINT + detail)
    return trt


def tensorrt_status(device: int = 0) -> str | None:
    """None when engines can be built and run here (TensorRT imports and CUDA device ``device`` answers through a
    CUDA library), otherwise the reason they cannot. Never raises: for reports and the demo/pipeline."""
    if trt is None:
        detail = f" ({type(TRT_IMPORT_ERROR).__name__}: {TRT_IMPORT_ERROR})" if TRT_IMPORT_ERROR else ""
        return "TensorRT is not installed" + detail
    from . import cuda

    try:
        gpu = cuda.gpu_info(device)
    except Exception as e:  # noqa: BLE001 - pycuda and others raise their own error types
        return f"CUDA device {device} is not usable ({type(e).__name__}: {e})"
    if gpu is None:
        return (f"no CUDA GPU {device} is visible (or no CUDA library: install a CUDA build of torch, or "
                "cuda-python, or pycuda)")
    return None


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


def get_logger(verbose: bool = False) -> Any:
    """The process's one TensorRT logger, printing warnings (or everything when ``verbose``).

    Created on first use; later calls only set its ``min_severity`` (a verbose build makes later calls verbose
    only if they ask for it, since every call sets the level it wants).
    """
    trt = require_trt()
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, trt.Logger(trt.Logger.WARNING))]
    return _set_severity(_LOGGER[0][1], verbose)


def _set_severity(logger: "trt.ILogger", verbose: bool) -> Any:
    trt = require_trt()
    logger.min_severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
    return logger


def init_plugins(logger: "trt.ILogger") -> None:
    """Register TensorRT's standard plugins once per process, before any parse or deserialisation.

    Without it, an engine with a plugin layer fails to deserialise (returns None) in a fresh process.
    """
    trt = require_trt()
    if any(m is trt for m in _PLUGINS_READY):
        return
    if not trt.init_libnvinfer_plugins(logger, ""):
        raise RuntimeError("TensorRT could not register its plugin library (init_libnvinfer_plugins failed): "
                           "check that libnvinfer_plugin is installed with the tensorrt package")
    _PLUGINS_READY[:] = [trt]


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
