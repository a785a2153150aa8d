"""``srpose export``: argv -> :class:`~srpose.export.ExportOptions` -> ``export_model`` -> printed report."""
from __future__ import annotations

import argparse

from ._args import add_calibration_args, add_model_args, batch_profile, count, wxh

__all__ = ["add_arguments", "run", "options_from_args"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
    from srpose.export.int8 import DEFAULT_EXCLUDE, DEFAULT_OP_TYPES
    from srpose.export.model_export import PRECISIONS

    add_model_args(p)
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--name", default=None, help="base name of the output files (default: the config's name)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="graphs to write (default: fp32); fp16 = strongly typed casts, int8 = explicit Q/DQ")
    p.add_argument("--batch", type=batch_profile(), default=None, metavar="MIN,OPT,MAX",
                   help="batch profile stored for TensorRT (default: 1,32,64 top-down crops, 1,32,128 persons of "
                        "--image-input graphs, 1,1,4 bottom-up); the ONNX batch axis is dynamic")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="fold the flip test into the graph, batch doubled inside (default: off top-down; on with "
                        "--image-input as the config's flip_test; bottom-up with --decode: the config's flip_test)")
    p.add_argument("--decode", action="store_true",
                   help="decode in the graph: top-down N x K x 3 keypoints; bottom-up flip, projection, heatmap NMS "
                        "and top-k (grouping stays on the host)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--input-size", type=wxh("--input-size"), default=None, metavar="WxH",
                   help="top-down input size (default: the config's)")
    p.add_argument("--shape-profile", default=None, metavar="MIN,OPT,MAX",
                   help="bottom-up: input sizes WxH for TensorRT, e.g. 512x512,704x512,1536x1536 (default: from the "
                        "input size); top-down --image-input: the image sizes (default 32x32,640x480,2048x2048)")
    g = p.add_argument_group("image input (the fastest graph on a GPU)")
    g.add_argument("--image-input", action="store_true",
                   help="image-to-keypoints graphs: uint8 images + person boxes in, keypoints in image pixels and "
                        "person scores out; crop, normalisation, flip test and decoding run inside (bottom-up: "
                        "uint8 resized image in, normalisation inside)")
    g.add_argument("--image-batch", type=batch_profile("--image-batch"), default=None, metavar="MIN,OPT,MAX",
                   help="top-down --image-input: images per call (default: 1,8,16)")
    g.add_argument("--pixel-format", choices=("bgr", "rgb"), default="bgr",
                   help="channel order of --image-input images (default: bgr, as OpenCV decodes)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxsim")
    f = p.add_argument_group("fp16")
    f.add_argument("--keep-fp32-ops", nargs="*", default=list(DEFAULT_KEEP_FP32_OPS), metavar="OP",
                   help="op types kept in float32 (default: normalisation, softmax, reductions, exp/log ...)")
    f.add_argument("--keep-fp32-nodes", nargs="*", default=list(DEFAULT_KEEP_FP32_NODES), metavar="PATTERN",
                   help=f"node names / fnmatch patterns kept in float32 (default: {' '.join(DEFAULT_KEEP_FP32_NODES)})")
    f.add_argument("--fp16-engine", choices=("srpose", "modelopt"), default="srpose",
                   help="built-in converter (default) or NVIDIA ModelOpt AutoCast when installed")
    c = p.add_argument_group("int8 calibration (top-down)")
    add_calibration_args(c)
    c.add_argument("--calib-cache", default=None, metavar="DIR",
                   help="calibration cache folder (default: DIR/calib_cache under --out-dir)")
    c.add_argument("--int8-exclude", nargs="*", default=list(DEFAULT_EXCLUDE), metavar="PATTERN",
                   help="node names / fnmatch patterns left out of INT8, run in FP16 (default: the in-graph "
                        "decoder and flip merge)")
    c.add_argument("--int8-engine", choices=("srpose", "modelopt"), default="srpose",
                   help="built-in quantiser (default) or NVIDIA ModelOpt's (make modelopt-deps), for comparison")
    c.add_argument("--int8-op-types", nargs="+", default=list(DEFAULT_OP_TYPES), metavar="OP",
                   help=f"op types to quantise (default: {' '.join(DEFAULT_OP_TYPES)})")
    c.add_argument("--parity-crops", type=count(0), default=16, metavar="N",
                   help="real crops for the parity check when calibration data is given (default: 16)")


def options_from_args(args: argparse.Namespace) -> "object":
    """The :class:`~srpose.export.ExportOptions` of parsed ``srpose export`` arguments."""
    from srpose.export import ExportOptions, Fp16Options, Int8Options

    return ExportOptions(
        out_dir=args.out_dir, precisions=args.precision, name=args.name, batch=args.batch, flip=args.flip,
        decode=args.decode, opset=args.opset, input_size=args.input_size, shape_profile=args.shape_profile,
        simplify=args.simplify,
        fp16=Fp16Options(keep_fp32_ops=args.keep_fp32_ops, keep_fp32_nodes=args.keep_fp32_nodes,
                         engine=args.fp16_engine),
        int8=Int8Options(calib_ann=args.calib_ann, calib_images=args.calib_images, calib_num=args.calib_num,
                         calib_method=args.calib_method, calib_batch=args.calib_batch, calib_cache=args.calib_cache,
                         exclude=args.int8_exclude, op_types=args.int8_op_types, parity_crops=args.parity_crops,
                         engine=args.int8_engine),
        image_input=args.image_input, image_batch=args.image_batch, pixel_format=args.pixel_format)


def run(args: argparse.Namespace) -> int:
    from srpose.export import export_model

    report = export_model(args.model, options_from_args(args), checkpoint=args.checkpoint)
    print("\n".join(report.summary_lines()))
    print(f"report written to {report.report_file}")
    return 0
