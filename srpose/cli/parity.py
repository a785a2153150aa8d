"""``srpose parity``: argv -> :class:`~srpose.eval.parity.ParityOptions` -> ``run_parity`` -> table, JSON,
Markdown, PNG; exit status 1 when a model loses more than ``--max-ap-drop``."""
from __future__ import annotations

import argparse
import sys
import warnings

from ._args import add_data_args, add_json_arg, add_model_args, add_runtime_args, count, number

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p, optional_with="--models files exported by srpose")
    p.add_argument("--models", nargs="+", required=True, metavar="FILE|URL",
                   help="exported ONNX graphs (any precision, flip and decode variant), TensorRT engines, or served "
                        "models (grpc://HOST:PORT, http://HOST:PORT)")
    add_data_args(p)
    p.add_argument("--max-ap-drop", type=number(0), default=None, metavar="X",
                   help="exit with status 1 when a model's AP (PCKh for MPII) is more than X below PyTorch's")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test of the reference (default: the config's test_cfg.flip_test)")
    p.add_argument("--batch", type=count(1), default=32, metavar="N", help="persons per batch, top-down (default: 32)")
    p.add_argument("--error-persons", type=count(1), default=None, metavar="N",
                   help="compare outputs with PyTorch on the first N items only (default: all); AP covers all")
    p.add_argument("--workers", type=count(0), default=None, metavar="N",
                   help="data loader processes (default: one per core)")
    add_runtime_args(p, device_help="cpu, or cuda[:N] for TensorRT engines and ONNX Runtime's CUDA provider")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    out = p.add_argument_group("output")
    add_json_arg(out)
    out.add_argument("--markdown", default=None, metavar="OUT", help="write a Markdown table to OUT")
    out.add_argument("--plot", default=None, metavar="OUT.png", help="write a bar chart (AP, throughput) to OUT.png")


def run(args: argparse.Namespace) -> int:
    from srpose._io import atomic_write_json, atomic_write_text, check_out_file
    from srpose.checkpoint import build_with_weights
    from srpose.eval.parity import ParityOptions, config_for_models, config_of_models, run_parity
    from srpose.eval.report import parity_markdown, plot_parity
    from srpose.tasks import task_for

    opts = ParityOptions(flip=args.flip, batch_size=args.batch, workers=args.workers, threads=args.threads,
                         device=args.device, progress=not args.quiet, error_items=args.error_persons,
                         max_ap_drop=args.max_ap_drop)
    opts.check()
    for option, path in (("--json", args.json_out), ("--markdown", args.markdown), ("--plot", args.plot)):
        check_out_file(path, option=option)
    task = config_for_models(task_for(args.model if args.model is not None else config_of_models(args.models)),
                             args.models)
    dataset = task.dataset(args.ann, args.images, protocol=args.dataset, det=args.det, gt_bbox=args.gt_bbox)
    model, opts.checkpoint_sha256 = build_with_weights(task.cfg, args.checkpoint, command="srpose parity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = run_parity(task, model, args.models, dataset, opts)
    md = parity_markdown(report)
    print(md)
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict())
        print(f"report written to {args.json_out}")
    if args.markdown:
        atomic_write_text(args.markdown, md)
        print(f"markdown written to {args.markdown}")
    if args.plot:
        plot_parity(report, args.plot)
        print(f"plot written to {args.plot}")
    if report.failed:
        print(f"srpose parity: {', '.join(report.failed)} lost more than {args.max_ap_drop} "
              f"{report.primary_metric} against PyTorch", file=sys.stderr)
        return 1
    return 0
