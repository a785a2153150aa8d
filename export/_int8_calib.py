"""Calibration of :mod:`srpose.export.int8`: activation ranges computed batch by batch with ONNX Runtime's
calibrators, and the JSON cache of those ranges.

Histograms / min-max are merged per chunk of batches, so memory does not grow with the number of images. The cache
file holds one range per tensor, keyed by :func:`srpose.export.int8.calibration_cache_key`.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["CACHE_FORMAT", "quiet", "compute_ranges", "save_ranges", "load_ranges"]

#: version of the cache file layout; a file of another version is ignored (recalibrated)
CACHE_FORMAT = 2  # 2: the residual Adds and Resizes are calibrated too


class _ListReader:
    """A CalibrationDataReader over a list of input dicts."""

    def __init__(self, items: list[dict[str, np.ndarray]]):
        self._it = iter(items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _batches(data: Any, input_name: str) -> Iterator[dict[str, np.ndarray]]:
    """Input dicts of calibration ``data`` (arrays, dicts or a CalibrationDataReader)."""
    if hasattr(data, "get_next") and not hasattr(data, "__iter__"):
        while (item := data.get_next()) is not None:
            yield item
        return
    for item in data:
        if isinstance(item, dict):
            yield item
        else:
            arr = np.ascontiguousarray(item, dtype=np.float32)
            if arr.ndim != 4:
                raise ValueError(f"calibration batches must be N x 3 x H x W arrays, got shape {arr.shape}")
            yield {input_name: arr}


def _shapes(batch: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in batch.values()]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's prints and warnings (pre-processing advice, progress lines)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def compute_ranges(fp32_path: Path, data: Iterable[Any], method: Any, op_types: Sequence[str], input_name: str,
                   chunk: int, settings: dict[str, Any]) -> tuple[Any, int, int]:
    """(ranges, crops, batches): the activation ranges of the ``op_types`` inputs of ``fp32_path`` over ``data``
    (an onnxruntime ``TensorsData``), folded into the calibrator every ``chunk`` batches or change of shape."""
    from onnxruntime.quantization.calibrate import create_calibrator

    crops = batches = 0
    with tempfile.TemporaryDirectory(prefix="srpose-calib-") as tmp:
        calibrator = create_calibrator(fp32_path, list(op_types),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=method, extra_options=dict(settings))
        pending: list[dict[str, np.ndarray]] = []
        for batch in _batches(data, input_name):
            if pending and _shapes(batch) != _shapes(pending[0]):  # the histogram collector stacks a chunk
                calibrator.collect_data(_ListReader(pending))
                pending = []
            pending.append(batch)
            batches += 1
            crops += int(next(iter(batch.values())).shape[0])
            if len(pending) == chunk:
                calibrator.collect_data(_ListReader(pending))
                pending = []
        if pending:
            calibrator.collect_data(_ListReader(pending))
        if batches == 0:
            raise ValueError("the calibration data yielded no batches")
        ranges = calibrator.compute_data()
        del calibrator
    return ranges, crops, batches


def save_ranges(path: Path, key: str, method: str, ranges: Any, meta: dict[str, Any]) -> None:
    """Write ``ranges`` (one [low, high] per tensor) to cache file ``path`` under ``key`` (atomically)."""
    from srpose._io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: [float(np.asarray(td.range_value[0]).reshape(-1)[0]),
                   float(np.asarray(td.range_value[1]).reshape(-1)[0])] for name, td in ranges.items()}
    atomic_write_json(path, dict(format=CACHE_FORMAT, key=key, method=method, meta=meta,
                                 ranges=dict(sorted(data.items()))))


def load_ranges(path: Path, key: str, method_enum: Any) -> tuple[Any | None, dict[str, Any]]:
    """(ranges, meta) of a cache file, or (None, {}) when it is unreadable or for another key."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    try:
        d = json.loads(path.read_text())
        if d.get("format") != CACHE_FORMAT or d.get("key") != key:
            return None, {}
        ranges = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                  for name, (lo, hi) in d["ranges"].items()}
    except (OSError, ValueError, TypeError, KeyError):
        return None, {}
    return TensorsData(method_enum, ranges), dict(d.get("meta") or {})
