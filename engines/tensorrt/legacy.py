"""The weakly typed build path of TensorRT 10.x: FP16 builder flag, INT8 entropy calibration (removed in 11.x).

Every function and class touching a 10.x-only TensorRT name has ``legacy`` in its name (the name check of
``tests/test_tensorrt_layer.py`` allows 10.x-only names there and nowhere else).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from srpose._io import atomic_write_bytes

from . import _compat

if TYPE_CHECKING:  # for the "trt.X" annotations only
    from ._compat import trt  # noqa: F401

__all__ = ["LEGACY_MODES", "check_legacy_supported", "rebatch_legacy", "make_legacy_calibrator",
           "apply_legacy_precision", "prepare_legacy_build"]

LEGACY_MODES = ("fp16", "int8")


def check_legacy_supported(legacy: str | None) -> None:
    """Refuse the weakly typed ``legacy`` path where TensorRT has removed it (11.x) or for an unknown value."""
    if legacy is None:
        return
    if legacy not in LEGACY_MODES:
        raise ValueError(f"legacy={legacy!r} must be None, 'fp16' or 'int8'")
    if not _compat.has_weak_typing():
        raise RuntimeError(
            f"TensorRT {_compat.trt_version()} removed weakly typed builds (the FP16/INT8 builder flags and INT8 "
            f"calibrators), so --legacy-{legacy} is unavailable: export the explicit {legacy.upper()} ONNX graph with "
            f"`srpose export --precision {legacy}` and build that file without --legacy-*")


def rebatch_legacy(arrays: Iterable[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    """Calibration batches of exactly ``n`` samples (``n`` = first batch's size when None); drops the remainder."""
    pending: list[np.ndarray] = []
    have = 0
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if n is None:
            n = a.shape[0]
        pending.append(a)
        have += a.shape[0]
        while have >= n:
            cat = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield cat[:n]
            rest = cat[n:]
            pending, have = ([rest] if len(rest) else []), len(rest)


def make_legacy_calibrator(trt: Any, batches: Iterable[np.ndarray], cache: Path | None, ops: Any) -> Any:
    """An entropy calibrator (TensorRT 10.x only) feeding ``batches`` through one device buffer of ``ops``."""

    class _LegacyEntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the pybind trampoline must be initialised explicitly
            self._it = iter(batches)
            self._buf = None
            self._first = next(self._it, None)
            self.count = 0

        @property
        def sample_shape(self) -> tuple[int, ...] | None:
            return None if self._first is None else tuple(self._first.shape)

        def get_batch_size(self) -> int:  # ignored for explicit-batch networks, must be positive
            return 1 if self._first is None else int(self._first.shape[0])

        def get_batch(self, names: list) -> list | None:
            if self._first is not None:
                a, self._first = self._first, None
            else:
                a = next(self._it, None)
            if a is None:
                return None
            if self._buf is None:
                self._buf = ops.alloc(a.size, np.float32)
            ops.upload(self._buf, a)
            ops.synchronize()
            self.count += 1
            return [self._buf.ptr] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.exists() and cache.stat().st_size:
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                atomic_write_bytes(cache, bytes(data))

    return _LegacyEntropyCalibrator()


def apply_legacy_precision(trt: Any, builder: "trt.Builder", config: "trt.IBuilderConfig", legacy: str,
                           input_name: str, sample_shape: Sequence[int] | None, calibrator: Any) -> None:
    """Weakly typed precision flags (TensorRT 10.x only)."""
    config.set_flag(trt.BuilderFlag.FP16)
    if legacy == "int8":
        # INT8 with FP16 fallback, as Ultralytics does; calibration runs at a fixed shape of its own.
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if sample_shape is not None:
            cal = builder.create_optimization_profile()
            cal.set_shape(input_name, tuple(sample_shape), tuple(sample_shape), tuple(sample_shape))
            config.set_calibration_profile(cal)


def prepare_legacy_build(trt: Any, builder: "trt.Builder", config: "trt.IBuilderConfig", *, legacy: str,
                         input_name: str, opt_batch: int, calib_batches: Iterable[np.ndarray] | None,
                         calib_cache: Path | None, ops: Any) -> Any:
    """Set the legacy precision on ``config``; returns the INT8 calibrator (None for FP16).

    INT8 batches are re-cut to the profile's opt batch and fed through a buffer of ``ops`` (the build's device).
    """
    calibrator = sample_shape = None
    if legacy == "int8":
        if ops is None:
            raise RuntimeError("--legacy-int8 needs a CUDA buffer library for the calibration batches: install a "
                               "CUDA build of torch, or pip install cuda-python (or pycuda)")
        calibrator = make_legacy_calibrator(trt, rebatch_legacy(calib_batches or (), opt_batch), calib_cache, ops)
        sample_shape = calibrator.sample_shape
        if sample_shape is None and not (calib_cache and calib_cache.exists()):
            raise ValueError(f"calibration gave fewer than {opt_batch} images (the profile's opt batch): give more "
                             "calibration images or a smaller opt batch")
    apply_legacy_precision(trt, builder, config, legacy, input_name, sample_shape, calibrator)
    return calibrator
