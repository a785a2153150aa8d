"""The graph mechanics of :func:`srpose.export.fp16.to_mixed_fp16`: a typed copy of an FP32 graph rewritten node by
node once each node's precision is decided (that policy is :mod:`srpose.export.fp16`'s).

:class:`Fp16Rewrite` prepares the copy (subgraphs refused, float ``Constant`` nodes made initializers, element types
inferred, float32 I/O checked), rewrites each node (:meth:`~Fp16Rewrite.convert_node`: float16 initializer copies,
casts at region boundaries, float16 type attributes and outputs where the schema allows), casts float16 graph
outputs back to float32 (:meth:`~Fp16Rewrite.cast_outputs_back`) and finishes (:meth:`~Fp16Rewrite.finalise`:
unused initializers dropped, strict shape inference and the full checker).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from srpose.export.fp16 import Fp16Report

__all__ = ["Fp16Rewrite", "FP16_MAX"]

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
#: the largest finite float16; float32 values beyond it are clamped
FP16_MAX = 65504.0


class Fp16Rewrite:
    """A copy of an FP32 ``onnx.ModelProto`` being rewritten into mixed precision with float32 inputs and outputs.

    Feed every node of :attr:`nodes`, in order, to :meth:`convert_node` (with its decided precision), then call
    :meth:`cast_outputs_back` and :meth:`finalise`; ``report``'s counters are updated on the way.
    """

    def __init__(self, model: onnx.ModelProto, report: Fp16Report) -> None:
        self.report = report
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        _reject_subgraphs(self.graph)
        _constants_to_initializers(self.graph)
        self.elem = _element_types(self.model)  # element type of every tensor of the FP32 graph
        self.inits = {t.name: t for t in self.graph.initializer}
        for name, t in self.inits.items():
            self.elem[name] = t.data_type
        bad_io = [vi.name for vi in list(self.graph.input) + list(self.graph.output) if self.elem.get(vi.name) != FLOAT]
        if bad_io:
            raise ValueError(f"FP16 conversion expects float32 graph inputs and outputs; {bad_io} are not float32")
        self.opset = max((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), default=17)
        self.cur: dict[str, int] = {vi.name: FLOAT for vi in self.graph.input}  # type of each float tensor now
        self.new_nodes: list[Any] = []
        self.new_inits: list[Any] = []
        self.converted_inits: dict[str, str] = {}  # float32 initializer -> its float16 copy
        self.casts: dict[tuple[str, int], str] = {}  # (tensor, type) -> its cast

    @property
    def nodes(self) -> Any:
        """The nodes of the FP32 graph, in order."""
        return self.graph.node

    # -- queries for the precision policy --------------------------------------------------------------
    def float_inputs(self, node: Any) -> list[bool]:
        """Per input of ``node``: whether it is a float32 tensor of the FP32 graph."""
        return [bool(n) and self.elem.get(n) == FLOAT for n in node.input]

    def float_outputs(self, node: Any) -> list[bool]:
        """Per output of ``node``: whether it is a float32 tensor of the FP32 graph."""
        return [self.elem.get(n) == FLOAT for n in node.output]

    def is_initializer(self, name: str) -> bool:
        """Whether tensor ``name`` is an initializer (weights and former float ``Constant`` nodes)."""
        return name in self.inits

    def is_float32_now(self, name: str) -> bool:
        """Whether tensor ``name`` is float32 in the rewritten graph so far."""
        return self.cur.get(name, FLOAT) == FLOAT

    # -- the rewrite -----------------------------------------------------------------------------------
    def convert_node(self, node: Any, low: bool) -> None:
        """Rewrite ``node`` to run in float16 (``low``) or float32 and append it, with the casts it needs."""
        schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain or "")
        float_in, float_out = self.float_inputs(node), self.float_outputs(node)
        fp16_vars = self._convert_inputs(node, schema, float_in, low)
        if low:
            _retype_attributes(node, HALF, FLOAT, self.report)
        self._set_output_types(node, schema, float_out, low, fp16_vars)
        if low:
            self.report.nodes_fp16 += 1
        elif any(float_in) or any(float_out):
            self.report.nodes_fp32 += 1
        self.new_nodes.append(node)

    def _convert_inputs(self, node: Any, schema: Any, float_in: list[bool], low: bool) -> set[str]:
        """Point each float input of ``node`` at a tensor of the type it reads (a float16 initializer copy or a
        cast); returns the schema's type variables bound to float16."""
        fp16_vars: set[str] = set()
        for i, name in enumerate(node.input):
            if not float_in[i]:
                continue
            want = FLOAT
            if low:
                ok, var = _allows_fp16(schema, i, True)
                if ok:
                    want = HALF
                    if var:
                        fp16_vars.add(var)
            have = self.cur.get(name, FLOAT)
            if have == want:
                continue
            if name in self.inits and want == HALF:
                node.input[i] = self._fp16_init(name)
            elif name in self.inits:  # a float16 copy is not needed: the float32 original is read
                continue
            else:
                node.input[i] = self._cast_to(name, want)
        return fp16_vars

    def _set_output_types(self, node: Any, schema: Any, float_out: list[bool], low: bool,
                          fp16_vars: set[str]) -> None:
        """Record the type of each float output of ``node``: float16 where its schema ties it to a float16 input
        (or it is a ``Cast`` / ``ConstantOfShape`` moved to float16), float32 otherwise."""
        for i, name in enumerate(node.output):
            if not float_out[i]:
                continue
            out_type = FLOAT
            if low:
                ok, var = _allows_fp16(schema, i, False)
                if ok and (var in fp16_vars or node.op_type in ("Cast", "ConstantOfShape")):
                    out_type = HALF
            self.cur[name] = out_type

    def cast_outputs_back(self) -> None:
        """Keep the graph outputs float32: a float16 output's producer gets a new output name, cast to the old."""
        for out in self.graph.output:
            if self.cur.get(out.name) != HALF:
                continue
            renamed = self._unique(f"{out.name}_fp16")
            for n in self.new_nodes:
                for i, v in enumerate(n.output):
                    if v == out.name:
                        n.output[i] = renamed
                for i, v in enumerate(n.input):
                    if v == out.name:
                        n.input[i] = renamed
            self.new_nodes.append(helper.make_node("Cast", [renamed], [out.name], name=f"{out.name}_cast_fp32",
                                                   to=FLOAT))
            self.report.casts_inserted += 1

    def finalise(self) -> onnx.ModelProto:
        """The rewritten model: new nodes, the initializers still read, inferred types; passes the full checker."""
        graph = self.graph
        used = {v for n in self.new_nodes for v in n.input}
        kept_inits = [t for t in graph.initializer if t.name in used] + [t for t in self.new_inits if t.name in used]
        del graph.node[:]
        graph.node.extend(self.new_nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
        del graph.value_info[:]
        out_model = onnx.shape_inference.infer_shapes(self.model, strict_mode=True)
        onnx.checker.check_model(out_model, full_check=True)
        return out_model

    # -- new tensors -----------------------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        """A tensor name not used yet, ``base`` or ``base_<i>``; reserved from then on."""
        name, i = base, 1
        while name in self.elem or name in self.cur:
            name, i = f"{base}_{i}", i + 1
        self.elem[name] = -1
        return name

    def _fp16_init(self, name: str) -> str:
        """The float16 copy of float32 initializer ``name`` (made once; values clamped to +-65504, the counts of
        clamped and flushed-to-zero values reported)."""
        if name not in self.converted_inits:
            arr = numpy_helper.to_array(self.inits[name]).astype(np.float32)
            big = np.abs(arr) > FP16_MAX
            tiny = (arr != 0) & (np.abs(arr) < np.finfo(np.float16).smallest_subnormal)
            self.report.values_clamped += int(big.sum())
            self.report.values_flushed += int(tiny.sum())
            half = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
            new_name = self._unique(f"{name}_fp16")
            self.new_inits.append(numpy_helper.from_array(half, new_name))
            self.converted_inits[name] = new_name
            self.report.initializers_converted += 1
        return self.converted_inits[name]

    def _cast_to(self, name: str, to: int) -> str:
        """Tensor ``name`` cast to type ``to`` (one ``Cast`` node per tensor and type, appended when first needed)."""
        key = (name, to)
        if key not in self.casts:
            out = self._unique(f"{name}_to_{'fp16' if to == HALF else 'fp32'}")
            self.new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=to))
            self.casts[key] = out
            self.report.casts_inserted += 1
        return self.casts[key]


# ---------------------------------------------------------------------------------------------- preparation
def _reject_subgraphs(graph: Any) -> None:
    """Refuse control flow: nodes with graph attributes (If, Loop, Scan) are not converted."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ValueError(f"node {node.name!r} ({node.op_type}) has a subgraph; FP16 conversion of control "
                                 "flow is not supported")


def _constants_to_initializers(graph: Any) -> None:
    """Float ``Constant`` nodes become initializers, so they are converted (or kept) like weights."""
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                and node.attribute[0].t.data_type == TensorProto.FLOAT:
            t = TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            graph.initializer.append(t)
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value of ``model`` (intermediate tensors, inputs, outputs) by strict inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    elem: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    return elem


# ---------------------------------------------------------------------------------------------- per node
def _allows_fp16(schema: Any, index: int, is_input: bool) -> tuple[bool, str | None]:
    """(float16 allowed for this formal input/output, its type variable or None)."""
    params = schema.inputs if is_input else schema.outputs
    if not params:
        return False, None
    param = params[min(index, len(params) - 1)]  # variadic: the last formal parameter repeats
    type_str = param.type_str
    for c in schema.type_constraints:
        if c.type_param_str == type_str:
            return "tensor(float16)" in c.allowed_type_strs, type_str
    return type_str == "tensor(float16)", None


def _retype_attributes(node: Any, half: int, single: int, report: Fp16Report) -> None:
    """Float16 versions of the float32 type attributes of a node moved to the float16 region."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == single:
            attr.i = half
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == single:
            arr = numpy_helper.to_array(attr.t).astype(np.float32)
            report.values_clamped += int((np.abs(arr) > FP16_MAX).sum())
            attr.t.CopyFrom(numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16),
                                                    attr.t.name))
