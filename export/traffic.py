"""Activation bytes a fused engine writes per person (:func:`activation_traffic`): the CPU-measurable stand-in for
TensorRT's memory traffic, from the graph's shapes and types alone.

Every tensor is counted at batch 1 (a top-down graph's person; with the in-graph flip test the doubled batch
counts), once per write, at the type it is stored in after the fusions a TensorRT engine makes:

- **views write nothing**: Reshape, Flatten, Squeeze, Unsqueeze, Identity, and DequantizeLinear (fused into what
  reads it: the reader reads the int8 tensor);
- **Q and Cast fuse into their producer**: when a QuantizeLinear or Cast is the only reader of its input, the
  producer writes the converted type directly (an INT8 conv followed by a Q writes int8); otherwise it is a
  kernel of its own and both tensors are written;
- **epilogues fuse**: a pointwise op (activation, BatchNormalization, bias / scale, GELU's Div-Erf-Add-Mul, a
  residual Add) joins the kernel of its main input when that input is read only by such ops; other inputs are read
  from memory (a fused weighted op takes one, the residual);
- **Concat writes nothing**: its inputs are written into its output; a Q or Cast reading the Concat is
  propagated back to them (TensorRT's Q back-propagation), as it is through the data-movement ops (Transpose,
  DepthToSpace, nearest Resize, MaxPool, Slice, Pad) whose input nothing else reads;
- the graph's inputs and outputs are the engine's I/O buffers, float32 in every precision: the input is not
  counted (the host writes it), the outputs are counted apart (:attr:`Traffic.output_bytes`), so the per-person
  figure and the ratios between precisions are of what the engine writes *between* its layers; non-float tensors
  (shapes, indices) are not counted.

What it leaves out: reads (a conv reads its input once or more depending on tiling), weights, workspace, and any
fusion TensorRT finds beyond these rules. Comparing two graphs of the same model with it says which one moves less
memory; it is not a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Traffic", "activation_traffic", "traffic_of_file", "export_traffic"]

_ALIAS = frozenset(("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "DequantizeLinear"))
_CONVERT = frozenset(("QuantizeLinear", "Cast"))
_POINTWISE = frozenset(("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
                        "Softplus", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Exp",
                        "Log", "Neg", "Abs", "Max", "Min", "Reciprocal"))
_MOVE = frozenset(("Transpose", "DepthToSpace", "SpaceToDepth", "MaxPool", "Slice", "Pad", "Resize"))
_WEIGHTED = frozenset(("Conv", "ConvTranspose", "Gemm", "MatMul"))
#: ONNX element type -> (name, bytes)
_TYPES = {1: ("float32", 4), 10: ("float16", 2), 16: ("bfloat16", 2), 3: ("int8", 1), 2: ("uint8", 1)}


@dataclass
class Traffic:
    """Activation bytes written per person between the engine's layers, by stored type; the number of those
    tensors; the bytes of the graph's outputs (written too, float32 in every precision); written tensors whose
    shape inference could not tell (not counted)."""

    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    tensors: int = 0
    output_bytes: int = 0
    unknown_shapes: int = 0

    @property
    def total(self) -> int:
        return sum(self.bytes_by_dtype.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(bytes_per_person=self.total, bytes_by_dtype=dict(sorted(self.bytes_by_dtype.items())),
                    tensors_written=self.tensors, output_bytes=self.output_bytes, unknown_shapes=self.unknown_shapes)

    def summary(self) -> str:
        """``1.23 MB/person (int8 0.40, float16 0.83)``."""
        parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sorted(self.bytes_by_dtype.items(), key=lambda kv: -kv[1])
                          if v)
        return f"{self.total / 1e6:.2f} MB/person written between layers ({parts or 'none'})"


def traffic_of_file(path: str | Path, input_hw: Sequence[int] | None = None) -> Traffic:
    """:func:`activation_traffic` of an ONNX file."""
    import onnx

    return activation_traffic(onnx.load(str(path)), input_hw)


def activation_traffic(model: Any, input_hw: Sequence[int] | None = None) -> Traffic:
    """The activation bytes ``model`` writes per person (module docstring). ``input_hw``: the input's H, W where
    they are dynamic (bottom-up graphs); the batch is 1."""
    g = _Graph(model, input_hw)
    group = g.kernels()
    stored: dict[str, int] = {}  # physical tensor -> stored element type
    for t, elem in g.elem.items():
        if t in g.alias_of or t in g.graph_inputs or t in g.consts or elem not in _TYPES or t not in g.producer:
            continue
        if g.producer[t].op_type == "Concat":
            continue  # its inputs are written into it
        if g.is_written(t, group):
            stored[t] = g.stored_type(t)
    _propagate_back(g, stored)
    out = Traffic()
    for t, elem in stored.items():
        name, size = _TYPES[elem]
        if g.shape.get(t) is None:
            out.unknown_shapes += 1
        elif t in g.graph_outputs:
            out.output_bytes += g.numel(t) * size
        else:
            out.bytes_by_dtype[name] = out.bytes_by_dtype.get(name, 0) + g.numel(t) * size
            out.tensors += 1
    return out


class _Graph:
    """Producers, readers (through views), types and batch-1 shapes of a graph's tensors."""

    def __init__(self, model: Any, input_hw: Sequence[int] | None) -> None:
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.graph_inputs = {i.name for i in model.graph.input}
        self.graph_outputs = {o.name for o in model.graph.output}
        self.consts = {t.name for t in model.graph.initializer}
        for n in self.nodes:  # constant-folded by the engine: weight DQs, constant subgraphs
            if all(t in self.consts for t in n.input if t):
                self.consts.update(o for o in n.output if o)
        self.shape, self.elem = _shapes(model, input_hw)
        self.alias_of: dict[str, str] = {}  # view output -> its physical tensor
        for n in self.nodes:
            if n.op_type in _ALIAS and n.input and n.input[0] in self.elem:
                self.alias_of[n.output[0]] = self.root(n.input[0])
        self.readers: dict[str, list[Any]] = {}  # physical tensor -> non-view nodes reading it (or its views)
        for n in self.nodes:
            if n.op_type in _ALIAS or n.op_type == "Shape":
                continue
            for t in dict.fromkeys(n.input):
                if t and t not in self.consts:
                    self.readers.setdefault(self.root(t), []).append(n)
        self.depth: dict[int, int] = {}  # id(node) -> longest path from the inputs
        for n in self.nodes:
            self.depth[id(n)] = 1 + max((self.depth[id(self.producer[t])] for t in n.input if t in self.producer),
                                         default=0)

    def root(self, t: str) -> str:
        return self.alias_of.get(t, t)

    def numel(self, t: str) -> int:
        return math.prod(self.shape.get(t) or [0])

    def kernels(self) -> dict[int, int]:
        """id(node) -> kernel id (fused nodes share one)."""
        group: dict[int, int] = {}
        self.weighted: set[int] = set()
        for n in self.nodes:
            if n.op_type in _ALIAS or n.op_type in ("Shape", "Constant", "Concat"):
                continue
            group[id(n)] = self._fused_into(n, group)
            if n.op_type in _WEIGHTED:
                self.weighted.add(group[id(n)])
        return group

    def _fused_into(self, n: Any, group: dict[int, int]) -> int:
        """The kernel ``n`` joins: its main input's, when it is an epilogue of it, else a new one."""
        own = len(group) + 1_000_000
        if n.op_type not in _POINTWISE and n.op_type not in _CONVERT:
            return own
        cands = []
        for t in n.input:
            p = self.producer.get(self.root(t)) if t and t not in self.consts else None
            if p is not None and id(p) in group and all(r.op_type in _POINTWISE | _CONVERT
                                                         for r in self.readers.get(self.root(t), [])):
                cands.append(p)
        if not cands:
            return own
        main = max(cands, key=lambda p: self.depth[id(p)])
        k = group[id(main)]
        outside = [t for t in n.input if t and t not in self.consts
                   and group.get(id(self.producer.get(self.root(t))), -1) != k]
        return k if not (k in self.weighted and len(outside) > 1) else own

    def is_written(self, t: str, group: dict[int, int]) -> bool:
        """Whether physical tensor ``t`` leaves its kernel: a graph output, or read by another kernel (a Concat
        counts: it is written into the Concat's buffer)."""
        if t in self.graph_outputs or any(self.root(o) == t for o in self.graph_outputs):
            return True
        p = self.producer[t]
        k = group.get(id(p))
        src = self.root(p.input[0]) if p.op_type in _CONVERT else None
        if src in self.producer and self.producer[src].op_type == "Concat" and len(self.readers.get(src, [])) == 1:
            return False  # a Q / Cast of a Concat: propagated back to the Concat's inputs (stored_type)
        readers = self.readers.get(t, [])
        if len(readers) == 1 and readers[0].op_type in _CONVERT and group.get(id(readers[0])) == k:
            return False  # converted in its producer: the converted tensor is the one written
        return any(r.op_type == "Concat" or group.get(id(r)) != k for r in readers)

    def stored_type(self, t: str) -> int:
        """The element type ``t`` is written in: its own, or that of the Q / Cast reading the Concat it feeds."""
        readers = self.readers.get(t, [])
        if len(readers) == 1 and readers[0].op_type == "Concat":
            out = readers[0].output[0]
            after = self.readers.get(out, [])
            if len(after) == 1 and after[0].op_type in _CONVERT:
                return self.elem.get(after[0].output[0], self.elem[t])
        return self.elem[t]


def _propagate_back(g: _Graph, stored: dict[str, int]) -> None:
    """Q back-propagation through data-movement ops: their input, read by nothing else, is written in int8 when
    their output is (reverse graph order, so chains propagate)."""
    for n in reversed(g.nodes):
        if n.op_type not in _MOVE or not n.output:
            continue
        out = n.output[0]
        readers = g.readers.get(out, [])
        if out not in stored and len(readers) == 1 and readers[0].op_type in _CONVERT:
            out = readers[0].output[0]  # converted in this kernel: the converted tensor is the one written
        if stored.get(out) not in (2, 3):
            continue
        if n.op_type == "Resize" and next((a.s for a in n.attribute if a.name == "mode"), b"nearest") != b"nearest":
            continue
        src = g.root(n.input[0])
        if src in stored and g.readers.get(src, []) == [n] and src not in g.graph_outputs:
            stored[src] = stored[out]


def inferred_value_infos(model: Any, input_hw: Sequence[int] | None = None, *, strict: bool = True) -> list[Any]:
    """Value infos of every input, inferred intermediate and output of ``model`` with its dynamic input dimensions
    pinned: the batch at 1, H and W at ``input_hw``; any other dynamic dimension raises (``strict``) or is 1."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                continue
            if i == 0:
                value = 1
            elif input_hw is not None and i >= len(dims) - 2:
                value = int(input_hw[i - len(dims) + 2])
            elif strict:
                raise ValueError(f"input {vi.name!r} has a dynamic dimension {i}: pass input_hw (H, W) to count "
                                 "the bytes of a graph of dynamic size (bottom-up)")
            else:
                value = 1
            d.Clear()
            d.dim_value = value
    del m.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    return list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)


def _shapes(model: Any, input_hw: Sequence[int] | None) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    """Batch-1 shapes (None: not inferred) and element types of every tensor (dynamic batch -> 1, dynamic H, W ->
    ``input_hw``)."""
    shape: dict[str, list[int] | None] = {}
    elem: dict[str, int] = {}
    for vi in inferred_value_infos(model, input_hw):
        t = vi.type.tensor_type
        elem[vi.name] = t.elem_type
        known = t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)
        shape[vi.name] = [d.dim_value for d in t.shape.dim] if known else None
    return shape, elem


def export_traffic(path: str | Path) -> dict[str, Any]:
    """The export report's bytes-moved entry of an exported file: :func:`activation_traffic` per person (top-down)
    or per image at the shape profile's optimum size (bottom-up: ``input_hw`` in the entry), as a dict."""
    import onnx

    from srpose.card import card_from_onnx

    model = onnx.load(str(path))
    card = card_from_onnx(model, source=str(path))
    hw = None if card is None or card.hw_profile is None else [int(v) for v in card.hw_profile[1]]
    out = activation_traffic(model, hw).to_dict()
    if hw is not None:
        out["input_hw"] = hw
    return out
