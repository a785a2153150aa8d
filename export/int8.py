"""FP32 ONNX -> explicitly quantised INT8 ONNX (QuantizeLinear/DequantizeLinear) for strongly typed TensorRT.

TensorRT 11 has no calibrator API: INT8 comes from Q/DQ nodes in the graph. The graph is produced with ONNX
Runtime's ``quantize_static`` in QDQ format with TensorRT's conventions:

- symmetric int8 everywhere (zero points 0): ``ActivationSymmetric`` / ``WeightSymmetric``;
- weights per output channel (axis 0 for Conv/Gemm-with-transB, 1 for ConvTranspose and MatMul), activations per
  tensor;
- Q/DQ only on the *inputs* of the quantised ops (Conv, ConvTranspose, MatMul, Gemm by default): no Q/DQ on their
  outputs (``OpTypesToExcludeOutputQuantization``), so TensorRT fuses Conv+BN+ReLU(+Add) and picks the output type;
- biases stay float (``QuantizeBias=False``): TensorRT folds float biases into its int8 kernels itself;
- only MatMuls with a constant weight are quantised: the attention products of HRFormer and TransPose
  (activation x activation) stay in float unless ``quantize_activation_matmuls=True``;
- head output convolutions stay float by default (:data:`DEFAULT_EXCLUDE`): the SR heads' final grouped conv
  (``heatmap_head``, ``converge``) and the simple head's ``final_layer``; the in-graph flip/decoder have no
  quantisable ops.

Calibration ranges are computed batch by batch (histograms / min-max merged per chunk of batches, so memory does
not grow with the number of images) and cached in a JSON file keyed by the FP32 model's hash, the calibration
data's hash and the method; a re-export with the same key reuses the cache and skips calibration inference.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["CALIB_METHODS", "DEFAULT_EXCLUDE", "DEFAULT_OP_TYPES", "Int8Report", "quantize_int8",
           "resolve_excluded_nodes", "calibration_cache_key"]

#: ``--calib-method`` name -> onnxruntime CalibrationMethod member name.
CALIB_METHODS = {"entropy": "Entropy", "max": "MinMax", "minmax": "MinMax", "percentile": "Percentile"}
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: node-name patterns (fnmatch) left in float: the heads' output convolutions.
DEFAULT_EXCLUDE: tuple[str, ...] = ("*heatmap_head*", "*converge*", "*final_layer*", "/decode/*", "/flip_merge/*")
CACHE_FORMAT = 1


@dataclass
class Int8Report:
    """What the quantisation did."""

    method: str
    calibration_crops: int = 0
    calibration_batches: int = 0
    cache_file: str | None = None
    cache_hit: bool = False
    quantized_nodes: int = 0
    excluded_nodes: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_excluded_nodes(model: Any, patterns: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Names of the ``op_types`` nodes of ``model`` matching any of ``patterns`` (exact names or fnmatch)."""
    names = [n.name for n in model.graph.node if n.op_type in op_types]
    return [n for n in names if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)]


def calibration_cache_key(model_sha256: str, data_key: str, method: str, settings: dict[str, Any]) -> str:
    """sha256 identifying one calibration: model, data, method and calibrator settings."""
    blob = json.dumps(dict(model=model_sha256, data=data_key, method=method, settings=settings), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class _ListReader:
    """A CalibrationDataReader over a list of input dicts."""

    def __init__(self, items: list[dict[str, np.ndarray]]):
        self._it = iter(items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _batches(data: Any, input_name: str) -> Iterator[dict[str, np.ndarray]]:
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
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's prints and warnings (pre-processing advice, progress lines)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _calibrate(fp32_path: Path, data: Iterable[Any], method: Any, op_types: Sequence[str], input_name: str,
               chunk: int, settings: dict[str, Any], report: Int8Report) -> Any:
    from onnxruntime.quantization.calibrate import create_calibrator

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
            report.calibration_batches += 1
            report.calibration_crops += int(next(iter(batch.values())).shape[0])
            if len(pending) == chunk:
                calibrator.collect_data(_ListReader(pending))
                pending = []
        if pending:
            calibrator.collect_data(_ListReader(pending))
        if report.calibration_batches == 0:
            raise ValueError("the calibration data yielded no batches")
        ranges = calibrator.compute_data()
        del calibrator
    return ranges


def _save_ranges(path: Path, key: str, method: str, ranges: Any, meta: dict[str, Any]) -> None:
    from srpose._io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {name: [float(np.asarray(td.range_value[0]).reshape(-1)[0]),
                   float(np.asarray(td.range_value[1]).reshape(-1)[0])] for name, td in ranges.items()}
    atomic_write_json(path, dict(format=CACHE_FORMAT, key=key, method=method, meta=meta,
                                 ranges=dict(sorted(data.items()))))


def _load_ranges(path: Path, key: str, method_enum: Any) -> tuple[Any | None, dict[str, Any]]:
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


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[Any] | None, *,
                  method: str = "entropy", exclude: Sequence[str] = DEFAULT_EXCLUDE,
                  op_types: Sequence[str] = DEFAULT_OP_TYPES, cache_dir: str | Path | None = None,
                  data_key: str | None = None, input_name: str = "input", chunk_batches: int = 1,
                  percentile: float = 99.999, num_bins: int | None = None,
                  quantize_activation_matmuls: bool = False) -> Int8Report:
    """Write the Q/DQ INT8 version of the FP32 ONNX file ``fp32_path`` to ``out_path`` (atomically).

    ``calibration``: an iterable of N x 3 x H x W float32 batches (or ``{input_name: batch}`` dicts, or an ONNX
    Runtime ``CalibrationDataReader``), e.g. :class:`export.calibration.CalibrationReader`; may be ``None`` when the
    cache already holds the ranges. ``method``: entropy | max | percentile. ``exclude``: node names or fnmatch
    patterns kept in float (activation x activation MatMuls too, unless ``quantize_activation_matmuls``).
    ``chunk_batches``: batches whose intermediate tensors are held at once before they are folded into the
    histograms / ranges (1: memory bounded by one batch). ``cache_dir`` + ``data_key`` enable the calibration cache (``data_key`` identifies the
    data, e.g. ``CalibrationReader.data_key()``). The output's metadata gets ``precision="int8"`` and ``int8``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from srpose.export.onnx_export import model_sha256, set_metadata

    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"FP32 ONNX file {fp32_path} does not exist")
    _check_onnxruntime()
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r} is unknown: use one of entropy, max, percentile")
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
    method_enum = getattr(CalibrationMethod, CALIB_METHODS[method])
    op_types = list(op_types)
    model = onnx.load(str(fp32_path))
    excluded = resolve_excluded_nodes(model, exclude, op_types)
    if not quantize_activation_matmuls:
        weights = {t.name for t in model.graph.initializer}
        excluded += [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in excluded
                     and not (n.input[0] in weights or n.input[1] in weights)]
    unknown = [p for p in exclude if not any(ch in p for ch in "*?[") and p not in {n.name for n in model.graph.node}]
    if unknown:
        raise ValueError(f"nodes to exclude {unknown} are not in {fp32_path.name}; node names look like "
                         f"{[n.name for n in model.graph.node if n.op_type in op_types][:3]}")
    settings: dict[str, Any] = {}
    if method == "percentile":
        settings.update(percentile=float(percentile), symmetric=True)
    if num_bins is not None and method != "max":
        settings["num_bins"] = int(num_bins)
    report = Int8Report(method=method, excluded_nodes=excluded, op_types=op_types)

    cache_path = None
    key = None
    if cache_dir is not None and data_key is not None:
        key = calibration_cache_key(model_sha256(fp32_path), data_key, method, {**settings, "op_types": op_types})
        cache_path = Path(cache_dir) / f"{fp32_path.stem.split('.')[0]}.{method}.{key[:16]}.calib.json"
        report.cache_file = str(cache_path)
    ranges = None
    if cache_path is not None and cache_path.is_file():
        ranges, cached_meta = _load_ranges(cache_path, key, method_enum)
        if ranges is not None:
            report.calibration_crops = int(cached_meta.get("crops", 0))
            report.calibration_batches = int(cached_meta.get("batches", 0))
    report.cache_hit = ranges is not None
    if ranges is None:
        if calibration is None:
            raise ValueError("INT8 quantisation needs calibration data (no cached ranges for this model and data)")
        with _quiet():
            ranges = _calibrate(fp32_path, calibration, method_enum, op_types, input_name, chunk_batches, settings,
                                report)
        if cache_path is not None:
            _save_ranges(cache_path, key, method, ranges, dict(model=fp32_path.name, crops=report.calibration_crops,
                                                               batches=report.calibration_batches))

    extra = dict(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False,
                 OpTypesToExcludeOutputQuantization=op_types, DedicatedQDQPair=False)
    with tempfile.TemporaryDirectory(prefix="srpose-int8-") as tmp:
        ort_cache = Path(tmp) / "ranges.json"
        _write_ort_cache(ort_cache, ranges)
        out_tmp = Path(tmp) / "int8.onnx"
        with _quiet():
            quantize_static(str(fp32_path), str(out_tmp), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded, calibrate_method=method_enum, extra_options=extra,
                            calibration_cache_path=str(ort_cache))
        q = onnx.load(str(out_tmp))
    report.quantized_nodes = _count_quantized(q, op_types)
    del q.metadata_props[:]
    q.metadata_props.extend(model.metadata_props)
    # only what defines the graph goes into the file (no paths, no cache state): same inputs, same bytes
    set_metadata(q, {"precision": "int8", "int8": dict(
        method=method, calibration_crops=report.calibration_crops, calibration_key=key, op_types=op_types,
        excluded_nodes=excluded, quantized_nodes=report.quantized_nodes, settings=settings)})
    onnx.checker.check_model(q, full_check=True)
    from srpose._io import atomic_write_bytes

    atomic_write_bytes(out_path, q.SerializeToString(deterministic=True))
    return report


def _check_onnxruntime() -> None:
    """Fail early when onnxruntime cannot take precomputed ranges (``calibration_cache_path``)."""
    import inspect

    from onnxruntime.quantization import calibrate, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters \
            or not hasattr(calibrate, "save_tensors_data"):
        raise RuntimeError("INT8 export needs an onnxruntime whose quantize_static accepts calibration_cache_path "
                           "(a recent release, e.g. 1.32): pip install -U onnxruntime")


def _write_ort_cache(path: Path, ranges: Any) -> None:
    """Ranges in onnxruntime's own calibration-cache format, so ``quantize_static`` skips calibration."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)


def _count_quantized(model: Any, op_types: Sequence[str]) -> int:
    producers = {o: n for n in model.graph.node for o in n.output}
    count = 0
    for n in model.graph.node:
        if n.op_type in op_types and n.input and producers.get(n.input[0]) is not None \
                and producers[n.input[0]].op_type == "DequantizeLinear":
            count += 1
    return count
