"""Quantisable layer groups of an FP32 ONNX graph and their multiply-accumulates, for the AP-guided INT8 search.

A *quantisable node* is a node the INT8 export would give Q/DQ inputs: an ``op_types`` node (Conv, ConvTranspose,
MatMul, Gemm) outside the in-graph flip merge and decoder, MatMuls with a weight only (attention products stay
float). Grouping (``by``):

- ``"node"``: one group per quantisable node;
- ``"block"`` (default): one group per block of the network, read from the exporter's scoped node names
  (``/model/backbone/layer1/layer1.0/conv1/Conv``): the deepest indexed module (``layer1.0``, ``branches.0.1``,
  ``post_fuse.0.0``, ``layers.1``) holding the node. A node that *is* an indexed module (``downsample.0``,
  ``pre_fuse.0.0``: a conv inside an ``nn.Sequential``) belongs to the block around its container; a node
  without an indexed module above it is its own group (``backbone/conv1``). Nodes without a scope (onnxsim names
  fused Gemms ``Gemm_3``) take the scope of the nearest scoped node before them in graph order.

MACs per item (batch 1) come from the graph's shapes (ONNX shape inference at batch 1): Conv
``C_out * H_out * W_out * C_in / groups * k_h * k_w``, ConvTranspose the same over the input positions, MatMul
and Gemm ``M * K * N`` (batched dimensions multiplied in). Biases, normalisations and activations are not counted:
the share that matters is of the work that can run in INT8.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["LayerGroup", "GROUPINGS", "layer_groups", "node_macs", "quantisable_nodes", "NEVER_INT8"]

GROUPINGS = ("block", "node")
#: node-name patterns never quantised (the in-graph flip merge and decoder: cheap, and pixel coordinates)
NEVER_INT8: tuple[str, ...] = ("/decode/*", "/flip_merge/*")
_INDEXED = re.compile(r".*\.\d+$")
_MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass
class LayerGroup:
    """A unit of the search: quantisable ``nodes`` (exact names, graph order) that move to FP16 together."""

    name: str
    nodes: list[str]
    macs: int
    op_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quantisable_nodes(model: "onnx.ModelProto", op_types: Sequence[str]) -> list[Any]:
    """The nodes the INT8 export would quantise, in graph order (see the module docstring)."""
    from srpose.export._int8_mixed import activation_matmuls

    attention = set(activation_matmuls(model))
    return [n for n in model.graph.node if n.op_type in op_types and n.name not in attention
            and not any(fnmatch.fnmatchcase(n.name, p) for p in NEVER_INT8)]


def layer_groups(model: "onnx.ModelProto", op_types: Sequence[str], *, by: str = "block") -> list[LayerGroup]:
    """The quantisable layer groups of FP32 ``model``, in graph order, with their MACs per item."""
    if by not in GROUPINGS:
        raise ValueError(f"grouping {by!r} is unknown: use one of {', '.join(GROUPINGS)}")
    nodes = quantisable_nodes(model, op_types)
    if not nodes:
        raise ValueError(f"the graph {model.graph.name!r} has no quantisable {'/'.join(op_types)} nodes")
    macs = node_macs(model)
    scope = _scopes(model)
    groups: dict[str, LayerGroup] = {}
    for n in nodes:
        key = _display(n.name) if by == "node" else _block(scope[n.name], own=n.name.startswith("/"))
        g = groups.setdefault(key, LayerGroup(key, [], 0, []))
        g.nodes.append(n.name)
        g.macs += macs.get(n.name, 0)
        if n.op_type not in g.op_types:
            g.op_types.append(n.op_type)
    return list(groups.values())


def _display(name: str) -> str:
    return name.removeprefix("/model/").removeprefix("/")


def _scopes(model: "onnx.ModelProto") -> dict[str, list[str]]:
    """Node name -> its module path (scope components without the op), inherited from the previous scoped node
    for unscoped names."""
    out: dict[str, list[str]] = {}
    last: list[str] = []
    for n in model.graph.node:
        if n.name.startswith("/"):
            parts = [p for p in n.name.split("/") if p]
            last = parts[:-1]
            if last and last[0] == "model":
                last = last[1:]
        out[n.name] = last
    return out


def _block(path: list[str], *, own: bool) -> str:
    """The block of a quantisable node's module path (see the module docstring); ``own``: the path is the node's
    own scope (its last component may be the layer itself), not one inherited from the previous scoped node."""
    if not path:
        return "(graph)"
    search = path
    if own and _INDEXED.match(path[-1]):
        search = path[:-1]  # the conv is itself an indexed Sequential child: look above its container
    for i in range(len(search) - 1, -1, -1):
        if _INDEXED.match(search[i]):
            return "/".join(_compact(search[: i + 1]))
    return "/".join(_compact(path))


def _compact(parts: list[str]) -> list[str]:
    """Drop a container component repeated as the prefix of its child (``layer1/layer1.0`` -> ``layer1.0``)."""
    out = []
    for i, p in enumerate(parts):
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if nxt is not None and nxt.startswith(p + "."):
            continue
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------- MACs
def node_macs(model: "onnx.ModelProto") -> dict[str, int]:
    """Multiply-accumulates per item (batch 1) of every Conv / ConvTranspose / MatMul / Gemm node whose shapes
    shape inference resolves (others are left out)."""
    shapes = _shapes_at_batch_1(model)
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type not in _MAC_OPS:
            continue
        macs = _macs(n, shapes)
        if macs is not None:
            out[n.name] = int(macs)
    return out


def _shapes_at_batch_1(model: "onnx.ModelProto") -> dict[str, list[int | None]]:
    from srpose.export.traffic import inferred_value_infos

    shapes: dict[str, list[int | None]] = {}
    for vi in inferred_value_infos(model, strict=False):  # batch (and dynamic sizes of other graphs) at 1
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _macs(node: Any, shapes: dict[str, list[int | None]]) -> int | None:
    a = shapes.get(node.input[0])
    b = shapes.get(node.input[1]) if len(node.input) > 1 else None
    y = shapes.get(node.output[0])
    if not a or not b or not y or None in a or None in b or None in y:
        return None
    if node.op_type in ("Conv", "ConvTranspose"):
        kernel = math.prod(b[2:])
        if node.op_type == "Conv":  # weight C_out x C_in/g x k
            return math.prod(y[1:]) * b[1] * kernel
        return math.prod(a[1:]) * b[1] * kernel  # weight C_in x C_out/g x k, over the input positions
    if node.op_type == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return math.prod(y) * k
    return math.prod(y) * a[-1]  # MatMul: every output element is a K-long dot product
