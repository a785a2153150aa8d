"""Every exported graph must parse with TensorRT 10's ONNX parser (issue #13, "Parser check"): small exports of each
preset family (ResNet / HRNet / HRFormer / TransPose x simple / SR / SRPose heads), every precision, with and
without the in-graph flip test and decoding, bottom-up raw and decoded, checked against onnx-tensorrt's operator
matrix by :mod:`srpose.engines.tensorrt.onnx_check`; and graphs that break each rule are flagged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _export_utils import family_config, tiny_model

from srpose.engines.tensorrt import onnx_check
from srpose.engines.tensorrt.onnx_check import OnnxCheckError, check_onnx_for_tensorrt, raise_for_problems

pytestmark = pytest.mark.usefixtures("one_thread")

# ============================================================================ the one place calling the exporters

_EXPORTS: dict[tuple, Path] = {}




def export_variant(out_dir: Path, family: str, head: str, precision: str = "fp32", flip: bool = False,
                   decode: bool = False) -> Path:
    """The ONNX file of one variant, exported once per session. Every exporter call of this module is here."""
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8
    from srpose.export.onnx_export import export_onnx

    key = (family, head, precision, flip, decode)
    if key not in _EXPORTS:
        path = out_dir / f"{family}_{head}_{precision}{'_flip' * flip}{'_decode' * decode}.onnx"
        if precision == "fp32":
            cfg = family_config(family, head)
            kw = {} if family == "bottom-up" else {"batch": (1, 2, 4), "flip": flip}
            export_onnx(tiny_model(cfg), cfg, path, decode=decode, **kw)
        elif precision == "fp16":
            convert_fp16(export_variant(out_dir, family, head, "fp32", flip, decode), path)
        else:
            w, h = family_config(family, head).image_size
            calib = [np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)]
            quantize_int8(export_variant(out_dir, family, head, "fp32", flip, decode), path, calib, method="max")
        _EXPORTS[key] = path
    return _EXPORTS[key]


# ============================================================================ every export parses


TOP_DOWN = [(f, h, p) for f in ("res", "hrnet", "hrt", "transpose") for h in ("simple", "sr", "srpose")
            for p in ("fp32", "fp16", "int8")]
FLIP_DECODE = [(h, p, flip, dec) for h in ("simple", "sr") for flip, dec in ((True, False), (False, True), (True, True))
               for p in (("fp32", "fp16", "int8") if flip and dec else ("fp32",))]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tensorrt-parser-check")


@pytest.mark.parametrize("family,head,precision", TOP_DOWN)
def test_top_down_exports_parse(out_dir, family, head, precision):
    assert [str(p) for p in check_onnx_for_tensorrt(export_variant(out_dir, family, head, precision))] == []


@pytest.mark.parametrize("head,precision,flip,decode", FLIP_DECODE)
def test_flip_and_decode_exports_parse(out_dir, head, precision, flip, decode):
    path = export_variant(out_dir, "hrnet", head, precision, flip=flip, decode=decode)
    assert [str(p) for p in check_onnx_for_tensorrt(path)] == []


@pytest.mark.parametrize("precision,decode", [("fp32", False), ("fp32", True), ("fp16", False), ("fp16", True)])
def test_bottom_up_exports_parse(out_dir, precision, decode):
    path = export_variant(out_dir, "bottom-up", "sr", precision, decode=decode)
    assert [str(p) for p in check_onnx_for_tensorrt(path)] == []


def test_exports_use_the_expected_ops(out_dir):
    """Not vacuous: the checked graphs contain the ops whose rules matter (Q/DQ, TopK, Resize, LayerNorm ...)."""
    import onnx

    paths = [export_variant(out_dir, *v) for v in TOP_DOWN]  # cached: exported by the tests above
    paths += [export_variant(out_dir, "hrnet", h, p, flip=f, decode=d) for h, p, f, d in FLIP_DECODE]
    paths += [export_variant(out_dir, "bottom-up", "sr", p, decode=d) for p in ("fp32", "fp16") for d in (0, 1)]
    seen = set()
    for path in paths:
        seen |= {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "TopK", "Resize", "LayerNormalization", "Slice", "Unsqueeze",
            "ReduceMax", "ArgMax", "MatMul", "Softmax", "DepthToSpace", "ConvTranspose", "Max", "Min"} <= seen, seen
    assert len(set(paths)) == len(TOP_DOWN) + len(FLIP_DECODE) + 4


def test_builtin_matrix_fallback(out_dir, monkeypatch):
    """Without the JSON matrix (no ../shared), the built-in subset still passes the exports and names itself."""
    monkeypatch.setattr(onnx_check, "_matrix_candidates", lambda: iter(()))
    matrix = onnx_check.load_operator_matrix()
    assert matrix["builtin"] and "SRPOSE_TRT_OPERATORS" in matrix["source"]
    for variant in (("hrt", "srpose", "int8"), ("transpose", "sr", "fp16")):
        assert check_onnx_for_tensorrt(export_variant(out_dir, *variant), matrix) == []
    decoded = export_variant(out_dir, "bottom-up", "sr", "fp32", decode=True)
    assert check_onnx_for_tensorrt(decoded, matrix) == []
    (p,) = check_onnx_for_tensorrt(_model([_node("Swish", ["x"], ["y"])]), matrix)
    assert "built-in subset" in p.problem


# ============================================================================ bad graphs are flagged


def _node(op, inputs, outputs, name=None, domain="", **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, name=name or f"bad_{op.lower()}", domain=domain, **attrs)


def _model(nodes, inits=(), opset=17, inputs=(("x", 1, [1, 3, 8, 8]),), outputs=(("y", 1, None),),
           extra_opsets=()):
    from onnx import helper

    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def _const(name, values, dtype=np.int64):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _problems(model):
    return [str(p) for p in check_onnx_for_tensorrt(model)]


def _flagged(model, *fragments):
    got = "\n".join(_problems(model))
    for f in fragments:
        assert f in got, f"{f!r} not flagged in:\n{got}"


def test_flags_opset_outside_9_to_20_and_custom_domains():
    from onnx import helper

    relu = [_node("Relu", ["x"], ["y"])]
    _flagged(_model(relu, opset=21), "opset 21 is outside TensorRT 10's supported opsets 9-20")
    _flagged(_model(relu, opset=8), "opset 8 is outside")
    custom = [_node("Relu", ["x"], ["y"], name="acme_relu", domain="com.acme")]
    _flagged(_model(custom, extra_opsets=[helper.make_opsetid("com.acme", 1)]),
             "node 'acme_relu' (Relu): custom domain 'com.acme'")
    assert _problems(_model(relu)) == []


def test_flags_ops_absent_or_unsupported_in_the_matrix():
    _flagged(_model([_node("Swish", ["x"], ["y"])], opset=20), "node 'bad_swish' (Swish): Swish is not in")
    if onnx_check.load_operator_matrix().get("builtin"):  # the subset knows only supported ops: Det is just absent
        _flagged(_model([_node("Det", ["x"], ["y"])]), "Det is not in")
    else:
        _flagged(_model([_node("Det", ["x"], ["y"])]), "Det is marked unsupported in")


def test_flags_non_constant_axes():
    shape = _node("Shape", ["x"], ["s"], name="shape")
    axes = _node("Slice", ["s", "one", "two"], ["ax"], name="axes_from_shape")  # computed: not a constant
    inits = [_const("zero", [0]), _const("one", [1]), _const("two", [2])]
    _flagged(_model([shape, axes, _node("Slice", ["x", "zero", "one", "ax"], ["y"], name="slice")], inits),
             "node 'slice' (Slice): axes ('ax') must be a constant")
    _flagged(_model([shape, axes, _node("ReduceMean", ["x", "ax"], ["y"], name="mean")], inits, opset=18),
             "node 'mean' (ReduceMean): axes ('ax') must be a constant")
    _flagged(_model([shape, axes, _node("Unsqueeze", ["x", "ax"], ["y"], name="unsq")], inits),
             "node 'unsq' (Unsqueeze): axes ('ax') must be a constant")
    _flagged(_model([shape, axes, _node("Squeeze", ["x", "ax"], ["y"], name="sq")], inits),
             "node 'sq' (Squeeze): axes ('ax') must be a constant")
    ok = [_node("Constant", [], ["ax"], name="c", value=_const("v", [1])),  # a Constant node counts as constant
          _node("ReduceMean", ["x", "ax"], ["y"], name="mean")]
    assert _problems(_model(ok, opset=18)) == []


def test_flags_topk_k_too_large_or_not_constant_and_unsorted():
    from onnx import TensorProto

    outs = (("y", 1, None), ("i", TensorProto.INT64, None))
    _flagged(_model([_node("TopK", ["x", "k"], ["y", "i"], name="topk", axis=1)], [_const("k", [4000])],
                    outputs=outs), "node 'topk' (TopK): K = 4000 must be less than 3840")
    dyn = [_node("Shape", ["x"], ["s"]), _node("Gather", ["s", "zero"], ["k"], axis=0),
           _node("TopK", ["x", "k"], ["y", "i"], name="topk", axis=1)]
    _flagged(_model(dyn, [_const("zero", [1])], outputs=outs), "node 'topk' (TopK): K ('k') must be a constant")
    _flagged(_model([_node("TopK", ["x", "k"], ["y", "i"], name="topk", sorted=0)], [_const("k", [3])], outputs=outs),
             "sorted must be 1")
    assert _problems(_model([_node("TopK", ["x", "k"], ["y", "i"])], [_const("k", [3839])], outputs=outs)) == []


def test_flags_unsupported_resize():
    roi, scales = _const("roi", [], np.float32), _const("scales", [1, 1, 2, 2], np.float32)
    resize = lambda **a: _model([_node("Resize", ["x", "roi", "scales"], ["y"], name="up", **a)], [roi, scales])  # noqa: E731
    _flagged(resize(mode="cubic"), "node 'up' (Resize): mode='cubic' is not supported")
    _flagged(resize(coordinate_transformation_mode="tf_crop_and_resize"), "coordinate_transformation_mode=")
    _flagged(resize(mode="nearest", nearest_mode="round_away"), "nearest_mode='round_away'")
    assert _problems(resize(mode="linear", coordinate_transformation_mode="align_corners")) == []
    assert _problems(resize(mode="nearest")) == []


def test_flags_qdq_with_dynamic_scale_or_nonzero_zero_point():
    from onnx import TensorProto

    q8 = (("y", TensorProto.FLOAT, None),)
    scale, zp = _const("s", 0.1, np.float32), _const("zp", 0, np.int8)
    qdq = lambda q_in, inits, extra=(): _model(  # noqa: E731
        [*extra, _node("QuantizeLinear", ["x", *q_in], ["q"], name="q"),
         _node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")], inits, outputs=q8)
    assert _problems(qdq(["s", "zp"], [scale, zp])) == []
    _flagged(qdq(["s", "zp3"], [scale, zp, _const("zp3", 3, np.int8)]),
             "node 'q' (QuantizeLinear): y_zero_point ('zp3') must be zero")
    dyn = [_node("ReduceMax", ["x"], ["amax"], keepdims=0), _node("Div", ["amax", "c127"], ["ds"])]
    _flagged(qdq(["ds", "zp"], [scale, zp, _const("c127", 127.0, np.float32)], dyn),
             "node 'q' (QuantizeLinear): y_scale ('ds') must be a constant")


def test_flags_other_restrictions_and_types():
    from onnx import TensorProto, helper

    pool = _model([_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2], dilations=[2, 2])],
                  outputs=(("y", 1, None), ("idx", TensorProto.INT64, None)))
    _flagged(pool, "dilations must be empty or all ones", "the Indices output is not supported")
    ints = _model([_node("Sqrt", ["x"], ["y"], name="sqrt")], inputs=(("x", TensorProto.INT64, [4]),),
                  outputs=(("y", TensorProto.INT64, None),))
    _flagged(ints, "node 'sqrt' (Sqrt): tensor 'x' is INT64; TensorRT supports Sqrt for BF16, FP16, FP32")
    clip_int = _model([_node("Clip", ["x"], ["y"])], inputs=(("x", TensorProto.INT64, [4]),),
                      outputs=(("y", TensorProto.INT64, None),))
    assert _problems(clip_int)  # the matrix lists Clip for floating types only: the decoders use Max/Min instead
    bad_branch = helper.make_graph([_node("Swish", ["x"], ["z"], name="inner")], "then", [],
                                   [helper.make_tensor_value_info("z", 1, None)])
    good_branch = helper.make_graph([_node("Relu", ["x"], ["z"])], "else", [],
                                    [helper.make_tensor_value_info("z", 1, None)])
    cond = _model([_node("If", ["c"], ["y"], name="if", then_branch=bad_branch, else_branch=good_branch)],
                  inputs=(("x", 1, [4]), ("c", TensorProto.BOOL, [])), opset=20)
    _flagged(cond, "node 'inner' (Swish): Swish is not in")  # subgraphs are checked too


def test_raise_for_problems_lists_every_node(tmp_path):
    import onnx

    model = _model([_node("Swish", ["x"], ["a"], name="n1"), _node("Det", ["a"], ["y"], name="n2")], opset=21)
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OnnxCheckError) as e:
        raise_for_problems(path)
    text = str(e.value)
    assert str(path) in text and "opset 21" in text and "node 'n1' (Swish)" in text and "node 'n2' (Det)" in text
    assert len(e.value.problems) == 3 and "--skip-onnx-check" in text
    raise_for_problems(_model([_node("Relu", ["x"], ["y"])]))  # nothing to report
