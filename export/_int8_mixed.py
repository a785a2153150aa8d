"""The mixed INT8/FP16 graph: explicit Q/DQ INT8 for some layers, strongly typed float16 for the others, float32
inputs and outputs; TensorRT builds it as written (strongly typed network), ONNX Runtime runs it on the CPU.

:func:`write_mixed_model` composes the two existing conversions, so every piece of it is a graph the exporter
already writes:

1. :func:`srpose.export.int8.write_qdq_model` with ``fp16_nodes`` (plus the activation x activation MatMuls, as
   the INT8 export) left out of INT8: the Q/DQ graph ``srpose export --precision int8 --int8-exclude ...`` writes
   for that set, from the same calibration ranges;
2. the FP16 export's rewrite (:class:`srpose.export._fp16_graph.Fp16Rewrite` and the policy of
   :func:`srpose.export.fp16.to_mixed_fp16`) on that graph, with two rules before the FP16 policy:

   - **the Q/DQ pairs and the quantised ops stay float32.** Opsets 13-18 Q/DQ only take and give float32 scales
     and values (float16 scales need opset 19, whose ``ReduceMean`` differs), and TensorRT fuses a
     DequantizeLinear into the int8 kernel only when it feeds the conv directly; so ``DQ -> Conv`` stays intact,
     the conv runs in INT8 in TensorRT and writes a float32 tensor, cast to float16 where a float16 op reads it
     (TensorRT folds that cast into the kernel's output; float16 activations reach a QuantizeLinear through a
     Cast to float32, which TensorRT 10's Q accepts either way);
   - **the INT8 region keeps the INT8 graph's types:** an op outside ``fp16_nodes`` whose float activation
     inputs are all float32 with one of them from the INT8 region (a quantised op's output, or an op kept by this
     rule) stays float32, as in the all-INT8 graph (TensorRT fuses those bias / ReLU / residual adds into the
     int8 kernels anyway).

   Everything else (the ``fp16_nodes`` and whatever their outputs reach) is decided as by the FP16 export:
   float16, except its float32 islands (normalisations, softmax, reductions, the heads' output convs, the
   decoder) and the cheap ops that follow them.

So an empty ``fp16_nodes`` gives exactly the all-INT8 graph (nothing is float16) and every quantisable node in
``fp16_nodes`` gives exactly the FP16 export; both are checked numerically in ``tests/test_int8_search.py``. Ops
written: the FP32 graph's, QuantizeLinear / DequantizeLinear (symmetric int8, zero points 0) and Cast between
float32 and float16, all in TensorRT 10's ONNX operator matrix with these types.

The card gets ``precision="mixed"`` and ``precision_details["mixed"]``: ``int8_exclude`` (exact node names left
out of INT8, accepted back by ``srpose export --int8-exclude``), ``fp16_nodes``, what the INT8 and FP16 steps did,
and the caller's ``details`` (e.g. the search's groups and budget).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
from srpose.export.int8 import DEFAULT_OP_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.export._fp16_graph import Fp16Rewrite
    from srpose.export.fp16 import Fp16Report
    from srpose.export.int8 import CalibrationRanges

__all__ = ["QDQ_OPS", "MixedReport", "write_mixed_model", "mixed_precision_graph", "quantized_nodes",
           "activation_matmuls", "int8_exclude_for"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class MixedReport:
    """What :func:`write_mixed_model` did: the nodes left out of INT8 (``int8_exclude``, for ``srpose export
    --int8-exclude``), the ones among them moved to float16, the quantised ones, the nodes the INT8 region kept in
    float32, and the INT8 / FP16 steps' own reports."""

    int8_exclude: list[str]
    fp16_nodes: list[str]
    quantized_nodes: list[str]
    int8_region_fp32: int
    int8: dict[str, Any] = field(default_factory=dict)
    fp16: dict[str, Any] = field(default_factory=dict)

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
    """Names of the ``op_types`` nodes of a Q/DQ graph whose first input comes from a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in op_types and n.input
            and getattr(producers.get(n.input[0]), "op_type", None) == "DequantizeLinear"]


def mixed_precision_graph(qdq_model: "onnx.ModelProto", fp16_nodes: Sequence[str], *,
                          keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                          keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES,
                          op_types: Sequence[str] = DEFAULT_OP_TYPES) -> tuple["onnx.ModelProto", "Fp16Report", int]:
    """The mixed-precision copy of Q/DQ graph ``qdq_model`` (rules in the module docstring): (model, the FP16
    rewrite's report, number of nodes the INT8 region kept in float32). Passes the full ONNX checker."""
    from srpose.export._fp16_graph import Fp16Rewrite
    from srpose.export.fp16 import Fp16Report

    quantised = set(quantized_nodes(qdq_model, op_types))
    report = Fp16Report()
    rewrite = Fp16Rewrite(qdq_model, report)
    policy = _MixedPolicy(rewrite, quantised, set(fp16_nodes), tuple(keep_fp32_ops), tuple(keep_fp32_nodes))
    for node in rewrite.nodes:
        rewrite.convert_node(node, policy.low(node))
    rewrite.cast_outputs_back()
    return rewrite.finalise(), report, policy.region


class _MixedPolicy:
    """Decides node by node whether a node of the Q/DQ graph runs in float16 (see the module docstring)."""

    def __init__(self, rewrite: "Fp16Rewrite", quantised: set[str], fp16_nodes: set[str],
                 keep_fp32_ops: tuple[str, ...], keep_fp32_nodes: tuple[str, ...]) -> None:
        self.rewrite, self.quantised, self.fp16_nodes = rewrite, quantised, fp16_nodes
        self.keep_fp32_ops, self.keep_fp32_nodes = keep_fp32_ops, keep_fp32_nodes
        self.int8_tensors: set[str] = set()
        self.region = 0

    def low(self, node: Any) -> bool:
        """Whether ``node`` (the next node, in graph order) runs in float16."""
        from srpose.export.fp16 import _runs_in_fp16

        rw, report = self.rewrite, self.rewrite.report
        float_in, float_out = rw.float_inputs(node), rw.float_outputs(node)
        if not (any(float_in) or any(float_out)):
            return False
        if node.op_type in QDQ_OPS or node.name in self.quantised:
            key = node.op_type if node.op_type in QDQ_OPS else f"{node.op_type} (int8)"
            report.kept_fp32_ops[key] = report.kept_fp32_ops.get(key, 0) + 1
            if node.name in self.quantised:
                self.int8_tensors.update(node.output)
            return False
        acts = [n for n, f in zip(node.input, float_in) if f and not rw.is_initializer(n)]
        if node.name not in self.fp16_nodes and acts and all(rw.is_float32_now(n) for n in acts) \
                and any(n in self.int8_tensors for n in acts):
            self.int8_tensors.update(node.output)
            self.region += 1
            return False
        return _runs_in_fp16(node, rw, self.keep_fp32_ops, self.keep_fp32_nodes, report)


def write_mixed_model(fp32_path: str | Path, out_path: str | Path, calib: "CalibrationRanges",
                      fp16_nodes: Sequence[str], *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                      keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES,
                      details: Mapping[str, Any] | None = None) -> MixedReport:
    """Write the mixed INT8/FP16 version of FP32 ONNX file ``fp32_path`` to ``out_path`` (atomically): the nodes
    named in ``fp16_nodes`` (exact names of quantisable nodes) in float16, every other quantisable node in INT8
    with the ranges ``calib``. The card gets ``precision="mixed"`` and ``precision_details["mixed"]`` (the
    report, plus ``details``). Same inputs, same bytes."""
    import onnx

    from srpose._io import atomic_write_bytes
    from srpose.export.int8 import write_qdq_model
    from srpose.export.onnx_export import record_precision

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
    with tempfile.TemporaryDirectory(prefix="srpose-mixed-") as tmp:
        qdq_path = Path(tmp) / "qdq.onnx"
        int8 = write_qdq_model(fp32_path, qdq_path, calib, exclude)
        qdq = onnx.load(str(qdq_path))
    model, fp16, region = mixed_precision_graph(qdq, fp16_nodes, keep_fp32_ops=keep_fp32_ops,
                                                keep_fp32_nodes=keep_fp32_nodes, op_types=calib.op_types)
    int8_details = {k: v for k, v in int8.to_dict().items() if k not in ("cache_file", "cache_hit", "excluded_nodes")}
    int8_details.update(calibration_key=calib.key, settings=calib.settings)
    report = MixedReport(int8_exclude=exclude, fp16_nodes=list(fp16_nodes), int8_region_fp32=region,
                         quantized_nodes=quantized_nodes(model, calib.op_types), int8=int8_details,
                         fp16=fp16.to_dict())
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    record_precision(model, "mixed", {**report.to_dict(), **dict(details or {})})
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(out_path, model.SerializeToString(deterministic=True))
    return report
