"""Where the INT8 graph puts its Q/DQ pairs: TensorRT's explicit-quantisation placement rules, applied to an FP32
graph and a set of weighted layers to quantise (:func:`plan_qdq`).

The rules (TensorRT developer guide, "Explicit Quantization", Q/DQ layer-placement recommendations; the choices
NVIDIA ModelOpt's ONNX quantiser makes where the guide leaves room are named):

1. **Every input of a quantised weighted op** (Conv, ConvTranspose, Gemm, MatMul with a constant weight): the
   activation through a Q/DQ pair (per tensor), the weight through a DequantizeLinear of int8 weights (per output
   channel: axis 0 for Conv and Gemm with ``transB``, 1 for ConvTranspose, MatMul and Gemm without). No Q/DQ on
   outputs, so TensorRT fuses the op with its bias, normalisation, activation and residual add and chooses the
   output precision from what reads it.
2. **The residual input of a residual Add.** An Add of two activations one of which comes from a weighted op
   through ops a fused epilogue absorbs (bias, scale, BatchNormalization, activations, reshapes; each tensor on
   the way read by nothing else) is fused into that op; its *other* input is the residual. When the fused op is
   quantised, the residual gets a Q/DQ pair, so Conv+Add(+ReLU) fuse with an INT8 output (the guide: "the
   precision of the first input to the element-wise addition layer determines the precision of the output of the
   fusion"). When both inputs qualify (a ResNet downsampling block: conv2 and the downsample conv; the SRPose
   head's stage-0 ReLU + ReLU), the input from the deeper op (longest path from the graph input) is the fused one
   and the shallower one the residual, ModelOpt's rule (the longer path to the common ancestor).
3. **A Concat feeding quantised ops** (the SRPose head: ``Concat(Resize(x), skip) -> fuse conv``) keeps its Q/DQ on
   the Concat's output, where the conv reads it, and each Concat input made by a Resize gets a Q/DQ pair on the
   Resize's input with the same scale (ModelOpt places it there, and groups Concat scales): the Resize then moves
   INT8 and TensorRT's Q back-propagation through the Concat quantises the other inputs in their producers.
4. Excluded layers (``srpose export --int8-exclude``, the FP16 layers of ``srpose quantize``) read the
   unquantised tensor even when an INT8 layer reads the same tensor through a Q/DQ pair.

Only the consumers named in :attr:`Placement.activations` are rewired to a DequantizeLinear; everything else keeps
reading the original tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["WEIGHTED_OPS", "PLACEMENT_OP_TYPES", "Placement", "GraphIndex", "plan_qdq", "weight_slot",
           "residual_add_inputs"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: op types, besides the quantised ones, whose input ranges the placement needs (residual Adds, Resize inputs)
PLACEMENT_OP_TYPES = ("Add", "Resize")
#: single-activation ops a fused conv / GEMM epilogue absorbs (with constants for their other operands)
EPILOGUE_OPS = frozenset(("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
                          "Selu", "Softplus", "BatchNormalization", "Add", "Sub", "Mul", "Div"))
#: layout ops between a weighted op and its epilogue (TensorRT folds them or runs them as shuffles)
VIEW_OPS = frozenset(("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"))
#: Resize modes whose output values are input values or their convex combinations (the input's scale fits)
_RESIZE_MODES = (b"nearest", b"linear")


class GraphIndex:
    """Producers, data consumers, constants and topological depth of an ONNX graph's tensors."""

    def __init__(self, model: Any) -> None:
        g = model.graph
        self.nodes = {n.name: n for n in g.node}
        self.constants = {t.name for t in g.initializer}
        for n in g.node:  # Constant nodes and what is computed from constants only (a Q -> DQ of a float weight)
            if all(t in self.constants for t in n.input if t):
                self.constants.update(o for o in n.output if o)
        self.producer: dict[str, Any] = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        for n in g.node:
            for i, t in enumerate(n.input):
                if t:
                    self.consumers.setdefault(t, []).append((n, i))
        self.outputs = {o.name for o in g.output}
        self.depth: dict[str, int] = {}
        for n in g.node:  # graph order is topological (checked by onnx.checker)
            d = max((self.depth.get(self.producer[t].name, 0) for t in n.input if t in self.producer), default=0)
            self.depth[n.name] = d + 1

    def data_consumers(self, tensor: str) -> list[tuple[Any, int]]:
        """Consumers that read the values of ``tensor`` (``Shape`` reads only its shape)."""
        return [(n, i) for n, i in self.consumers.get(tensor, []) if n.op_type != "Shape"]

    def variable_inputs(self, node: Any) -> list[int]:
        """Indices of ``node``'s non-empty inputs that are not constants."""
        return [i for i, t in enumerate(node.input) if t and t not in self.constants]


def weight_slot(node: Any, constants: Iterable[str]) -> tuple[int, int] | None:
    """(input index of the constant weight, its output-channel axis) of a weighted op, or None (an activation x
    activation MatMul, a Conv with a computed weight)."""
    consts = set(constants)
    if node.op_type in ("Conv", "ConvTranspose"):
        return (1, 0 if node.op_type == "Conv" else 1) if len(node.input) > 1 and node.input[1] in consts else None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return (1, 0 if trans_b else 1) if node.input[1] in consts else None
    if node.op_type == "MatMul":
        if node.input[1] in consts:
            return 1, 1  # K x N: per output column
        if node.input[0] in consts:
            return 0, 0  # M x K weight on the left: per output row
    return None


@dataclass
class Placement:
    """The Q/DQ pairs of one INT8 graph: ``weights`` (node -> (weight input index, axis)), ``activations``
    (tensor -> the (node, input index) reading its DequantizeLinear), ``groups`` (tensors sharing one scale),
    and ``residual`` (residual Add -> index of its quantised input)."""

    quantised: list[str]
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)
    activations: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    residual: dict[str, int] = field(default_factory=dict)

    def request(self, tensor: str, node: str, index: int) -> None:
        readers = self.activations.setdefault(tensor, [])
        if (node, index) not in readers:
            readers.append((node, index))


def plan_qdq(model: Any, quantised: Iterable[str]) -> Placement:
    """The :class:`Placement` of FP32 ``model`` with the weighted nodes named in ``quantised`` in INT8."""
    idx = GraphIndex(model)
    names = set(quantised)
    order = [n.name for n in model.graph.node if n.name in names]
    place = Placement(quantised=order)
    for name in order:
        node = idx.nodes[name]
        slot = weight_slot(node, idx.constants)
        if slot is not None:
            place.weights[name] = slot
            acts = [i for i in idx.variable_inputs(node)[:2] if i != slot[0]]
        else:  # an activation x activation MatMul asked for (quantize_activation_matmuls)
            acts = idx.variable_inputs(node)[:2]
        for i in acts:
            place.request(node.input[i], name, i)
            _concat_resize(idx, place, node.input[i], names)
    for add, res in residual_add_inputs(model, idx).items():
        node = idx.nodes[add]
        fused = _backbone(idx, node.input[1 - res])
        if fused is not None and fused.name in names:
            place.request(node.input[res], add, res)
            place.residual[add] = res
    return place


def _concat_resize(idx: GraphIndex, place: Placement, tensor: str, quantised: set[str]) -> None:
    """Rule 3: a Concat output read only by quantised ops -> Q/DQ on the inputs of the Resizes feeding it."""
    concat = idx.producer.get(tensor)
    if concat is None or concat.op_type != "Concat":
        return
    readers = idx.data_consumers(tensor)
    if not readers or any(n.name not in quantised for n, _ in readers):
        return
    group = [tensor]
    for t in concat.input:
        resize = idx.producer.get(t)
        if resize is None or resize.op_type != "Resize" or len(idx.data_consumers(t)) != 1:
            continue
        mode = next((a.s for a in resize.attribute if a.name == "mode"), b"nearest")
        src = resize.input[0]
        if mode in _RESIZE_MODES and src not in idx.constants:
            place.request(src, resize.name, 0)
            group.append(src)
    if len(group) > 1 and group not in place.groups:
        place.groups.append(group)


def _backbone(idx: GraphIndex, tensor: str) -> Any | None:
    """The weighted op (with a constant weight) whose fused epilogue produces ``tensor``: walking back through
    epilogue and view ops, every tensor on the way read by exactly one node; None when there is none."""
    t = tensor
    while True:
        node = idx.producer.get(t)
        if node is None or len(idx.data_consumers(t)) != 1:
            return None
        if node.op_type in WEIGHTED_OPS:
            return node if weight_slot(node, idx.constants) is not None else None
        var = idx.variable_inputs(node)
        if node.op_type not in EPILOGUE_OPS | VIEW_OPS or len(var) != 1:
            return None
        t = node.input[var[0]]


def residual_add_inputs(model: Any, idx: GraphIndex | None = None) -> dict[str, int]:
    """Residual Adds of FP32 ``model``: Add node -> index of its residual input (rule 2 of the module docstring:
    the other input is fused into a weighted op's epilogue)."""
    idx = idx or GraphIndex(model)
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Add" or len(idx.variable_inputs(node)) != 2 or len(node.input) != 2:
            continue
        ops = [_backbone(idx, t) for t in node.input]
        if ops[0] is None and ops[1] is None:
            continue
        if ops[0] is not None and ops[1] is not None:
            fused = 0 if idx.depth[ops[0].name] >= idx.depth[ops[1].name] else 1
        else:
            fused = 0 if ops[0] is not None else 1
        out[node.name] = 1 - fused
    return out
