"""``srpose build``: ONNX -> TensorRT engine plus its JSON sidecar."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import _trt_compat as compat

__all__ = ["add_build_arguments", "run_build", "parse_batch"]


def parse_batch(text: str) -> tuple[int, int, int]:
    """``"1,8,32"`` -> (1, 8, 32); ``"8"`` -> (8, 8, 8)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch {text!r}: expected MIN,OPT,MAX integers, e.g. 1,8,32") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not 1 <= vals[0] <= vals[1] <= vals[2]:
        raise argparse.ArgumentTypeError(f"--batch {text!r}: expected MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX")
    return vals  # type: ignore[return-value]


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose build``."""
    parser.add_argument("onnx", metavar="MODEL.onnx", help="ONNX file from `srpose export`")
    parser.add_argument("--out", required=True, metavar="X.engine",
                        help="engine file to write (its metadata goes to X.engine.json)")
    parser.add_argument("--batch", type=parse_batch, default=None, metavar="MIN,OPT,MAX",
                        help="batch range of the optimisation profile (default: the ONNX export metadata, else 1)")
    parser.add_argument("--workspace", type=float, default=4.0, metavar="GiB", help="builder workspace (default 4)")
    parser.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="N",
                        help="builder optimisation level 0-5 (default 3)")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="persistent timing cache: read if present, updated after the build")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--verbose", action="store_true", help="verbose TensorRT log")
    g = parser.add_argument_group("legacy weakly typed builds (TensorRT 10.x only; prefer the FP16/INT8 ONNX "
                                  "graphs from `srpose export`)")
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--legacy-fp16", action="store_true", help="FP16 builder flag on an FP32 graph")
    prec.add_argument("--legacy-int8", action="store_true", help="INT8 entropy calibration on an FP32 graph")
    g.add_argument("--calib-ann", default=None, metavar="ANN", help="COCO keypoint annotations of calibration images")
    g.add_argument("--calib-images", default=None, metavar="DIR", help="calibration image folder")
    g.add_argument("--calib-num", type=int, default=512, metavar="N", help="number of calibration crops (default 512)")
    g.add_argument("--calib-cache", default=None, metavar="FILE",
                   help="calibration cache (default: OUT with .calib appended); reused when present")


def run_build(args: argparse.Namespace,
              calib_factory: Callable[[argparse.Namespace], Iterable[np.ndarray]] | None = None) -> int:
    """Build the engine described by ``args``; ``calib_factory(args)`` yields INT8 calibration batches."""
    compat.require_trt()  # "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"
    from .tensorrt import build_engine, check_legacy_supported

    legacy = "fp16" if args.legacy_fp16 else "int8" if args.legacy_int8 else None
    check_legacy_supported(legacy)  # refuse on TensorRT 11 before reading any calibration image
    calib_batches = None
    calib_cache = args.calib_cache or (str(args.out) + ".calib" if legacy == "int8" else None)
    if legacy == "int8" and not Path(calib_cache).exists():
        if not (args.calib_ann and args.calib_images):
            raise ValueError("--legacy-int8 needs --calib-ann ANN and --calib-images DIR (or an existing "
                             f"--calib-cache; {calib_cache} does not exist)")
        if calib_factory is None:
            raise RuntimeError("--legacy-int8 needs the calibration reader of the export layer: run it through "
                               "the `srpose build` command")
        if args.calib_num < 1:
            raise ValueError(f"--calib-num {args.calib_num} must be >= 1")
        calib_batches = calib_factory(args)

    side = build_engine(args.onnx, args.out, batch=args.batch, workspace_gib=args.workspace,
                        opt_level=args.opt_level, timing_cache=args.timing_cache, legacy=legacy,
                        calib_batches=calib_batches, calib_cache=calib_cache, device=args.device,
                        verbose=args.verbose)
    prof = side["profile"]
    gpu = side.get("gpu") or {}
    print(f"wrote {args.out} ({side['engine']['bytes'] / 2**20:.1f} MiB, {side['precision']}, TensorRT "
          f"{side['tensorrt_version']}, {gpu.get('name', 'unknown GPU')} sm {gpu.get('compute_capability', '?')}) "
          f"in {side['build']['seconds']:.1f} s; batch {prof['min'][0]}..{prof['max'][0]} (opt {prof['opt'][0]}); "
          f"metadata in {args.out}.json")
    return 0
