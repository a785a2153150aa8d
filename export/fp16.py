"""FP32 ONNX -> strongly typed mixed-precision FP16 ONNX with float32 inputs and outputs.

TensorRT 11 builds every network strongly typed: a tensor's precision is the one written in the graph, so FP16
must be *in* the ONNX file. This module writes it there itself by default instead of calling NVIDIA ModelOpt
AutoCast, because ``nvidia-modelopt[onnx]`` pulls ``onnxruntime-gpu`` and ``cupy`` (no CPU-only install) and pins
an older ``onnx``; the transformation we need is small and fully checkable here:

1. every node runs in float16 except the ones kept in float32 (by op type or by node-name pattern);
2. float32 initializers read by float16 nodes get float16 copies (clamped to +-65504; counts of clamped and
   flushed-to-zero values are reported);
3. a ``Cast`` is inserted wherever a tensor crosses between the float16 and float32 regions, including after the
   graph input and before each graph output, so the I/O stays float32;
4. inputs whose schema does not accept float16 (e.g. ``Resize`` scales) stay float32, float ``Constant`` nodes are
   treated as initializers, and ``Cast`` / ``ConstantOfShape`` nodes inside the float16 region produce float16;
5. the result passes ``onnx.checker`` with strict shape/type inference and runs in ONNX Runtime.

Default float32 islands, decided by measuring each candidate on the presets (real COCO crops, float16 rounding
emulated as in :mod:`engines._fp16_emulation`, output vs the FP32 graph):

- the heads' output convolutions (``heatmap_head`` / ``converge`` / ``final_layer``) and everything cheap after
  them (pixel shuffle, in-graph flip merge, decoder): keeping them in float32 cut the decoded-keypoint error of
  ``res50_srpose`` from 0.80 to 0.06 px (relative L2 5.6e-4 -> 4.8e-4); low-amplitude heatmaps with flat peaks
  lose their arg-max to float16 rounding otherwise. The decoder always stays float32 (pixel coordinates).
- ``LayerNormalization`` / ``Softmax`` / reductions / ``Exp`` / ``Log`` (HRFormer attention): no measurable
  difference in the emulation, which computes inside each op in float32; kept anyway because TensorRT's float16
  kernels accumulate the sums of squares and exponentials in float16, where they can overflow (NVIDIA's guidance
  for LayerNorm and attention). ``Erf`` (GELU) and ``Resize`` made no difference; keeping every ``Add`` in
  float32 helped less than the output conv alone (0.26 px, 80 extra casts). They run in float16.

On a trained model (the demo preset, ``srpose demo``'s checkpoint) the AP cost of FP16 is noise: on 2,000 generated
persons, ΔAP against FP32 was 0.0000 with these defaults and 0.0000 with the whole head in float32 (mean keypoint
error 0.0064 vs 0.0041 px); on 250 or 1,000 persons every island choice scattered within +-0.0015 AP (single-pixel
arg-max flips), which is why the demo evaluates 2,000 persons. The whole SRPose head in float32 would cost 7-16% of
the presets' MACs at full resolution for no measurable AP, so it stays float16 (``srpose export --keep-fp32-nodes
'*keypoint_head*' ...`` keeps it in float32).

ONNX Runtime's CPU provider computes float16 nodes in float32 and drops the activation rounding; the ONNX Runtime
backend therefore runs float16 graphs with explicit rounding on the CPU (see :mod:`engines._fp16_emulation`).
"""
from __future__ import annotations

import fnmatch
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["DEFAULT_KEEP_FP32_OPS", "DEFAULT_KEEP_FP32_NODES", "Fp16Report", "convert_fp16", "to_mixed_fp16",
           "modelopt_available"]

#: op types kept in float32 by default: normalisations and reductions (sums of squares and exponentials overflow
#: or lose precision in float16 inside TensorRT's kernels), exp/log.
DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum",
    "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt",
    "Reciprocal",
)
#: node-name patterns (fnmatch) kept in float32 by default: the heads' output convolutions and the decoder.
DEFAULT_KEEP_FP32_NODES: tuple[str, ...] = ("*heatmap_head*", "*converge*", "*final_layer*", "/decode/*")
#: cheap ops that stay float32 when all their activation inputs are float32 (so the tail after a float32 node,
#: e.g. pixel shuffle and the in-graph flip merge after the final conv, does not round-trip through float16).
FOLLOW_OPS = frozenset((
    "Reshape", "Transpose", "DepthToSpace", "SpaceToDepth", "Gather", "GatherElements", "Slice", "Concat", "Split",
    "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile", "Pad", "Where", "Add", "Sub", "Mul", "Div",
    "Relu", "Clip", "Max", "Min", "ReduceMax", "ArgMax", "Neg", "Abs", "Sign",
))

_FP16_MAX = 65504.0


@dataclass
class Fp16Report:
    """What the conversion did."""

    nodes_fp16: int = 0
    nodes_fp32: int = 0
    kept_fp32_ops: dict[str, int] = field(default_factory=dict)
    kept_fp32_nodes: list[str] = field(default_factory=list)
    followed_fp32: int = 0
    casts_inserted: int = 0
    initializers_converted: int = 0
    values_clamped: int = 0
    values_flushed: int = 0
    engine: str = "srpose"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def modelopt_available() -> bool:
    """Whether NVIDIA ModelOpt's ONNX AutoCast can be imported."""
    try:
        return importlib.util.find_spec("modelopt.onnx.autocast") is not None
    except ModuleNotFoundError:
        return False


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


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


def to_mixed_fp16(model: "Any", *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                  keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES) -> tuple["Any", Fp16Report]:
    """Return a float16 copy of an FP32 ``onnx.ModelProto`` (float32 I/O) and a :class:`Fp16Report`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    src = onnx.ModelProto()
    src.CopyFrom(model)
    graph = src.graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ValueError(f"node {node.name!r} ({node.op_type}) has a subgraph; FP16 conversion of control "
                                 "flow is not supported")
    _constants_to_initializers(graph)
    inferred = onnx.shape_inference.infer_shapes(src, strict_mode=True)
    elem: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in graph.initializer}
    for name, t in inits.items():
        elem[name] = t.data_type
    bad_io = [vi.name for vi in list(graph.input) + list(graph.output) if elem.get(vi.name) != FLOAT]
    if bad_io:
        raise ValueError(f"FP16 conversion expects float32 graph inputs and outputs; {bad_io} are not float32")
    opset = max((o.version for o in src.opset_import if o.domain in ("", "ai.onnx")), default=17)

    report = Fp16Report()
    cur: dict[str, int] = {vi.name: FLOAT for vi in graph.input}  # actual type of each float tensor now
    new_nodes: list[Any] = []
    converted_inits: dict[str, str] = {}
    new_inits: list[Any] = []
    casts: dict[tuple[str, int], str] = {}

    def unique(base: str) -> str:
        name, i = base, 1
        while name in elem or name in cur:
            name, i = f"{base}_{i}", i + 1
        elem[name] = -1
        return name

    def fp16_init(name: str) -> str:
        if name not in converted_inits:
            arr = numpy_helper.to_array(inits[name]).astype(np.float32)
            big = np.abs(arr) > _FP16_MAX
            tiny = (arr != 0) & (np.abs(arr) < np.finfo(np.float16).smallest_subnormal)
            report.values_clamped += int(big.sum())
            report.values_flushed += int(tiny.sum())
            half = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
            new_name = unique(f"{name}_fp16")
            new_inits.append(numpy_helper.from_array(half, new_name))
            converted_inits[name] = new_name
            report.initializers_converted += 1
        return converted_inits[name]

    def cast_to(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = unique(f"{name}_to_{'fp16' if to == HALF else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}_cast", to=to))
            casts[key] = out
            report.casts_inserted += 1
        return casts[key]

    for node in graph.node:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
        float_in = [bool(n) and elem.get(n) == FLOAT for n in node.input]
        float_out = [elem.get(n) == FLOAT for n in node.output]
        low = any(float_in) or any(float_out)
        by_name = _matches(node.name, keep_fp32_nodes)
        keep = by_name or node.op_type in keep_fp32_ops
        activations = [n for n, f in zip(node.input, float_in) if f and n not in inits]
        follow = (not keep and node.op_type in FOLLOW_OPS and bool(activations)
                  and all(cur.get(n, FLOAT) == FLOAT for n in activations))
        if keep and low:
            if by_name:
                report.kept_fp32_nodes.append(node.name)
            else:
                report.kept_fp32_ops[node.op_type] = report.kept_fp32_ops.get(node.op_type, 0) + 1
        elif follow and low:
            report.followed_fp32 += 1
        keep = keep or follow
        low = low and not keep and node.domain in ("", "ai.onnx")
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
            have = cur.get(name, FLOAT)
            if have == want:
                continue
            if name in inits and want == HALF:
                node.input[i] = fp16_init(name)
            elif name in inits:  # a float16 copy is not needed: the float32 original is read
                continue
            else:
                node.input[i] = cast_to(name, want)
        if low:
            _retype_attributes(node, HALF, FLOAT, report)
        for i, name in enumerate(node.output):
            if not float_out[i]:
                continue
            out_type = FLOAT
            if low:
                ok, var = _allows_fp16(schema, i, False)
                if ok and (var in fp16_vars or node.op_type in ("Cast", "ConstantOfShape")):
                    out_type = HALF
            cur[name] = out_type
        if low:
            report.nodes_fp16 += 1
        elif any(float_in) or any(float_out):
            report.nodes_fp32 += 1
        new_nodes.append(node)

    # graph outputs must stay float32: rename float16 producers' outputs and cast back to the output name
    for out in graph.output:
        if cur.get(out.name) != HALF:
            continue
        renamed = unique(f"{out.name}_fp16")
        for n in new_nodes:
            for i, v in enumerate(n.output):
                if v == out.name:
                    n.output[i] = renamed
            for i, v in enumerate(n.input):
                if v == out.name:
                    n.input[i] = renamed
        new_nodes.append(helper.make_node("Cast", [renamed], [out.name], name=f"{out.name}_cast_fp32", to=FLOAT))
        report.casts_inserted += 1

    used = {v for n in new_nodes for v in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]
    out_model = onnx.shape_inference.infer_shapes(src, strict_mode=True)
    onnx.checker.check_model(out_model, full_check=True)
    return out_model, report


def _constants_to_initializers(graph: Any) -> None:
    """Float ``Constant`` nodes become initializers, so they are converted (or kept) like weights."""
    from onnx import TensorProto

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


def _retype_attributes(node: Any, half: int, single: int, report: Fp16Report) -> None:
    """Float16 versions of the float32 type attributes of a node moved to the float16 region."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == single:
            attr.i = half
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == single:
            arr = numpy_helper.to_array(attr.t).astype(np.float32)
            report.values_clamped += int((np.abs(arr) > _FP16_MAX).sum())
            attr.t.CopyFrom(numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16),
                                                    attr.t.name))


def convert_fp16(src: str | Path, out_path: str | Path, *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                 keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES, engine: str = "srpose") -> Fp16Report:
    """Write the mixed-precision FP16 version of the FP32 ONNX file ``src`` to ``out_path`` (atomically).

    ``engine="srpose"`` (default) uses :func:`to_mixed_fp16`; ``engine="modelopt"`` uses ModelOpt AutoCast with the
    same exclusions (``keep_io_types=True``). The file's metadata gets ``precision="fp16"`` and ``fp16`` (the report).
    """
    import onnx

    from srpose.export.onnx_export import set_metadata
    from srpose._io import atomic_write_bytes

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"FP32 ONNX file {src} does not exist")
    model = onnx.load(str(src))
    if engine == "srpose":
        out, report = to_mixed_fp16(model, keep_fp32_ops=keep_fp32_ops, keep_fp32_nodes=keep_fp32_nodes)
    elif engine == "modelopt":
        out, report = _modelopt_fp16(src, model, keep_fp32_ops, keep_fp32_nodes)
    else:
        raise ValueError(f"FP16 engine {engine!r} is unknown: use 'srpose' or 'modelopt'")
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    set_metadata(out, {"precision": "fp16", "fp16": report.to_dict()})
    atomic_write_bytes(out_path, out.SerializeToString(deterministic=True))
    return report


def _modelopt_fp16(src: Path, model: Any, keep_ops: Sequence[str], keep_nodes: Sequence[str]) -> tuple[Any, Fp16Report]:
    if not modelopt_available():
        raise RuntimeError("FP16 engine 'modelopt' needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]', or "
                           "use the built-in converter (engine='srpose')")
    import re

    from modelopt.onnx.autocast import convert_to_mixed_precision  # type: ignore[import-not-found]

    names = [n.name for n in model.graph.node if _matches(n.name, keep_nodes)]
    present_ops = sorted({n.op_type for n in model.graph.node} & set(keep_ops))
    out = convert_to_mixed_precision(
        onnx_path=str(src), low_precision_type="fp16", keep_io_types=True,
        nodes_to_exclude=[f"^{re.escape(n)}$" for n in names], op_types_to_exclude=present_ops)
    return out, Fp16Report(kept_fp32_nodes=names, engine="modelopt")
