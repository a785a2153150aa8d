"""FP32 ONNX -> the explicitly quantised INT8 ONNX graph (QuantizeLinear/DequantizeLinear) TensorRT builds as
written (strongly typed).

TensorRT 11 has no calibrator API: INT8 comes from Q/DQ nodes in the graph, and every other tensor runs in the type
the graph gives it. The graph (:mod:`srpose.export._int8_graph`, placement :mod:`srpose.export._int8_place`):

- Q/DQ pairs where TensorRT's placement rules want them: both inputs of every quantised Conv, ConvTranspose, Gemm
  and MatMul-with-a-weight (activations per tensor, weights per output channel), the residual input of every
  residual Add fused into a quantised op, and the input of a Resize feeding a quantised op through a Concat; no
  Q/DQ on the outputs of weighted ops, none between a conv and its activation; symmetric int8, zero points 0;
- float16 everywhere else (Q/DQ with float16 scales, opset 19), except the FP16 graph's float32 islands
  (normalisations, softmax, reductions, the decoder: :data:`srpose.export.fp16.DEFAULT_KEEP_FP32_OPS` / ``_NODES``);
- layers left out of INT8 (``exclude``) read the unquantised tensor and run in float16;
- only MatMuls with a constant weight are quantised: the attention products of HRFormer and TransPose
  (activation x activation) stay float16 unless ``quantize_activation_matmuls=True``;
- the heads' output convs are INT8 too (measured: docs/benchmarks.md, "AP-guided INT8 search"); the in-graph flip
  merge and decoder have no quantisable op worth it and stay out (:data:`DEFAULT_EXCLUDE`).

Calibration ranges are computed batch by batch (histograms / min-max merged per chunk of batches, so memory does
not grow with the number of images) and cached in a JSON file keyed by the FP32 model's hash, the calibration
data's hash and the method; a re-export with the same key reuses the cache and skips calibration inference.

:func:`quantize_int8` is two steps that can also be run separately: :func:`calibration_ranges` (computed or cached
ranges of one model on one calibration set) and :func:`write_qdq_model` (the INT8 graph of given ranges and a given
set of excluded nodes), so one calibration serves several exclusion sets. The calibration machinery and the cache
file are :mod:`srpose.export._int8_calib`.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from srpose.export._int8_calib import CACHE_FORMAT  # noqa: F401 - the cache's file format, importable from here
from srpose.export._int8_calib import compute_ranges, load_ranges, quiet, save_ranges
from srpose.export._int8_graph import DEFAULT_OP_TYPES
from srpose.export._int8_place import PLACEMENT_OP_TYPES
from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS

__all__ = ["CALIB_METHODS", "DEFAULT_EXCLUDE", "DEFAULT_OP_TYPES", "Int8Report", "CalibrationRanges",
           "quantize_int8", "calibration_ranges", "write_qdq_model", "resolve_excluded_nodes",
           "calibration_cache_key", "range_amax"]

#: ``--calib-method`` name -> onnxruntime CalibrationMethod member name.
CALIB_METHODS = {"entropy": "Entropy", "max": "MinMax", "minmax": "MinMax", "percentile": "Percentile"}
#: node-name patterns (fnmatch) never quantised by default: the in-graph decoder and flip merge.
DEFAULT_EXCLUDE: tuple[str, ...] = ("/decode/*", "/flip_merge/*")


@dataclass
class Int8Report:
    """What the quantisation did: calibration, the nodes left out of INT8 and the ones quantised, the residual
    Adds given a quantised input, the Q/DQ pairs on activations, and the float16 rewrite's counts."""

    method: str
    calibration_crops: int = 0
    calibration_batches: int = 0
    cache_file: str | None = None
    cache_hit: bool = False
    quantized_nodes: int = 0
    excluded_nodes: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=list)
    residual_adds: int = 0
    activation_qdq: int = 0
    opset: int = 0
    fp16: dict[str, Any] = field(default_factory=dict)
    engine: str = "srpose"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CalibrationRanges:
    """Activation ranges of one FP32 model on one calibration set (:func:`calibration_ranges`), ready for
    :func:`write_qdq_model`."""

    method: str  # entropy | max | percentile
    op_types: list[str]  # the quantisable op types whose inputs have ranges
    settings: dict[str, Any]  # calibrator settings (percentile, num_bins)
    ranges: Any  # onnxruntime.quantization.calibrate.TensorsData
    crops: int = 0
    batches: int = 0
    key: str | None = None  # calibration_cache_key, when a cache is used
    cache_file: str | None = None
    cache_hit: bool = False


def resolve_excluded_nodes(model: Any, patterns: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Names of the ``op_types`` nodes of ``model`` matching any of ``patterns`` (exact names or fnmatch)."""
    names = [n.name for n in model.graph.node if n.op_type in op_types]
    return [n for n in names if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns)]


def calibration_cache_key(model_sha256: str, data_key: str, method: str, settings: dict[str, Any]) -> str:
    """sha256 identifying one calibration: model, data, method and calibrator settings."""
    blob = json.dumps(dict(model=model_sha256, data=data_key, method=method, settings=settings), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def range_amax(ranges: Any) -> dict[str, float]:
    """tensor -> max |value| of calibration ``ranges`` (an onnxruntime ``TensorsData``)."""
    import numpy as np

    out = {}
    for name, td in ranges.items():
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in td.range_value)
        out[name] = max(abs(lo), abs(hi))
    return out


# ---------------------------------------------------------------------------------------------- the composition
def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[Any] | None, *,
                  method: str = "entropy", exclude: Sequence[str] = DEFAULT_EXCLUDE,
                  op_types: Sequence[str] = DEFAULT_OP_TYPES, cache_dir: str | Path | None = None,
                  data_key: str | None = None, input_name: str = "input", chunk_batches: int = 1,
                  percentile: float = 99.999, num_bins: int | None = None,
                  quantize_activation_matmuls: bool = False,
                  keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                  keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES, engine: str = "srpose") -> Int8Report:
    """Write the INT8 version of the FP32 ONNX file ``fp32_path`` to ``out_path`` (atomically).

    ``calibration``: an iterable of N x 3 x H x W float32 batches (or ``{input_name: batch}`` dicts, or an ONNX
    Runtime ``CalibrationDataReader``), e.g. :class:`export.calibration.CalibrationReader`; may be ``None`` when the
    cache already holds the ranges. ``method``: entropy | max | percentile. ``exclude``: node names or fnmatch
    patterns left out of INT8 (they run in float16; activation x activation MatMuls too, unless
    ``quantize_activation_matmuls``). ``chunk_batches``: batches whose intermediate tensors are held at once before
    they are folded into the histograms / ranges (1: memory bounded by one batch). ``cache_dir`` + ``data_key``
    enable the calibration cache (``data_key`` identifies the data, e.g. ``CalibrationReader.data_key()``).
    ``keep_fp32_ops`` / ``keep_fp32_nodes``: the float32 islands, as for the FP16 export. ``engine="modelopt"``
    writes NVIDIA ModelOpt's INT8 graph instead (:mod:`srpose.export._modelopt_int8`; no cache, its own placement
    and float16 policy). The output's card gets ``precision="int8"`` and ``precision_details["int8"]``.
    """
    import onnx

    fp32_path = Path(fp32_path)
    _check_source(fp32_path)
    _check_calibration_settings(method, chunk_batches)
    if engine not in ("srpose", "modelopt"):
        raise ValueError(f"INT8 engine {engine!r} is unknown: use 'srpose' or 'modelopt'")
    if engine == "modelopt":
        from srpose.export._modelopt_int8 import quantize_with_modelopt

        if calibration is None:
            raise ValueError("INT8 engine 'modelopt' needs calibration data (it calibrates itself, uncached)")
        mo_method = {"minmax": "max"}.get(method, method)  # ours and ModelOpt's name for the same calibration
        d = quantize_with_modelopt(fp32_path, out_path, calibration, method=mo_method, exclude=exclude,
                                   input_name=input_name)
        return Int8Report(method=d["method"], calibration_crops=d["calibration_crops"], engine="modelopt",
                          quantized_nodes=d["quantized_nodes"], excluded_nodes=d["excluded_nodes"],
                          op_types=list(op_types))
    op_types = list(op_types)
    model = onnx.load(str(fp32_path))
    excluded = _excluded_nodes(model, fp32_path.name, exclude, op_types, quantize_activation_matmuls)
    calib = _calibration_ranges(fp32_path, calibration, method=method, op_types=op_types, cache_dir=cache_dir,
                                data_key=data_key, input_name=input_name, chunk_batches=chunk_batches,
                                settings=_calibrator_settings(method, percentile, num_bins))
    return _write_qdq(fp32_path, out_path, calib, excluded, model, keep_fp32_ops, keep_fp32_nodes)


def _excluded_nodes(model: Any, file_name: str, exclude: Sequence[str], op_types: list[str],
                    quantize_activation_matmuls: bool) -> list[str]:
    """The ``op_types`` nodes left out of INT8: those matching ``exclude``, then (unless
    ``quantize_activation_matmuls``) the MatMuls without a constant operand; exact names must exist."""
    excluded = resolve_excluded_nodes(model, exclude, op_types)
    if not quantize_activation_matmuls:
        weights = {t.name for t in model.graph.initializer}
        excluded += [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in excluded
                     and not (n.input[0] in weights or n.input[1] in weights)]
    unknown = [p for p in exclude if not any(ch in p for ch in "*?[") and p not in {n.name for n in model.graph.node}]
    if unknown:
        raise ValueError(f"nodes to exclude {unknown} are not in {file_name}; node names look like "
                         f"{[n.name for n in model.graph.node if n.op_type in op_types][:3]}")
    return excluded


# ---------------------------------------------------------------------------------------------- step 1: ranges
def calibration_ranges(fp32_path: str | Path, calibration: Iterable[Any] | None, *, method: str = "entropy",
                       op_types: Sequence[str] = DEFAULT_OP_TYPES, cache_dir: str | Path | None = None,
                       data_key: str | None = None, input_name: str = "input", chunk_batches: int = 1,
                       percentile: float = 99.999, num_bins: int | None = None) -> CalibrationRanges:
    """The activation ranges of FP32 ONNX file ``fp32_path`` on ``calibration``, read from the cache when it holds
    them (and written to it otherwise). The arguments mean what they mean for :func:`quantize_int8`."""
    fp32_path = Path(fp32_path)
    _check_source(fp32_path)
    _check_calibration_settings(method, chunk_batches)
    return _calibration_ranges(fp32_path, calibration, method=method, op_types=list(op_types), cache_dir=cache_dir,
                               data_key=data_key, input_name=input_name, chunk_batches=chunk_batches,
                               settings=_calibrator_settings(method, percentile, num_bins))


def _calibrator_settings(method: str, percentile: float, num_bins: int | None) -> dict[str, Any]:
    """The calibrator's extra options for ``method`` (also part of the cache key and the output's card)."""
    settings: dict[str, Any] = {}
    if method == "percentile":
        settings.update(percentile=float(percentile), symmetric=True)
    if num_bins is not None and method != "max":
        settings["num_bins"] = int(num_bins)
    return settings


def _calibration_ranges(fp32_path: Path, calibration: Iterable[Any] | None, *, method: str, op_types: list[str],
                        cache_dir: str | Path | None, data_key: str | None, input_name: str, chunk_batches: int,
                        settings: dict[str, Any]) -> CalibrationRanges:
    """:func:`calibration_ranges` on checked arguments: the inputs and outputs of ``op_types`` nodes and of the
    placement's op types (residual Adds, Resizes) are calibrated."""
    from onnxruntime.quantization import CalibrationMethod

    from srpose.export.onnx_export import model_sha256

    method_enum = getattr(CalibrationMethod, CALIB_METHODS[method])
    calibrated = list(dict.fromkeys([*op_types, *PLACEMENT_OP_TYPES]))
    calib = CalibrationRanges(method=method, op_types=op_types, settings=settings, ranges=None)
    cache_path = None
    if cache_dir is not None and data_key is not None:
        calib.key = calibration_cache_key(model_sha256(fp32_path), data_key, method,
                                          {**settings, "op_types": op_types, "calibrated": calibrated})
        cache_path = Path(cache_dir) / f"{fp32_path.stem.split('.')[0]}.{method}.{calib.key[:16]}.calib.json"
        calib.cache_file = str(cache_path)
    if cache_path is not None and cache_path.is_file():
        calib.ranges, cached_meta = load_ranges(cache_path, calib.key, method_enum)
        if calib.ranges is not None:
            calib.crops = int(cached_meta.get("crops", 0))
            calib.batches = int(cached_meta.get("batches", 0))
    calib.cache_hit = calib.ranges is not None
    if calib.ranges is None:
        if calibration is None:
            raise ValueError("INT8 quantisation needs calibration data (no cached ranges for this model and data)")
        with quiet():
            calib.ranges, calib.crops, calib.batches = compute_ranges(fp32_path, calibration, method_enum, calibrated,
                                                                      input_name, chunk_batches, settings)
        if cache_path is not None:
            save_ranges(cache_path, calib.key, method, calib.ranges,
                        dict(model=fp32_path.name, crops=calib.crops, batches=calib.batches))
    return calib


# ---------------------------------------------------------------------------------------------- step 2: the graph
def write_qdq_model(fp32_path: str | Path, out_path: str | Path, calib: CalibrationRanges,
                    excluded_nodes: Sequence[str], *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                    keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES) -> Int8Report:
    """Write the INT8 version of FP32 ONNX file ``fp32_path`` to ``out_path`` (atomically), quantised with the
    ranges ``calib`` (of this model), the nodes named in ``excluded_nodes`` (exact names) left out of INT8 (in
    float16) and the float32 islands ``keep_fp32_*``. The output's card gets ``precision="int8"`` and
    ``precision_details["int8"]``, as with :func:`quantize_int8`."""
    import onnx

    fp32_path = Path(fp32_path)
    _check_source(fp32_path)
    model = onnx.load(str(fp32_path))
    names = {n.name for n in model.graph.node}
    unknown = [n for n in excluded_nodes if n not in names]
    if unknown:
        raise ValueError(f"nodes to exclude {unknown} are not in {fp32_path.name}")
    return _write_qdq(fp32_path, out_path, calib, list(excluded_nodes), model, keep_fp32_ops, keep_fp32_nodes)


def int8_graph(model: Any, calib: CalibrationRanges, excluded: Sequence[str], keep_fp32_ops: Sequence[str],
               keep_fp32_nodes: Sequence[str]) -> tuple[Any, Int8Report]:
    """The INT8 graph of loaded FP32 ``model`` (every ``calib.op_types`` node not in ``excluded`` quantised) and
    its report (without file or cache fields); the caller records the card."""
    from srpose.export._int8_graph import build_int8_graph, quantized_nodes

    skip = set(excluded)
    quantised = [n.name for n in model.graph.node if n.op_type in calib.op_types and n.name not in skip]
    q, place, fp16 = build_int8_graph(model, range_amax(calib.ranges), quantised, keep_fp32_ops=keep_fp32_ops,
                                      keep_fp32_nodes=keep_fp32_nodes)
    report = Int8Report(method=calib.method, calibration_crops=calib.crops, calibration_batches=calib.batches,
                        cache_file=calib.cache_file, cache_hit=calib.cache_hit, excluded_nodes=list(excluded),
                        op_types=list(calib.op_types), quantized_nodes=len(quantized_nodes(q, calib.op_types)),
                        residual_adds=len(place.residual), activation_qdq=len(place.activations),
                        opset=max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")),
                        fp16=dict(nodes_fp16=fp16.nodes_fp16, nodes_fp32=fp16.nodes_fp32,
                                  kept_fp32_ops=fp16.kept_fp32_ops, kept_fp32_nodes=fp16.kept_fp32_nodes,
                                  casts_inserted=fp16.casts_inserted))
    return q, report


def _write_qdq(fp32_path: Path, out_path: str | Path, calib: CalibrationRanges, excluded: list[str], model: Any,
               keep_fp32_ops: Sequence[str], keep_fp32_nodes: Sequence[str]) -> Int8Report:
    """:func:`write_qdq_model` on checked arguments, ``model`` being the loaded FP32 file (its metadata is kept)."""
    q, report = int8_graph(model, calib, excluded, keep_fp32_ops, keep_fp32_nodes)
    # only what defines the graph goes into the file (no paths, no cache state): same inputs, same bytes
    details = {k: v for k, v in report.to_dict().items() if k not in ("cache_file", "cache_hit")}
    details.update(calibration_key=calib.key, settings=calib.settings, keep_fp32_ops=list(keep_fp32_ops),
                   keep_fp32_nodes=list(keep_fp32_nodes))
    write_converted(q, model, "int8", details, out_path)
    return report


def write_converted(model: "onnx.ModelProto", source: "onnx.ModelProto", precision: str, details: Mapping[str, Any],
                    out_path: str | Path) -> None:
    """Write ``model``, converted from ``source``, with ``source``'s card and ``precision`` / ``details`` recorded:
    checked by the full ONNX checker, atomically, in deterministic bytes."""
    import onnx

    from srpose._io import atomic_write_bytes
    from srpose.export.onnx_export import record_precision

    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    record_precision(model, precision, details)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(out_path, model.SerializeToString(deterministic=True))


# ---------------------------------------------------------------------------------------------- checks
def _check_source(fp32_path: Path) -> None:
    """Fail early on a missing FP32 file."""
    if not fp32_path.is_file():
        raise FileNotFoundError(f"FP32 ONNX file {fp32_path} does not exist")


def _check_calibration_settings(method: str, chunk_batches: int) -> None:
    """Reject an unknown calibration method or a chunk of fewer than one batch."""
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r} is unknown: use one of entropy, max, percentile")
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
