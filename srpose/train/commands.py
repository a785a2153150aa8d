"""``srpose train``: arguments and runner. Multi-process: ``torchrun --nproc_per_node N --no-python srpose train ...``.

Periodic evaluation needs the eval layer, which ``srpose`` core does not import: the console command passes an
``eval_fn_factory(cfg, args) -> eval_fn`` built there.
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from srpose.config import PoseConfig
    from srpose.train.trainer import EvalFn

EvalFnFactory = Callable[["PoseConfig", argparse.Namespace], Optional["EvalFn"]]

__all__ = ["add_train_arguments", "run_train", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (w, h), multiples of 32 (the backbones downsample by 32); an argparse type."""
    from srpose.config import parse_wxh

    try:
        return parse_wxh(text, option="input size", minimum=32, multiple=32)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose train``."""
    p.add_argument("model", metavar="NAME_OR_CONFIG",
                   help="preset name (see `srpose list`), official mmpose .py config, or project .json config")
    g = p.add_argument_group("data")
    g.add_argument("--train-ann", required=True, help="COCO-format keypoint annotations of the training set")
    g.add_argument("--train-images", required=True, help="image folder of the training set")
    g.add_argument("--val-ann", default=None, help="annotations of the validation set (enables evaluation)")
    g.add_argument("--val-images", default=None, help="image folder of the validation set")
    g.add_argument("--val-det", default=None, help="person detections of the validation set (default: GT boxes)")
    g = p.add_argument_group("schedule (defaults: the config's official recipe)")
    g.add_argument("--epochs", type=int, default=None, help="total epochs")
    g.add_argument("--batch", type=int, default=None, help="batch size per process")
    g.add_argument("--lr", type=float, default=None, help="base learning rate")
    g.add_argument("--grad-clip", type=float, default=None, metavar="MAX_NORM", help="clip the gradient norm")
    g.add_argument("--input-size", type=parse_size, default=None, metavar="WxH",
                   help="train at another input size (heatmaps scale with it)")
    g.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations (smoke tests)")
    g = p.add_argument_group("run")
    g.add_argument("--work-dir", default=None, help="output folder (default: work_dirs/<config name>)")
    g.add_argument("--resume", default=None, metavar="CKPT", help="continue a run from its checkpoint")
    g.add_argument("--init", default=None, metavar="CKPT", help="start from a checkpoint's weights (those that fit)")
    g.add_argument("--checkpoint-every", type=int, default=1, metavar="N", help="save every N epochs (default 1)")
    g.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="evaluate every N epochs (0: only after the last); needs --val-ann/--val-images")
    g.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC activations (faster convolutions on CPU and tensor cores; default: the config's)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA, torchrun)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace, eval_fn_factory: EvalFnFactory | None = None) -> int:
    """Run ``srpose train``; ``eval_fn_factory(cfg, args)`` supplies the evaluation callback."""
    from pathlib import Path

    from srpose.config import get_config
    from srpose.train.trainer import train

    cfg = get_config(args.model)
    if args.input_size is not None:
        cfg = cfg.with_input_size(*args.input_size)
    if (args.val_ann is None) != (args.val_images is None):
        raise ValueError("give both --val-ann and --val-images (or neither)")
    eval_fn = None
    if args.val_ann is not None:
        if eval_fn_factory is None:
            raise ValueError("evaluation during training needs the eval layer: run it through the `srpose` command "
                             "(or drop --val-ann/--val-images)")
        eval_fn = eval_fn_factory(cfg, args)
    elif args.eval_every:
        raise ValueError(f"--eval-every {args.eval_every} needs --val-ann and --val-images")
    work_dir = Path(args.work_dir) if args.work_dir else Path("work_dirs") / cfg.name
    res = train(cfg, train_ann=args.train_ann, train_images=args.train_images, work_dir=work_dir,
                epochs=args.epochs, batch_size=args.batch, lr=args.lr, workers=args.workers, amp=args.amp,
                grad_clip=args.grad_clip, resume=args.resume, checkpoint_every=args.checkpoint_every,
                eval_every=args.eval_every, eval_fn=eval_fn, seed=args.seed, device=args.device,
                sync_bn=args.sync_bn, max_iters=args.max_iters, progress=not args.quiet, init=args.init,
                channels_last=args.channels_last)
    if res.rank == 0:
        summary: dict[str, Any] = dict(epochs=res.epochs, iters=res.iters, final_loss=round(res.final_loss, 6),
                                       images_per_s=round(res.images_per_s, 1),
                                       data_time_share=round(res.data_time_share, 3), latest=res.latest)
        if res.best is not None:
            summary.update(best=res.best, best_metric=res.best_metric, best_epoch=res.best_epoch,
                           metrics=res.metrics)
        print(json.dumps(summary, indent=2))
    return 0
