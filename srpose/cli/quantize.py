"""``srpose quantize``: argv -> :class:`~srpose.eval.int8_search.QuantizeOptions` -> ``search_int8`` -> printed
table (and the files the search writes: mixed graph, JSON, Markdown, PNGs)."""
from __future__ import annotations

import argparse
import warnings

from ._args import add_calibration_args, add_model_args, batch_profile, count, number, out_lines, wxh

__all__ = ["add_arguments", "run", "options_from_args"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
    from srpose.export.int8 import DEFAULT_OP_TYPES

    add_model_args(p)
    p.add_argument("--out-dir", required=True, metavar="DIR",
                   help="output folder: NAME.mixed.onnx, NAME.quantize.json/.md, NAME.sensitivity.png, "
                        "NAME.pareto.png, the FP32 graph and the cache")
    p.add_argument("--max-ap-drop", type=number(0), required=True, metavar="X",
                   help="AP the mixed graph may lose against FP32, on the 0..1 AP scale (0.005 = half a point); "
                        "PCKh@0.5 for MPII models")
    c = p.add_argument_group("calibration crops")
    add_calibration_args(c, required=True)
    v = p.add_argument_group("held-out crops (GT boxes) the AP (MPII: PCKh) is measured on")
    v.add_argument("--val-ann", required=True, metavar="ANN", help="annotation file of the held-out persons")
    v.add_argument("--val-images", required=True, metavar="DIR", help="image folder of the held-out persons")
    v.add_argument("--val-num", type=count(1), default=None, metavar="N",
                   help="use N of its images, evenly spread (default: all; the crops are held in memory)")
    v.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test while measuring (default: the config's test_cfg.flip_test)")
    v.add_argument("--batch-size", type=count(1), default=32, metavar="N", help="persons per batch (default: 32)")
    v.add_argument("--threads", type=count(1), default=None, metavar="N", help="ONNX Runtime threads")
    v.add_argument("--error-persons", type=count(1), default=128, metavar="N",
                   help="output error against FP32 (the search's order) on the first N persons (default: 128)")
    s = p.add_argument_group("search")
    s.add_argument("--group-by", choices=("block", "node"), default="block",
                   help="layer groups: network blocks (default) or single Conv/MatMul/Gemm nodes")
    s.add_argument("--time-limit", type=number(0, above=True), default=3600.0, metavar="S",
                   help="stop measuring after S seconds and answer with what was measured (default: 3600; the "
                        "cache keeps every result, a rerun continues)")
    s.add_argument("--max-evals", type=count(0), default=None, metavar="N",
                   help="run at most N graphs besides the 4 reference ones")
    s.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="calibration and sensitivity cache (default: DIR/quantize_cache under --out-dir)")
    s.add_argument("--int8-op-types", nargs="+", default=list(DEFAULT_OP_TYPES), metavar="OP",
                   help=f"op types to quantise (default: {' '.join(DEFAULT_OP_TYPES)})")
    s.add_argument("--keep-fp32-ops", nargs="*", default=list(DEFAULT_KEEP_FP32_OPS), metavar="OP",
                   help="op types the FP16 groups keep in float32 (default: as srpose export)")
    s.add_argument("--keep-fp32-nodes", nargs="*", default=list(DEFAULT_KEEP_FP32_NODES), metavar="PATTERN",
                   help="node patterns the FP16 groups keep in float32 (default: as srpose export)")
    g = p.add_argument_group("graph")
    g.add_argument("--name", default=None, help="base name of the output files (default: the config's name)")
    g.add_argument("--batch", type=batch_profile(), default=None, metavar="MIN,OPT,MAX",
                   help="batch profile stored for TensorRT (default: 1,32,64)")
    g.add_argument("--input-size", type=wxh("--input-size"), default=None, metavar="WxH",
                   help="input size (default: the config's)")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="also write the report JSON to OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> "object":
    """The :class:`~srpose.eval.int8_search.QuantizeOptions` of parsed ``srpose quantize`` arguments."""
    from srpose.eval.int8_search import QuantizeOptions

    return QuantizeOptions(
        out_dir=args.out_dir, calib_ann=args.calib_ann, calib_images=args.calib_images, val_ann=args.val_ann,
        val_images=args.val_images, max_ap_drop=args.max_ap_drop, val_num=args.val_num, calib_num=args.calib_num,
        calib_method=args.calib_method, calib_batch=args.calib_batch, group_by=args.group_by,
        op_types=args.int8_op_types, keep_fp32_ops=args.keep_fp32_ops, keep_fp32_nodes=args.keep_fp32_nodes,
        flip=args.flip, batch_size=args.batch_size, threads=args.threads, error_items=args.error_persons,
        time_limit_s=args.time_limit,
        max_evals=args.max_evals, cache_dir=args.cache_dir, name=args.name, batch=args.batch,
        input_size=args.input_size, progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from srpose._io import atomic_write_json, check_out_dir, check_out_file
    from srpose.eval.int8_search import search_int8

    check_out_dir(args.out_dir, option="--out-dir")
    check_out_file(args.json_out, option="--json")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = search_int8(args.model, options_from_args(args), checkpoint=args.checkpoint)
    print(report.markdown())
    print(f"mixed graph: {report.files['mixed']}")
    print(f"same Q/DQ placement as an INT8 export: srpose export ... --precision int8 {report.int8_exclude_args}")
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict())
    out_lines(*(f"wrote {v}" for k, v in report.files.items() if k not in ("mixed",)))
    return 0
