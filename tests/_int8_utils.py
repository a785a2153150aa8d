"""Helpers of the INT8 tests: the placement checks."""
from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------------------- placement checks
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
               "Erf")
_FUSED = frozenset(ACTIVATIONS) | {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Reshape", "Flatten", "Squeeze",
                                   "Unsqueeze", "Identity", "Transpose"}


class Graph:
    """The facts the placement checks read off a graph: producers, readers, constants, inferred element types."""

    def __init__(self, model) -> None:
        import onnx

        self.model = model
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.readers: dict[str, list] = {}
        for n in self.nodes:
            for t in n.input:
                self.readers.setdefault(t, []).append(n)
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consts = set(self.inits)
        for n in self.nodes:
            if all(t in self.consts for t in n.input if t):
                self.consts.update(n.output)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        self.elem = {v.name: v.type.tensor_type.elem_type for v in
                     [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
        self.elem.update({t.name: t.data_type for t in model.graph.initializer})

    def op(self, t: str) -> str | None:
        return getattr(self.producer.get(t), "op_type", None)

    def dq_of_weight(self, t: str) -> bool:
        p = self.producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] in self.consts

    def dq_of_activation(self, t: str) -> bool:
        p = self.producer.get(t)
        return p is not None and p.op_type == "DequantizeLinear" and p.input[0] not in self.consts

    def undq(self, t: str) -> str:
        """The tensor a Q -> DQ pair was put on (``t`` itself when it is not a DequantizeLinear output)."""
        if self.op(t) == "DequantizeLinear" and self.op(self.producer[t].input[0]) == "QuantizeLinear":
            return self.producer[self.producer[t].input[0]].input[0]
        return t

    def weight_index(self, n) -> int | None:
        """Index of the constant (weight) operand of a weighted op, through its DequantizeLinear."""
        for i, t in enumerate(n.input[:2]):
            if t in self.consts:
                return i
        return None

    def fused_source(self, t: str):
        """The weighted op whose epilogue (activations, bias, views; single readers) produces ``t``, or None."""
        while True:
            p = self.producer.get(t)
            if p is None or len([r for r in self.readers.get(t, []) if r.op_type != "Shape"]) != 1:
                return None
            if p.op_type in WEIGHTED:
                return p
            var = [x for x in p.input if x and x not in self.consts]
            if p.op_type not in _FUSED or len(var) != 1:
                return None
            t = var[0]


def placement_problems(model, excluded=(), islands=None) -> dict[str, list[str]]:
    """Violations of each placement rule in INT8 / mixed graph ``model`` (``excluded``: layers left out of INT8;
    ``islands``: (op types, node-name patterns) allowed in float32, default the FP16 export's)."""
    import fnmatch

    from onnx import TensorProto

    from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS, FOLLOW_OPS

    g = Graph(model)
    out: dict[str, list[str]] = {k: [] for k in ("both_or_neither", "residual", "conv_act", "float32", "excluded",
                                                  "weight_axis")}
    for n in g.nodes:
        if n.op_type not in WEIGHTED or len(n.input) < 2:
            continue
        w = g.weight_index(n)
        if w is None:
            continue
        act, wq = g.dq_of_activation(n.input[1 - w]), g.dq_of_weight(n.input[w])
        if act != wq:
            out["both_or_neither"].append(f"{n.name}: activation {'INT8' if act else 'float'}, weight "
                                          f"{'INT8' if wq else 'float'}")
        if n.name in excluded and (act or wq or g.elem.get(n.input[w]) != TensorProto.FLOAT16):
            out["excluded"].append(f"{n.name}: reads Q/DQ or is not float16")
        if wq:
            dq = g.producer[n.input[w]]
            q = g.inits.get(dq.input[0]) or g.inits[g.producer[dq.input[0]].input[0]]  # int8, or Q(float weight)
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            want = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0 if trans_b else 1}.get(n.op_type,
                                                                                   len(q.dims) - (1 if w == 1 else 2))
            size = int(np.prod(g.inits[dq.input[1]].dims or [1]))
            if axis % len(q.dims) != want or size != q.dims[want]:
                out["weight_axis"].append(f"{n.name}: axis {axis}, {size} scales for weight {list(q.dims)}")
    for n in g.nodes:
        var = [t for t in n.input if t and t not in g.consts]
        if n.op_type == "Add" and len(var) == 2 and len(n.input) == 2:
            src = [g.fused_source(g.undq(t)) for t in n.input]
            if any(s is not None and g.dq_of_weight(s.input[g.weight_index(s) or 0]) for s in src):
                quantised = sum(g.dq_of_activation(t) for t in n.input)
                if quantised != 1:
                    out["residual"].append(f"{n.name}: {quantised} quantised inputs")
        if n.op_type in ACTIVATIONS and g.op(n.input[0]) == "DequantizeLinear":
            q = g.producer.get(g.producer[n.input[0]].input[0])
            if q is not None and g.op(q.input[0]) in WEIGHTED:
                out["conv_act"].append(f"{n.name}: Q/DQ between {g.producer[q.input[0]].name} and it")
    ops, pats = islands or (DEFAULT_KEEP_FP32_OPS, DEFAULT_KEEP_FP32_NODES)
    fp32_ok: set[str] = {i.name for i in model.graph.input}
    for n in g.nodes:
        outs = [t for t in n.output if g.elem.get(t) == TensorProto.FLOAT]
        if not outs or n.op_type in ("Cast", "DequantizeLinear") or all(t in g.consts for t in outs):
            continue  # casts: the graph's float32 I/O; a float32 DequantizeLinear only feeds an island (below)
        island = n.op_type in ops or any(fnmatch.fnmatchcase(n.name, p) for p in pats)
        acts = [t for t in n.input if t and t not in g.consts and g.elem.get(t) in (TensorProto.FLOAT,
                                                                                    TensorProto.FLOAT16)]
        follows = n.op_type in FOLLOW_OPS and acts and all(t in fp32_ok for t in acts)
        if island or follows:
            fp32_ok.update(outs)
        else:
            out["float32"].append(f"{n.op_type} {n.name}")
    return out


def placement_report(problems: dict[str, list[str]]) -> str:
    return "; ".join(f"{k}: {len(v)} ({v[:2]})" for k, v in problems.items() if v)
