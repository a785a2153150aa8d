"""The mixed INT8/FP16 graph of ``srpose quantize``: the INT8 graph with a chosen set of layers left out of INT8.

Since the INT8 graph already runs everything outside its INT8 layers in float16 (:mod:`srpose.export._int8_graph`),
the mixed graph *is* the INT8 graph of ``srpose export --precision int8 --int8-exclude <fp16_nodes>`` (plus the
activation x activation MatMuls, never quantised), from the same calibration ranges: the layers in ``fp16_nodes``
read the unquantised float16 tensors and run in float16, every other quantisable layer runs in INT8, and the
float32 islands are the FP16 export's. So an empty ``fp16_nodes`` gives exactly the all-INT8 graph and every
quantisable node in ``fp16_nodes`` exactly the FP16 export (no Q/DQ left, the FP32 graph's opset kept); both are
checked numerically in ``tests/test_int8_search.py``.

The card gets ``precision="mixed"`` and ``precision_details["mixed"]``: ``int8_exclude`` (exact node names left
out of INT8, accepted back by ``srpose export --int8-exclude``), ``fp16_nodes``, the quantised nodes, what the INT8
step did, and the caller's ``details`` (e.g. the search's groups and budget).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from srpose.export._int8_graph import quantized_nodes as _quantized_nodes
from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
from srpose.export.int8 import DEFAULT_OP_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.export.int8 import CalibrationRanges

__all__ = ["MixedReport", "write_mixed_model", "quantized_nodes", "activation_matmuls", "int8_exclude_for"]


@dataclass
class MixedReport:
    """What :func:`write_mixed_model` did: the nodes left out of INT8 (``int8_exclude``, for ``srpose export
    --int8-exclude``), the ones among them chosen for float16, the quantised ones, and the INT8 step's report."""

    int8_exclude: list[str]
    fp16_nodes: list[str]
    quantized_nodes: list[str]
    int8: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def activation_matmuls(model: "onnx.ModelProto") -> list[str]:
    """MatMuls without an initializer operand (attention products): never quantised, the INT8 export's rule."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not (n.input[0] in weights or n.input[1] in weights)]


def int8_exclude_for(model: "onnx.ModelProto", fp16_nodes: Sequence[str]) -> list[str]:
    """The exact node names left out of INT8 when ``fp16_nodes`` run in float16: those, then the activation
    MatMuls (graph order, no duplicates)."""
    out = list(dict.fromkeys(fp16_nodes))
    return out + [n for n in activation_matmuls(model) if n not in out]


def quantized_nodes(model: "onnx.ModelProto", op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[str]:
    """Names of the ``op_types`` nodes of an INT8 / mixed graph that run in INT8 (decided by their weight's
    DequantizeLinear: :func:`srpose.export._int8_graph.quantized_nodes`)."""
    return _quantized_nodes(model, op_types)


def write_mixed_model(fp32_path: str | Path, out_path: str | Path, calib: "CalibrationRanges",
                      fp16_nodes: Sequence[str], *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                      keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES,
                      details: Mapping[str, Any] | None = None) -> MixedReport:
    """Write the mixed INT8/FP16 version of FP32 ONNX file ``fp32_path`` to ``out_path`` (atomically): the nodes
    named in ``fp16_nodes`` (exact names of quantisable nodes) in float16, every other quantisable node in INT8
    with the ranges ``calib``. The card gets ``precision="mixed"`` and ``precision_details["mixed"]`` (the
    report, plus ``details``). Same inputs, same bytes."""
    import onnx

    from srpose.export.int8 import int8_graph, write_converted

    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"FP32 ONNX file {fp32_path} does not exist")
    source = onnx.load(str(fp32_path))
    quantisable = {n.name for n in source.graph.node if n.op_type in calib.op_types}
    unknown = [n for n in fp16_nodes if n not in quantisable]
    if unknown:
        raise ValueError(f"FP16 nodes {unknown[:3]} are not {'/'.join(calib.op_types)} nodes of {fp32_path.name}; "
                         f"quantisable nodes look like {sorted(quantisable)[:3]}")
    exclude = int8_exclude_for(source, fp16_nodes)
    model, int8 = int8_graph(source, calib, exclude, keep_fp32_ops, keep_fp32_nodes)
    int8_details = {k: v for k, v in int8.to_dict().items() if k not in ("cache_file", "cache_hit", "excluded_nodes")}
    int8_details.update(calibration_key=calib.key, settings=calib.settings)
    report = MixedReport(int8_exclude=exclude, fp16_nodes=list(fp16_nodes),
                         quantized_nodes=quantized_nodes(model, calib.op_types), int8=int8_details)
    write_converted(model, source, "mixed", {**report.to_dict(), **dict(details or {})}, out_path)
    return report
