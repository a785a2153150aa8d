"""The ``srpose`` console command: the one thin place that wires srpose, export, engines and eval together.

Each subcommand is a pair (add its arguments, run it); argument groups are small reusable functions.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

# --------------------------------------------------------------------------------- reusable argument groups


def add_model_args(p: argparse.ArgumentParser, *, checkpoint_required: bool = False) -> None:
    """NAME_OR_CONFIG positional and --checkpoint."""
    p.add_argument("model", metavar="NAME_OR_CONFIG",
                   help="preset name (see `srpose list`), official mmpose .py config, or project .json config")
    p.add_argument("--checkpoint", required=checkpoint_required, default=None,
                   help="checkpoint .pth (official mmpose format or the project's own)")


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--ann, --images, --det | --gt-bbox, --dataset."""
    g = p.add_argument_group("data")
    g.add_argument("--ann", required=required, help="COCO-format keypoint annotation file")
    g.add_argument("--images", required=required, help="image folder")
    box = g.add_mutually_exclusive_group(required=False)
    box.add_argument("--det", default=None, help="person detection results (COCO results format)")
    box.add_argument("--gt-bbox", action="store_true", help="use ground-truth boxes instead of detections")
    g.add_argument("--dataset", choices=("coco", "crowdpose", "mpii"), default=None,
                   help="evaluation protocol (default: the model config's dataset)")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write results as JSON to OUT")


# --------------------------------------------------------------------------------- commands


def _cmd_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="substring or glob to filter preset names")


def _cmd_list(args: argparse.Namespace) -> int:
    from srpose import get_config, list_models

    names = list_models(args.pattern)
    width = max((len(n) for n in names), default=10)
    for n in names:
        cfg = get_config(n)
        w, h = cfg.image_size
        hw, hh = cfg.heatmap_size
        print(f"{n:<{width}}  {cfg.model['backbone']['type']:<10} {cfg.model['keypoint_head']['type']:<20} "
              f"input {w}x{h}  heatmap {hw}x{hh}")
    return 0


def _cmd_info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="+", metavar="NAME_OR_CONFIG",
                   help="one or more presets/configs; `all` for every preset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--input-size", default=None, metavar="WxH", help="count at another input size (default: config)")


def _cmd_info(args: argparse.Namespace) -> int:
    from srpose import build_model, get_config, list_models
    from srpose.complexity import complexity_report
    from srpose.config import parse_wxh

    names = list_models() if args.model == ["all"] else args.model
    rows = []
    for name in names:
        cfg = get_config(name)
        if args.input_size:
            cfg = cfg.with_input_size(*parse_wxh(args.input_size, option="--input-size"))
        model = build_model(cfg, init=False)
        rep = complexity_report(model, cfg.input_shape())
        d = dict(name=cfg.name, params_backbone=rep.params_backbone, params_head=rep.params_head,
                 params_head_eval=rep.params_head_eval, gmacs=rep.gmacs, gmacs_all_ops=rep.gmacs_all_ops,
                 output_shape=list(rep.output_shape))
        rows.append(d)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    hdr = f"{'model':<34} {'backbone':>9} {'head':>8} {'head(eval)':>10} {'GMACs':>7} {'GMACs(all)':>10}  output"
    print(hdr)
    print("-" * len(hdr))
    for d in rows:
        print(f"{d['name']:<34} {d['params_backbone'] / 1e6:>8.2f}M {d['params_head'] / 1e6:>7.2f}M "
              f"{d['params_head_eval'] / 1e6:>9.2f}M {d['gmacs']:>7.2f} {d['gmacs_all_ops']:>10.2f}  "
              f"{'x'.join(map(str, d['output_shape']))}")
    return 0


def _lazy(module: str, add: str, run: str) -> tuple[Callable, Callable]:
    """Argument adder and runner imported from ``module`` only when that command is used."""
    import importlib

    def _add(p: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), add)(p)

    def _run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), run)(args)

    return _add, _run


def _calib_from_onnx(args: argparse.Namespace):  # noqa: ANN202 - iterable of arrays
    """Legacy INT8 calibration batches for ``srpose build``: the export layer's reader, with the model config taken
    from the ONNX file's export metadata."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.export.calibration import CalibrationReader
    from srpose.config import PoseConfig

    meta = OnnxRuntimeBackend(args.onnx).meta
    if "config" not in meta:
        raise ValueError(f"{args.onnx} has no export metadata: export it with "
                         "`srpose export` to calibrate from images")
    return CalibrationReader(args.calib_ann, args.calib_images, PoseConfig.from_dict(meta["config"]),
                             num=args.calib_num)


def _build_run(args: argparse.Namespace) -> int:
    from srpose.engines.commands import run_build

    return run_build(args, calib_factory=_calib_from_onnx)


def _build_add(p: argparse.ArgumentParser) -> None:
    from srpose.engines.commands import add_build_arguments

    add_build_arguments(p)


def _train_run(args: argparse.Namespace) -> int:
    from srpose.eval.train_hooks import eval_fn_from_args
    from srpose.train.commands import run_train

    return run_train(args, eval_fn_factory=eval_fn_from_args)


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "list": ("list the model presets", _cmd_list_args, _cmd_list),
    "info": ("parameters, GMACs and output shape of a model", _cmd_info_args, _cmd_info),
    "eval": ("evaluate keypoint AP (COCO, CrowdPose) or PCKh (MPII)", *_lazy("srpose.eval.commands", "add_eval_arguments",
                                                                             "run_eval")),
    "export": ("export to ONNX: FP32, strongly typed FP16 and Q/DQ INT8 graphs with parity checks",
               *_lazy("srpose.export.commands", "add_export_arguments", "run_export")),
    "parity": ("compare exported models with PyTorch on real crops: output error, AP deltas, throughput",
               *_lazy("srpose.eval.parity", "add_parity_arguments", "run_parity")),
    "train": ("train or fine-tune a model (single process, or many through torchrun)",
              _lazy("srpose.train.commands", "add_train_arguments", "run_train")[0], _train_run),
    "generate": ("generate a COCO-format data set of synthetic people (deterministic by seed)",
                 *_lazy("srpose.data.synthetic", "add_generate_arguments", "run_generate")),
    "demo": ("end to end on built-in defaults: generate data, train, export, evaluate, bench, report",
             *_lazy("srpose.eval.demo", "add_demo_arguments", "run_demo")),
    "pipeline": ("checkpoint to report: export every precision, engines where possible, parity, bench",
                 *_lazy("srpose.eval.demo", "add_pipeline_arguments", "run_pipeline")),
    "build": ("build a TensorRT engine from an exported ONNX graph (strongly typed)", _build_add, _build_run),
    "bench": ("latency and throughput of a backend (torch, onnxruntime, tensorrt) per batch size",
              *_lazy("srpose.eval.bench", "add_bench_arguments", "run_bench")),
}


def build_parser() -> argparse.ArgumentParser:
    from srpose import __version__

    parser = argparse.ArgumentParser(prog="srpose", description="SRPose-TRT: SRPose checkpoints to ONNX and TensorRT; "
                                     "evaluation, parity, profiling and training.")
    parser.add_argument("--version", action="version", version=f"srpose {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError, PermissionError, RuntimeError) as e:
        print(f"srpose {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
