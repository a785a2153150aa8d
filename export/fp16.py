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

This module holds the policy (which nodes stay float32, :func:`to_mixed_fp16` deciding node by node) and the file
level; the graph rewriting itself (steps 2-5) is :mod:`srpose.export._fp16_graph`.

Default float32 islands, decided by measuring each candidate on the presets (real COCO crops, float16 rounding
emulated as in :mod:`engines._fp16_emulation`, output vs the FP32 graph):

- the in-graph decoder (pixel coordinates) and everything cheap after a float32 node (:data:`FOLLOW_OPS`).
- not the heads' output convolutions (``heatmap_head`` / ``converge`` / ``final_layer``) any more (#22): on
  random weights keeping them in float32 cut the decoded-keypoint error of ``res50_srpose`` from 0.80 to 0.06 px
  (flat, low-amplitude heatmaps lose their arg-max to float16 rounding), but on the trained demo model and
  TransPose their float16 costs no measurable AP (docs/benchmarks.md, "AP-guided INT8 search"), while the SRPose
  head's output conv writes the largest activation of the graph (the demo's: 47% of its MACs) and float32 doubles
  its bytes. ``--keep-fp32-nodes '*converge*' '/decode/*'`` keeps it in float32.
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
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from srpose.export._fp16_graph import Fp16Rewrite

__all__ = ["DEFAULT_KEEP_FP32_OPS", "DEFAULT_KEEP_FP32_NODES", "Fp16Report", "convert_fp16", "to_mixed_fp16",
           "modelopt_available"]

#: op types kept in float32 by default: normalisations and reductions (sums of squares and exponentials overflow
#: or lose precision in float16 inside TensorRT's kernels), exp/log.
DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum",
    "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt",
    "Reciprocal",
)
#: node-name patterns (fnmatch) kept in float32 by default: the in-graph decoder (pixel coordinates).
DEFAULT_KEEP_FP32_NODES: tuple[str, ...] = ("/decode/*",)
#: cheap ops that stay float32 when all their activation inputs are float32 (so the tail after a float32 node,
#: e.g. pixel shuffle and the in-graph flip merge after the final conv, does not round-trip through float16).
FOLLOW_OPS = frozenset((
    "Reshape", "Transpose", "DepthToSpace", "SpaceToDepth", "Gather", "GatherElements", "Slice", "Concat", "Split",
    "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile", "Pad", "Where", "Add", "Sub", "Mul", "Div",
    "Relu", "Clip", "Max", "Min", "ReduceMax", "ArgMax", "Neg", "Abs", "Sign",
))


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
    """Whether node ``name`` is one of ``patterns`` (exact names or fnmatch patterns)."""
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def to_mixed_fp16(model: "Any", *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                  keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES) -> tuple["Any", Fp16Report]:
    """Return a float16 copy of an FP32 ``onnx.ModelProto`` (float32 I/O) and a :class:`Fp16Report`."""
    from srpose.export._fp16_graph import Fp16Rewrite

    report = Fp16Report()
    rewrite = Fp16Rewrite(model, report)
    for node in rewrite.nodes:
        rewrite.convert_node(node, _runs_in_fp16(node, rewrite, keep_fp32_ops, keep_fp32_nodes, report))
    rewrite.cast_outputs_back()
    return rewrite.finalise(), report


def _runs_in_fp16(node: Any, rewrite: Fp16Rewrite, keep_fp32_ops: Sequence[str], keep_fp32_nodes: Sequence[str],
                  report: Fp16Report) -> bool:
    """Whether ``node`` moves to float16: it has a float tensor, is a standard-domain op, and is neither kept in
    float32 (by op type or name pattern) nor a :data:`FOLLOW_OPS` op whose activation inputs are all float32 now.
    Nodes kept or followed in float32 are counted in ``report``."""
    float_in, float_out = rewrite.float_inputs(node), rewrite.float_outputs(node)
    low = any(float_in) or any(float_out)
    by_name = _matches(node.name, keep_fp32_nodes)
    keep = by_name or node.op_type in keep_fp32_ops
    activations = [n for n, f in zip(node.input, float_in) if f and not rewrite.is_initializer(n)]
    follow = (not keep and node.op_type in FOLLOW_OPS and bool(activations)
              and all(rewrite.is_float32_now(n) for n in activations))
    if keep and low:
        if by_name:
            report.kept_fp32_nodes.append(node.name)
        else:
            report.kept_fp32_ops[node.op_type] = report.kept_fp32_ops.get(node.op_type, 0) + 1
    elif follow and low:
        report.followed_fp32 += 1
    keep = keep or follow
    return low and not keep and node.domain in ("", "ai.onnx")


def convert_fp16(src: str | Path, out_path: str | Path, *, keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS,
                 keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES, engine: str = "srpose") -> Fp16Report:
    """Write the mixed-precision FP16 version of the FP32 ONNX file ``src`` to ``out_path`` (atomically).

    ``engine="srpose"`` (default) uses :func:`to_mixed_fp16`; ``engine="modelopt"`` uses ModelOpt AutoCast with the
    same exclusions (``keep_io_types=True``). The file's card gets ``precision="fp16"`` and
    ``precision_details["fp16"]`` (the report).
    """
    import onnx

    from srpose.export.onnx_export import record_precision
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
    record_precision(out, "fp16", report.to_dict())
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
