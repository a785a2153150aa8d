"""``srpose pipeline`` and ``srpose demo``: argv -> :class:`~srpose.eval.pipeline.PipelineOptions` (and
:class:`~srpose.eval.demo.DemoOptions`) -> the library run; exit status 1 when a model loses more than
``--max-ap-drop``."""
from __future__ import annotations

import argparse
import sys

from ._args import wxh

__all__ = ["add_pipeline_arguments", "run_pipeline", "add_demo_arguments", "run_demo"]


def _pipeline_group(p: argparse.ArgumentParser) -> None:
    from srpose.export.model_export import PRECISIONS

    g = p.add_argument_group("data (evaluation and INT8 calibration)")
    g.add_argument("--ann", required=False, help="COCO-format annotations of the evaluation set")
    g.add_argument("--images", required=False, help="image folder of the evaluation set")
    g.add_argument("--calib-ann", default=None, help="calibration annotations (default: --ann)")
    g.add_argument("--calib-images", default=None, help="calibration images (default: --images)")
    g.add_argument("--calib-num", type=int, default=256, help="calibration crops (default 256)")
    g.add_argument("--error-persons", type=int, default=512, metavar="N",
                   help="compare outputs with PyTorch on the first N items (default 512); AP covers all")
    o = p.add_argument_group("pipeline")
    o.add_argument("--out", default=None,
                   help="output folder (default: demo/ for the demo, pipeline/<name>/ otherwise)")
    o.add_argument("--precision", nargs="+", default=None, choices=PRECISIONS,
                   help="graphs to export (default: every precision the model's task supports)")
    o.add_argument("--no-image-input", dest="image_input", action="store_false",
                   help="top-down: skip the image-to-keypoints graphs (crop, flip test and decoding inside; the "
                        "engines are built from them, or from the crop graphs without them)")
    o.add_argument("--no-decode", dest="decode", action="store_false",
                   help="skip the in-graph decode graph (bottom-up, or top-down with --no-image-input)")
    o.add_argument("--bench-batch", type=int, nargs="+", default=[1, 8], help="bench batch sizes (default 1 8)")
    o.add_argument("--bench-s", type=float, default=1.5, help="timed seconds per bench batch size (default 1.5)")
    o.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime and torch")
    o.add_argument("--max-ap-drop", type=float, default=None, help="exit 1 when a model loses more AP than this")


def _pipeline_options(args: argparse.Namespace) -> "object":
    from srpose.eval.pipeline import PipelineOptions

    return PipelineOptions(ann=args.ann, images=args.images, out=args.out, calib_ann=args.calib_ann,
                           calib_images=args.calib_images, calib_num=args.calib_num, error_items=args.error_persons,
                           precisions=args.precision, decode=args.decode, image_input=args.image_input,
                           bench_batches=args.bench_batch,
                           bench_s=args.bench_s, threads=args.threads, max_ap_drop=args.max_ap_drop)


def _exit_status(report: "object", max_drop: float | None) -> int:
    failed = report.failed  # type: ignore[attr-defined]
    if failed:
        print(f"models losing more than {max_drop} AP: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME_OR_CONFIG", help="preset, official .py config or project .json config")
    p.add_argument("--checkpoint", required=True, help="checkpoint to deploy")
    _pipeline_group(p)


def run_pipeline(args: argparse.Namespace) -> int:
    from srpose.eval.pipeline import run_pipeline as run

    return _exit_status(run(args.model, args.checkpoint, _pipeline_options(args)), args.max_ap_drop)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from srpose.eval.demo import DEMO_PRESET

    p.add_argument("--data", choices=("synthetic", "coco"), default="synthetic",
                   help="generated people (default) or a real COCO-format set given by --ann/--images")
    p.add_argument("--preset", default=DEMO_PRESET, help=f"model to train (default {DEMO_PRESET})")
    p.add_argument("--train-ann", default=None, help="--data coco: training annotations (default: --ann)")
    p.add_argument("--train-images", default=None, help="--data coco: training images (default: --images)")
    g = p.add_argument_group("generated data (--data synthetic)")
    g.add_argument("--train-size", type=int, default=4000, help="training images (default 4000)")
    g.add_argument("--val-size", type=int, default=2000,
                   help="validation images (default 2000: AP deltas of 0.1 point are noise on a few hundred persons)")
    g.add_argument("--image-size", type=wxh("image size", minimum=32), default=(192, 160), metavar="WxH",
                   help="generated image size (default 192x160)")
    g.add_argument("--people", type=int, nargs=2, default=(1, 1), metavar=("MIN", "MAX"),
                   help="people per generated image (default 1 1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="training learning rate (default: the preset's)")
    p.add_argument("--device", default=None, help="training device (default: cuda if available, else cpu)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data loader workers (default: 0 on 2 cores or fewer, where loader processes slow the "
                        "training threads down by ~18%%, else 2)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="validate every N epochs as well as after the last one (default 0: after the last only)")
    p.add_argument("--clip-frames", type=int, default=48, metavar="N",
                   help="frames of the generated clip run through srpose predict with tracking after training "
                        "(synthetic data only; default 48, 0: none)")
    p.add_argument("--seed", type=int, default=0)
    _pipeline_group(p)


def run_demo(args: argparse.Namespace) -> int:
    from srpose.eval.demo import DemoOptions, run_demo as run

    opts = DemoOptions(pipeline=_pipeline_options(args), data=args.data, preset=args.preset,
                       train_ann=args.train_ann, train_images=args.train_images, train_size=args.train_size,
                       val_size=args.val_size, image_size=tuple(args.image_size), people=tuple(args.people),
                       epochs=args.epochs, batch=args.batch, lr=args.lr, device=args.device, workers=args.workers,
                       eval_every=args.eval_every, clip_frames=args.clip_frames, seed=args.seed)
    return _exit_status(run(opts), args.max_ap_drop)
