"""The INT8 graph of an FP32 graph (:func:`build_int8_graph`): Q/DQ pairs where :mod:`srpose.export._int8_place`
puts them, int8 weights, and float16 everywhere else, as TensorRT's strongly typed build runs it.

- **Q/DQ in float16 (opset 19).** A graph with Q/DQ pairs is converted to opset 19 (``onnx.version_converter``),
  whose QuantizeLinear takes float16 inputs and scales and whose DequantizeLinear gives float16 outputs: an INT8
  conv reads ``DQ(int8) -> float16`` straight into its kernel and writes float16 (or int8, where a Q follows),
  with no cast between. A graph without Q/DQ (every layer excluded) keeps its opset and is exactly the FP16 graph.
- **Scales.** Activations per tensor, ``amax / 127`` from the calibrated range (symmetric, zero point 0); weights
  per output channel, ``max |w| / 127``; every scale rounded to a float16 value (clamped to float16's normal range
  for activations, ``2^-14``, so a Q never divides by a flushed scale; weights to the smallest subnormal), and the
  int8 weights computed with the rounded scale, so the float32 and float16 graphs dequantise identically.
- **Precision outside the INT8 layers** is the FP16 export's policy (:func:`srpose.export.fp16._runs_in_fp16`):
  float16, except the float32 islands (``keep_fp32_ops`` / ``keep_fp32_nodes``) and the cheap ops after them. A
  QuantizeLinear runs in the type of what it reads, a DequantizeLinear in float16 unless everything reading it
  is a float32 island, a quantised op in float16 unless it is one.

The graph passes the full ONNX checker; ONNX Runtime runs it on the CPU (float16 rounding emulated by the backend
for mixed-precision graphs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from srpose.export._int8_place import GraphIndex, Placement, plan_qdq

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.export.fp16 import Fp16Report

__all__ = ["QDQ_OPSET", "DEFAULT_OP_TYPES", "build_int8_graph", "activation_scale", "quantise_weight", "quantized_nodes"]

QDQ_OPSET = 19
#: the weighted ops quantised by default (``srpose.export.int8`` re-exports it)
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_ACT_MIN_SCALE = 2.0 ** -14
_WEIGHT_MIN_SCALE = 2.0 ** -24
_FP16_MAX = 65504.0


def activation_scale(amax: float) -> float:
    """The float16-exact per-tensor scale of an activation whose calibrated range is ``[-amax, amax]``."""
    s = min(max(float(amax) / 127.0, _ACT_MIN_SCALE), _FP16_MAX)
    return float(np.float32(np.float16(s)))


def quantise_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float16-exact float32 scales per ``axis`` channel): symmetric, ``max |w| / 127``."""
    w = np.asarray(w, dtype=np.float32)
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red) if red else np.abs(w)
    scale = np.clip(amax / 127.0, _WEIGHT_MIN_SCALE, _FP16_MAX).astype(np.float16).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def build_int8_graph(model: "onnx.ModelProto", amax: Mapping[str, float], quantised: Sequence[str], *,
                     keep_fp32_ops: Sequence[str], keep_fp32_nodes: Sequence[str]
                     ) -> tuple["onnx.ModelProto", Placement, "Fp16Report"]:
    """The INT8 graph of FP32 ``model`` with the weighted nodes named in ``quantised`` in INT8 (activation ranges
    ``amax``: tensor -> max |value|), the rest in float16 except the float32 islands: (model, placement, the float16
    rewrite's report). Passes the full ONNX checker."""
    import onnx
    from onnx import version_converter

    from srpose.export._fp16_graph import Fp16Rewrite, _constants_to_initializers
    from srpose.export.fp16 import Fp16Report

    m = onnx.ModelProto()
    m.CopyFrom(model)
    _constants_to_initializers(m.graph)
    if quantised:
        m = version_converter.convert_version(m, QDQ_OPSET)
    place = plan_qdq(m, quantised)
    missing = [t for t in place.activations if t not in amax]
    if missing:
        raise ValueError(f"no calibrated range for {missing[:3]} ({len(missing)} tensors): the ranges come from a "
                         "calibration of other op types or of another graph; recalibrate (delete the calibration "
                         "cache)")
    qdq = _insert_qdq(m, place, amax)
    report = Fp16Report()
    rewrite = Fp16Rewrite(qdq, report)
    policy = _Policy(rewrite, set(place.quantised), tuple(keep_fp32_ops), tuple(keep_fp32_nodes))
    for node in rewrite.nodes:
        rewrite.convert_node(node, policy.low(node))
    rewrite.cast_outputs_back()
    return rewrite.finalise(), place, report


# ---------------------------------------------------------------------------------------------- Q/DQ insertion
def _insert_qdq(model: "onnx.ModelProto", place: Placement, amax: Mapping[str, float]) -> "onnx.ModelProto":
    """A copy of ``model`` with the Q/DQ pairs and int8 weights of ``place`` (float32 scales, opset 19)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    idx = GraphIndex(m)
    used = set(idx.producer) | idx.constants | {i.name for i in g.input}

    def unique(base: str) -> str:
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    inits = {t.name: t for t in g.initializer}
    new_inits: list[Any] = []
    first: list[Any] = []  # weight DQs and the graph inputs' Q/DQ: at the top
    after: dict[str, list[Any]] = {}  # producer node -> Q/DQ of its outputs
    group_amax = {t: max(float(amax[x]) for x in grp) for grp in place.groups for t in grp}
    for tensor, readers in place.activations.items():
        scale = activation_scale(group_amax.get(tensor, amax[tensor]))
        s, z = unique(f"{tensor}_scale"), unique(f"{tensor}_zero_point")
        q, dq = unique(f"{tensor}_quantized"), unique(f"{tensor}_dequantized")
        new_inits += [numpy_helper.from_array(np.array(scale, np.float32), s),
                      numpy_helper.from_array(np.array(0, np.int8), z)]
        pair = [helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=unique(f"{tensor}_QuantizeLinear")),
                helper.make_node("DequantizeLinear", [q, s, z], [dq], name=unique(f"{tensor}_DequantizeLinear"))]
        producer = idx.producer.get(tensor)
        (after.setdefault(producer.name, []) if producer is not None else first).extend(pair)
        for node, i in readers:
            idx.nodes[node].input[i] = dq
    done: dict[str, str] = {}
    for name, (wi, axis) in place.weights.items():
        node = idx.nodes[name]
        w = node.input[wi]
        if w not in done:
            arr = numpy_helper.to_array(inits[w])
            ax = axis % arr.ndim if node.op_type != "MatMul" else (arr.ndim - 1 if wi == 1 else arr.ndim - 2)
            qw, sw = quantise_weight(arr, ax)
            names = unique(f"{w}_quantized"), unique(f"{w}_scale"), unique(f"{w}_zero_point")
            new_inits += [numpy_helper.from_array(qw, names[0]), numpy_helper.from_array(sw, names[1]),
                          numpy_helper.from_array(np.zeros(sw.shape, np.int8), names[2])]
            done[w] = unique(f"{w}_dequantized")
            first.append(helper.make_node("DequantizeLinear", list(names), [done[w]], axis=ax,
                                          name=unique(f"{w}_DequantizeLinear")))
        node.input[wi] = done[w]
    nodes = list(first)
    for node in g.node:
        nodes.append(node)
        nodes.extend(after.get(node.name, []))
    del g.node[:]
    g.node.extend(nodes)
    read = {t for n in nodes for t in n.input}
    kept = [t for t in g.initializer if t.name in read] + new_inits
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]
    return m


# ---------------------------------------------------------------------------------------------- precision policy
class _Policy:
    """Per node of the Q/DQ graph, in graph order: whether it runs in float16 (module docstring)."""

    def __init__(self, rewrite: Any, quantised: set[str], keep_ops: tuple[str, ...], keep_nodes: tuple[str, ...]
                 ) -> None:
        from srpose.export.fp16 import _matches

        self.rewrite, self.quantised = rewrite, quantised
        self.keep_ops, self.keep_nodes = keep_ops, keep_nodes
        self.static32 = {n.name for n in rewrite.nodes if n.op_type in keep_ops or _matches(n.name, keep_nodes)}
        self.readers: dict[str, list[Any]] = {}
        for n in rewrite.nodes:
            for t in n.input:
                self.readers.setdefault(t, []).append(n)

    def low(self, node: Any) -> bool:
        from srpose.export.fp16 import _runs_in_fp16

        rw = self.rewrite
        if not (any(rw.float_inputs(node)) or any(rw.float_outputs(node))):
            return False
        if node.op_type == "QuantizeLinear":
            return not rw.is_float32_now(node.input[0])
        if node.op_type == "DequantizeLinear":
            return any(r.name not in self.static32 for r in self.readers.get(node.output[0], []))
        if node.name in self.quantised:
            return node.name not in self.static32
        return _runs_in_fp16(node, rw, self.keep_ops, self.keep_nodes, rw.report)


def quantized_nodes(model: "onnx.ModelProto", op_types: Sequence[str]) -> list[str]:
    """Names of the ``op_types`` nodes of an INT8 graph that run in INT8: a weighted op whose constant weight comes
    through a DequantizeLinear (of int8 weights, or of a Q of float weights as ModelOpt writes them: its weight's
    DQ, not its first input, decides), or an activation x activation MatMul both of whose inputs come from a
    DequantizeLinear."""
    idx = GraphIndex(model)

    def dq_of(t: str, constant: bool) -> bool:
        p = idx.producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear" and (p.input[0] in idx.constants) == constant

    out = []
    for n in model.graph.node:
        if n.op_type not in op_types or len(n.input) < 2:
            continue
        if any(dq_of(t, True) for t in n.input[:2]) or (n.op_type == "MatMul" and all(dq_of(t, False)
                                                                                         for t in n.input[:2])):
            out.append(n.name)
    return out
