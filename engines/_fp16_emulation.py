"""Float16 emulation for ONNX Runtime's CPU provider.

ONNX Runtime's CPU provider has few float16 kernels: it runs float16 nodes in float32 between casts it inserts,
and then removes those casts together with the graph's own float32 -> float16 -> float32 round trips. The result
is that only the weights are rounded to float16; activations never are, so the error of a float16 engine is
underestimated.

:func:`fp16_rounding_graph` rewrites a mixed-precision graph into an all-float32 graph that rounds explicitly:
every tensor that is float16 in the original is produced in float32 and passed through an explicit
``Cast(float16) -> Cast(float32)`` pair, which ONNX Runtime keeps. Each op thus computes in float32 and stores its
result in float16, as GPU float16 kernels (float32 accumulation) do.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fp16_rounding_graph", "has_float16"]


def has_float16(model: Any) -> bool:
    """Whether any initializer of ``model`` is float16 (a mixed-precision export)."""
    from onnx import TensorProto

    return any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def fp16_rounding_graph(model: Any) -> Any:
    """An all-float32 copy of the float16 / mixed ``model`` that rounds every former float16 tensor explicitly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = []
    for t in g.initializer:
        if t.data_type == HALF:
            t = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
        inits.append(t)
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = []
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == HALF:
                attr.i = FLOAT  # the rounding pair below does the float16 part
            elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == HALF:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32),
                                                        attr.t.name))
            elif node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == HALF:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32),
                                                        attr.t.name))
        rounded = []
        for i, name in enumerate(node.output):
            if name and types.get(name) == HALF:
                pre = f"{name}__fp32"
                node.output[i] = pre
                rounded += [helper.make_node("Cast", [pre], [f"{name}__fp16"], name=f"{name}__round16", to=HALF),
                            helper.make_node("Cast", [f"{name}__fp16"], [name], name=f"{name}__round32", to=FLOAT)]
        nodes.append(node)
        nodes.extend(rounded)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return out
