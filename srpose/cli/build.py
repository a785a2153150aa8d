"""``srpose build``: argv -> :class:`~srpose.engines.tensorrt.BuildOptions` -> ``build_engine`` -> printed report.

The engine's sidecar ``X.engine.json`` is the ONNX file's card plus the engine facts. Before building, the graph is
checked against TensorRT 10's ONNX parser support (``--skip-onnx-check`` turns that off, e.g. for plugin nodes).

A top-down crop graph is wrapped into its image-to-keypoints graph first (``X.image.onnx`` beside the engine: crop,
flip test and decoding run in the engine), unless ``--crop-input`` asks for an engine of the crop graph itself.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterable

from ._args import batch_profile, count, image_graph_of, number

__all__ = ["add_arguments", "run", "options_from_args", "calibration_batches", "report", "image_graph_source"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose build``."""
    parser.add_argument("onnx", metavar="MODEL.onnx", help="ONNX file from `srpose export`")
    parser.add_argument("--out", required=True, metavar="X.engine",
                        help="engine file to write (its card goes to X.engine.json)")
    parser.add_argument("--batch", type=batch_profile(), default=None, metavar="MIN,OPT,MAX",
                        help="batch range of the optimisation profile (default: the ONNX file's card, else 1)")
    parser.add_argument("--workspace", type=number(0, above=True), default=4.0, metavar="GiB",
                        help="builder workspace (default 4)")
    parser.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="N",
                        help="builder optimisation level 0-5 (default 3)")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="persistent timing cache: read if present, this build's timings merged into it")
    parser.add_argument("--device", type=count(0), default=0, help="CUDA device index (default 0)")
    parser.add_argument("--crop-input", action="store_true",
                        help="build a top-down crop graph as it is (default: wrap it into its image-to-keypoints "
                             "graph first, written beside the engine as X.image.onnx, so crop, flip test and "
                             "decoding run in the engine; legacy builds always take the graph as it is)")
    parser.add_argument("--skip-onnx-check", action="store_true",
                        help="do not check the graph against TensorRT 10's ONNX operator support first")
    parser.add_argument("--verbose", action="store_true", help="verbose TensorRT log")
    g = parser.add_argument_group("legacy weakly typed builds (TensorRT 10.x only; prefer the FP16/INT8 ONNX "
                                  "graphs from `srpose export`)")
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--legacy-fp16", action="store_true", help="FP16 builder flag on an FP32 graph")
    prec.add_argument("--legacy-int8", action="store_true", help="INT8 entropy calibration on an FP32 graph")
    g.add_argument("--calib-ann", default=None, metavar="ANN", help="COCO keypoint annotations of calibration images")
    g.add_argument("--calib-images", default=None, metavar="DIR", help="calibration image folder")
    g.add_argument("--calib-num", type=count(1), default=512, metavar="N",
                   help="number of calibration crops (default 512)")
    g.add_argument("--calib-cache", default=None, metavar="FILE",
                   help="calibration cache (default: OUT with .calib appended); reused when present")


def options_from_args(args: argparse.Namespace) -> Any:
    """The :class:`BuildOptions` of ``args``."""
    from srpose.engines.tensorrt import BuildOptions

    legacy = "fp16" if args.legacy_fp16 else "int8" if args.legacy_int8 else None
    calib_cache = args.calib_cache or (str(args.out) + ".calib" if legacy == "int8" else None)
    return BuildOptions(batch=args.batch, workspace_gib=args.workspace, opt_level=args.opt_level,
                        timing_cache=args.timing_cache, legacy=legacy, calib_cache=calib_cache, device=args.device,
                        verbose=args.verbose, check_onnx=not args.skip_onnx_check)


def calibration_batches(args: argparse.Namespace, options: Any) -> Iterable[Any] | None:
    """Legacy INT8 calibration crops: the export layer's reader, with the model config from the ONNX file's card.
    None when no calibration is needed (not INT8, or the calibration cache exists)."""
    if options.legacy != "int8" or Path(options.calib_cache).exists():
        return None
    if not (args.calib_ann and args.calib_images):
        raise ValueError("--legacy-int8 needs --calib-ann ANN and --calib-images DIR (or an existing "
                         f"--calib-cache; {options.calib_cache} does not exist)")
    from srpose.card import CardError, read_card
    from srpose.config import PoseConfig
    from srpose.export.calibration import CalibrationReader

    try:
        config = read_card(args.onnx).config
    except CardError:
        config = None
    if not config:
        raise ValueError(f"{args.onnx} has no srpose card with the model config: export it with `srpose export` "
                         "to calibrate from images (or give an existing --calib-cache)")
    return CalibrationReader(args.calib_ann, args.calib_images, PoseConfig.from_dict(config), num=args.calib_num)


def image_graph_source(args: argparse.Namespace, legacy: str | None) -> str:
    """The ONNX file to build: a top-down crop graph wrapped into its image-to-keypoints graph (written beside the
    engine as ``X.image.onnx``) unless ``--crop-input``, a legacy build, or the file is not such a graph."""
    out = Path(args.out)
    image = image_graph_of(args.onnx, out.with_name(out.stem + ".image.onnx"),
                           crop_input=args.crop_input or legacy is not None)
    if image is None:
        return args.onnx
    print(f"wrapped {args.onnx} into its image-to-keypoints graph {image} (crop, flip test and decoding in the "
          "engine; --crop-input builds the crop graph as it is)")
    return image


def report(card: Any, out: str) -> str:
    """One line: file, size, precision, TensorRT, GPU, build time, profile."""
    eng = card.engine
    prof, gpu = eng["profile"], eng.get("gpu") or {}
    head = (f"wrote {out} ({eng['engine']['bytes'] / 2**20:.1f} MiB, {card.precision}, TensorRT "
            f"{eng['tensorrt_version']}, {gpu.get('name', 'unknown GPU')} sm {gpu.get('compute_capability', '?')}) "
            f"in {eng['build']['seconds']:.1f} s; ")
    if card.image_input and card.task == "top-down":
        p, i = card.batch, card.image_batch
        (h0, w0), _, (h1, w1) = card.hw_profile
        return (head + f"image-to-keypoints: persons {p[0]}..{p[2]} (opt {p[1]}), images {i[0]}..{i[2]} (opt {i[1]}) "
                f"of {w0}x{h0}..{w1}x{h1}; card in {out}.json")
    hw = "" if card.hw_profile is None else \
        f", H x W {prof['min'][2]}x{prof['min'][3]}..{prof['max'][2]}x{prof['max'][3]}"
    return head + (f"batch {prof['min'][0]}..{prof['max'][0]} (opt {prof['opt'][0]}){hw}; card in {out}.json")


def run(args: argparse.Namespace) -> int:
    """Build the engine described by ``args``."""
    from srpose.engines.tensorrt import build_engine, check_legacy_supported, require_trt

    from srpose._io import check_out_file

    options = options_from_args(args)
    check_out_file(args.out, option="--out")
    require_trt()
    with contextlib.suppress(ImportError):  # lets the TensorRT layer use torch's CUDA (it never imports torch)
        import torch  # noqa: F401  # "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"
    check_legacy_supported(options.legacy)  # refuse on TensorRT 11 before reading any calibration image
    source = image_graph_source(args, options.legacy)
    card = build_engine(source, args.out, options, calibration_batches(args, options))
    print(report(card, args.out))
    return 0
