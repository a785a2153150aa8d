#!/usr/bin/env python
"""NVIDIA ModelOpt's ONNX INT8 quantiser (or its AutoCast FP16) on one FP32 graph, CPU calibration: the
``--int8-engine modelopt`` of ``srpose export`` and the reference the INT8 export is compared with
(``tests/test_modelopt_compare.py``, ``scripts/bench_traffic.py``).

It imports nothing of srpose, so it runs in ModelOpt's own environment (``make modelopt-deps`` builds
``.venv-modelopt``: ``nvidia-modelopt[onnx]`` pulls onnxruntime-gpu, cupy and an older onnx, kept out of the
project's ``.venv``) as a script:

    .venv-modelopt/bin/python export/_modelopt_run.py FP32.onnx OUT.onnx --calib CROPS.npy [--mode int8|fp16]
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32")
    p.add_argument("out")
    p.add_argument("--calib", help="N x 3 x H x W float32 crops (.npy) for INT8 calibration")
    p.add_argument("--mode", choices=("int8", "fp16"), default="int8")
    p.add_argument("--method", choices=("max", "entropy"), default="entropy")
    p.add_argument("--input-name", default="input")
    p.add_argument("--exclude", nargs="*", default=[], help="node-name regular expressions left out of INT8")
    args = p.parse_args(argv)
    if args.mode == "fp16":
        import onnx
        from modelopt.onnx.autocast import convert_to_mixed_precision

        onnx.save(convert_to_mixed_precision(onnx_path=args.fp32, low_precision_type="fp16", keep_io_types=True),
                  args.out)
        return 0
    import numpy as np
    from modelopt.onnx.quantization import quantize

    if not args.calib:
        p.error("--mode int8 needs --calib CROPS.npy")
    quantize(args.fp32, quantize_mode="int8", calibration_data={args.input_name: np.load(args.calib)},
             calibration_method=args.method, calibration_eps=["cpu"], high_precision_dtype="fp16",
             nodes_to_exclude=args.exclude or None, output_path=args.out, log_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
