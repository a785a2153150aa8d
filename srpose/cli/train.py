"""``srpose train``: argv -> :func:`srpose.train.trainer.train`. Multi-process:
``torchrun --nproc_per_node N -m srpose.cli train ...``; periodic evaluation comes from the eval layer."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ._args import count, number, wxh

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--epochs", type=count(1), default=None, help="total epochs")
    g.add_argument("--batch", type=count(1), default=None, help="batch size per process")
    g.add_argument("--lr", type=number(0, above=True), default=None, help="base learning rate")
    g.add_argument("--grad-clip", type=number(0, above=True), default=None, metavar="MAX_NORM",
                   help="clip the gradient norm")
    g.add_argument("--input-size", type=wxh("input size", minimum=32, multiple=32), default=None, metavar="WxH",
                   help="train at another input size (heatmaps scale with it)")
    g.add_argument("--max-iters", type=count(1), default=None, help="stop after this many iterations (smoke tests)")
    g = p.add_argument_group("run")
    g.add_argument("--work-dir", default=None, help="output folder (default: work_dirs/<config name>)")
    g.add_argument("--resume", default=None, metavar="CKPT", help="continue a run from its checkpoint")
    g.add_argument("--init", default=None, metavar="CKPT", help="start from a checkpoint's weights (those that fit)")
    g.add_argument("--checkpoint-every", type=count(1), default=1, metavar="N", help="save every N epochs (default 1)")
    g.add_argument("--eval-every", type=count(0), default=0, metavar="N",
                   help="evaluate every N epochs (0: only after the last); needs --val-ann/--val-images")
    g.add_argument("--workers", type=count(0), default=2, help="data loader processes (default 2)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC activations (faster convolutions on CPU and tensor cores; default: the config's)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA, torchrun)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``srpose train``; the eval layer supplies the periodic evaluation."""
    from pathlib import Path

    from srpose._io import check_out_dir
    from srpose.resolve import get_config
    from srpose.train.trainer import train

    cfg = get_config(args.model)
    if args.input_size is not None:
        cfg = cfg.with_input_size(*args.input_size)
    if (args.val_ann is None) != (args.val_images is None):
        raise ValueError("give both --val-ann and --val-images (or neither)")
    eval_fn = None
    if args.val_ann is not None:
        from srpose.eval.train_hooks import eval_fn_from_args

        eval_fn = eval_fn_from_args(cfg, args)
    elif args.eval_every:
        raise ValueError(f"--eval-every {args.eval_every} needs --val-ann and --val-images")
    work_dir = Path(args.work_dir) if args.work_dir else Path("work_dirs") / cfg.name
    check_out_dir(work_dir, option="--work-dir")
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
