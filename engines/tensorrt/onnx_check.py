"""Will TensorRT 10's ONNX parser take this graph? A torch-free check against onnx-tensorrt's operator matrix.

The matrix (``docs/operators.md`` of onnx/onnx-tensorrt for TensorRT 10, opset 9-20) is read from
``onnx_operators_trt10.json``: the file named by ``SRPOSE_TRT_OPERATORS``, else the copy in ``../shared/trt_api/``
beside the repository, else a built-in subset (the matrix's rows of the ops ``srpose export`` writes). Checked per
node (subgraphs of If/Loop/Scan too):

- the default-domain opset is within the matrix's 9-20 and no node uses a custom domain (plugins are not
  registered by name here);
- the op is in the matrix and supported, and its data type is one of the matrix's types for it (strictly: the
  in-graph decoders clamp integer indices with Max/Min, which the matrix lists for INT32/INT64, not with Clip);
- the matrix's restrictions that can be read from the graph: Reduce*/Slice/Squeeze/Unsqueeze/Pad axes, CumSum
  axis, OneHot depth and Dropout ``training_mode`` are constants (initializers or Constant outputs); TopK's K is a
  constant below 3840 and ``sorted`` is 1; Q/DQ scales are constants and zero points constant zeros; Resize uses
  a supported mode / coordinate transform / nearest mode, no antialiasing and the ``stretch`` policy; pooling is
  2D/3D without dilation and MaxPool has no ``Indices`` output; LayerNormalization uses only ``Y``; Constant has
  no sparse or string value; ScatterND has no reduction; LSTM has ``input_forget`` and ``layout`` 0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["Problem", "OnnxCheckError", "check_onnx_for_tensorrt", "raise_for_problems", "load_operator_matrix",
           "TOPK_MAX"]

#: TopK's K must be below this (onnx-tensorrt's operator matrix)
TOPK_MAX = 3840
_MATRIX_NAME = "onnx_operators_trt10.json"
_DEFAULT_DOMAINS = ("", "ai.onnx")
_TYPE_NAMES = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 2: "UINT8", 9: "BOOL", 3: "INT8",
               17: "FP8", 22: "INT4", 11: "FP64", 4: "UINT16", 5: "INT16", 12: "UINT32", 13: "UINT64", 8: "STRING"}
#: input index whose type the matrix's "types" describes (default 0); -1: the first output
_TYPED_OPERAND = {"Where": 1, "ConstantOfShape": -1}
#: (op, input index, what) that must be constants
_CONSTANT_INPUTS = {
    **{op: ((1, "axes"),) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                     "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
                                     "Squeeze", "Unsqueeze")},
    "Slice": ((3, "axes"),), "Pad": ((3, "axes"),), "CumSum": ((1, "axis"),), "OneHot": ((1, "depth"),),
    "Dropout": ((2, "training_mode"),), "TopK": ((1, "K"),),
    "QuantizeLinear": ((1, "y_scale"), (2, "y_zero_point")),
    "DequantizeLinear": ((1, "x_scale"), (2, "x_zero_point")),
}
_RESIZE = {"mode": ("nearest", "linear"),
           "coordinate_transformation_mode": ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                              "asymmetric", "align_corners"),
           "nearest_mode": ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
           "keep_aspect_ratio_policy": ("stretch",)}
#: Fallback when no JSON copy of the matrix is found: the matrix's rows for the ops srpose's exporters write (and
#: a few common ones), as {types: ops}; any other op is reported as missing from this built-in subset.
_BUILTIN_TYPES = {
    "FP32 FP16 BF16 INT32 INT64": "Abs Add ArgMax DepthToSpace Div Equal Greater Less Max Min Mul Neg Pad Range "
                                  "ReduceMax ReduceMean ReduceSum Relu Sign Sub TopK",
    "BOOL": "And Not Or",
    "FP32 FP16 BF16": "AveragePool BatchNormalization Clip Conv ConvTranspose Cos Erf Exp Floor Gemm "
                      "GlobalAveragePool HardSigmoid HardSwish LayerNormalization LeakyRelu MatMul MaxPool Pow "
                      "QuantizeLinear Resize Sigmoid Sin Softmax Sqrt Tanh",
    "FP32 FP16 BF16 INT32 INT64 UINT8 BOOL": "Cast",
    "FP32 FP16 BF16 INT32 INT64 BOOL": "Concat Constant ConstantOfShape Expand Flatten Gather GatherElements "
                                       "Identity Reshape Shape Slice Split Squeeze Tile Transpose Unsqueeze Where",
    "INT8 FP8 INT4": "DequantizeLinear",
}


@dataclass(frozen=True)
class Problem:
    """One reason TensorRT 10's ONNX parser would refuse the graph."""

    node: str
    op: str
    problem: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.op}): {self.problem}" if self.op else f"{self.node}: {self.problem}"


class OnnxCheckError(ValueError):
    """The graph uses something TensorRT 10's ONNX parser does not take; ``problems`` lists each."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"  {p}" for p in problems[:25]] + ([f"  ... and {len(problems) - 25} more"]
                                                     if len(problems) > 25 else [])
        super().__init__(f"{source} would not parse with TensorRT 10's ONNX parser:\n" + "\n".join(lines) +
                         "\nre-export with srpose's exporter, change the model, or skip this check with "
                         "--skip-onnx-check if a plugin handles these nodes")


def _matrix_candidates() -> Iterator[Path]:
    env = os.environ.get("SRPOSE_TRT_OPERATORS")
    if env:
        yield Path(env)
    yield Path(__file__).resolve().parents[2].parent / "shared" / "trt_api" / _MATRIX_NAME  # ../shared of the repo


def load_operator_matrix(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"ops": {op: {"supported", "types", "restrictions"}}, "opset_min", "opset_max", "source"}``: the JSON at
    ``path``, else ``$SRPOSE_TRT_OPERATORS``, else ``../shared/trt_api/`` beside the repository, else the
    built-in subset."""
    for p in [Path(path)] if path is not None else _matrix_candidates():
        if p.is_file():
            return json.loads(p.read_text())
    if path is not None:
        raise FileNotFoundError(f"operator matrix {path} does not exist")
    ops = {op: {"supported": True, "types": ", ".join(types.split()), "restrictions": ""}
           for types, names in _BUILTIN_TYPES.items() for op in names.split()}
    return {"ops": ops, "opset_min": 9, "opset_max": 20, "builtin": True,
            "source": f"built-in subset (set SRPOSE_TRT_OPERATORS to a full {_MATRIX_NAME})"}


# ----------------------------------------------------------------------------------------- graph facts


class _Graph:
    """Constants (initializers, Constant outputs) and element types of a model's tensors."""

    def __init__(self, proto: Any) -> None:
        import onnx

        self.onnx = onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        except Exception:  # noqa: BLE001 - types are then known only where the graph states them
            inferred = proto
        self.consts: dict[str, Any] = {}
        self.types: dict[str, int] = {}
        self._collect(inferred.graph)

    def _collect(self, graph: Any) -> None:
        for t in graph.initializer:
            self.consts[t.name] = t
            self.types[t.name] = t.data_type
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                self.consts[node.output[0]] = value
                if value is not None:
                    self.types[node.output[0]] = value.data_type
            for a in node.attribute:
                for sub in ([a.g] if a.type == self.onnx.AttributeProto.GRAPH else list(a.graphs)):
                    self._collect(sub)

    def value(self, name: str) -> Any:
        """The numpy value of a constant (None when it is not a constant or has no readable value)."""
        t = self.consts.get(name)
        if t is None:
            return None
        from onnx import numpy_helper

        try:
            return numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001
            return None


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _nodes(graph: Any) -> Iterator[Any]:
    import onnx

    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _nodes(sub)


# ----------------------------------------------------------------------------------------- rules


def _constant_rules(node: Any, g: _Graph) -> Iterator[str]:
    for index, what in _CONSTANT_INPUTS.get(node.op_type, ()):
        if len(node.input) <= index or not node.input[index]:
            continue
        name = node.input[index]
        if name not in g.consts:
            yield f"{what} ({name!r}) must be a constant (an initializer or a Constant node)"
            continue
        value = g.value(name)
        if what.endswith("zero_point") and value is not None and value.size and (value != 0).any():
            yield f"{what} ({name!r}) must be zero (symmetric quantisation), got {value.reshape(-1)[:4].tolist()}"
        if what == "K" and value is not None and value.size and int(value.reshape(-1)[0]) >= TOPK_MAX:
            yield f"K = {int(value.reshape(-1)[0])} must be less than {TOPK_MAX}"
        if what == "training_mode" and value is not None and value.size and bool(value.reshape(-1)[0]):
            yield "training_mode must be False"


def _attribute_rules(node: Any, attrs: dict[str, Any]) -> Iterator[str]:
    op = node.op_type
    if op == "Resize":
        for key, allowed in _RESIZE.items():
            if key in attrs and _text(attrs[key]) not in allowed:
                yield f"{key}={_text(attrs[key])!r} is not supported (supported: {', '.join(allowed)})"
        if int(attrs.get("antialias", 0)):
            yield "antialias is not supported"
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        if op != "LpPool" and len(attrs.get("kernel_shape", (1, 1))) not in (2, 3):
            yield f"only 2D or 3D pooling is supported, kernel_shape={list(attrs['kernel_shape'])}"
        if any(int(d) != 1 for d in attrs.get("dilations", ())):
            yield f"dilations must be empty or all ones, got {list(attrs['dilations'])}"
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield "the Indices output is not supported"
    elif op == "LayerNormalization" and any(node.output[1:]):
        yield "only the first output (Y) is supported"
    elif op == "Constant" and set(attrs) & {"sparse_value", "value_string", "value_strings"}:
        yield "sparse_value / value_string(s) attributes are not supported"
    elif op == "ScatterND" and _text(attrs.get("reduction", "none")) != "none":
        yield "reduction is not supported"
    elif op == "TopK" and int(attrs.get("sorted", 1)) != 1:
        yield "sorted must be 1"
    elif op == "LSTM" and (int(attrs.get("input_forget", 0)) or int(attrs.get("layout", 0))):
        yield "input_forget and layout must be 0"


def _type_rule(node: Any, spec: dict[str, Any], g: _Graph) -> Iterator[str]:
    allowed = {t.strip().replace("INF64", "INT64") for t in spec.get("types", "").split(",") if t.strip()}
    index = _TYPED_OPERAND.get(node.op_type, 0)
    names = list(node.output[:1]) if index < 0 else list(node.input[index:index + 1])
    if node.op_type in ("Cast", "CastLike"):
        names += list(node.output[:1])
    for name in names:
        code = g.types.get(name)
        if allowed and code and _TYPE_NAMES.get(code, str(code)) not in allowed:
            yield (f"tensor {name!r} is {_TYPE_NAMES.get(code, code)}; TensorRT supports {node.op_type} for "
                   f"{', '.join(sorted(allowed))}")


def _opset_problems(proto: Any, matrix: dict[str, Any]) -> list[Problem]:
    lo, hi = int(matrix.get("opset_min", 9)), int(matrix.get("opset_max", 20))
    versions = [o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        return [Problem("model", "", "imports no default-domain opset")]
    return [Problem("model", "", f"opset {v} is outside TensorRT 10's supported opsets {lo}-{hi}: export with "
                                 f"--opset {min(max(v, lo), hi)}") for v in versions if not lo <= v <= hi]


def check_onnx_for_tensorrt(model_or_path: Any, matrix: dict[str, Any] | None = None) -> list[Problem]:
    """Every problem TensorRT 10's ONNX parser would have with the graph (an ``onnx.ModelProto`` or a path);
    an empty list when it should parse. ``matrix``: :func:`load_operator_matrix` output (default: found)."""
    from .onnx_card import load_onnx

    proto = load_onnx(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    matrix = matrix or load_operator_matrix()
    ops = matrix["ops"]
    problems = _opset_problems(proto, matrix)
    g = _Graph(proto)
    for i, node in enumerate(_nodes(proto.graph)):
        name, op = node.name or f"#{i}", node.op_type
        if node.domain not in _DEFAULT_DOMAINS:
            problems.append(Problem(name, op, f"custom domain {node.domain!r}: TensorRT's ONNX parser only "
                                              "takes default-domain ops (or registered plugins)"))
            continue
        spec = ops.get(op)
        if spec is None or not spec.get("supported"):
            why = "is not in" if spec is None else "is marked unsupported in"
            where = f" ({matrix['source']})" if matrix.get("builtin") else ""
            problems.append(Problem(name, op, f"{op} {why} onnx-tensorrt's operator matrix for TensorRT 10{where}"))
            continue
        attrs = _attrs(node)
        for text in (*_constant_rules(node, g), *_attribute_rules(node, attrs), *_type_rule(node, spec, g)):
            problems.append(Problem(name, op, text))
    return problems


def raise_for_problems(model_or_path: Any, source: str | None = None, problems: Iterable[Problem] | None = None,
                       ) -> None:
    """OnnxCheckError listing every problem (node name, op, what) of :func:`check_onnx_for_tensorrt`."""
    found = list(problems) if problems is not None else check_onnx_for_tensorrt(model_or_path)
    if found:
        raise OnnxCheckError(source or str(model_or_path), found)
