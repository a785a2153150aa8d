"""``srpose bench --backend triton --url URL --concurrency 1 4 16``: argv ->
:class:`~srpose.eval.served_bench.ServedBenchOptions` -> ``bench_served`` -> table, JSON, PNG."""
from __future__ import annotations

import argparse

from ._args import count, publish_rows

__all__ = ["add_triton_arguments", "run_triton"]


def add_triton_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("triton (a served model, see `srpose triton` / `srpose serve`)")
    g.add_argument("--url", default=None, metavar="URL",
                   help="the server: grpc://HOST:PORT, http://HOST:PORT (optionally /MODEL), or HOST:PORT for gRPC")
    g.add_argument("--concurrency", type=count(1), nargs="+", default=[1, 4, 16], metavar="C",
                   help="requests in flight to sweep (default: 1 4 16)")
    g.add_argument("--ann", default=None, help="requests from this COCO-format annotation file (with --images)")
    g.add_argument("--images", default=None, help="image folder of --ann")
    box = g.add_mutually_exclusive_group()
    box.add_argument("--det", default=None, help="top-down: person boxes of the requests (detection results)")
    box.add_argument("--gt-bbox", action="store_true", help="top-down: the ground-truth boxes")
    g.add_argument("--persons", type=count(1), default=4, metavar="N",
                   help="without --ann: random 640x480 images with N random person boxes each (default: 4)")


def run_triton(args: argparse.Namespace) -> int:
    from srpose.config import PoseConfig
    from srpose.engines import open_backend
    from srpose.eval.served_bench import (ServedBenchOptions, bench_served, format_served_table, plot_served,
                                          served_workload, synthetic_workload)
    from srpose.tasks import task_for

    if not args.url:
        raise ValueError("--backend triton needs --url grpc://HOST:PORT (or http://HOST:PORT)")
    if bool(args.ann) != bool(args.images):
        raise ValueError("--ann and --images go together")
    opts = ServedBenchOptions(concurrency=args.concurrency, warmup_s=args.warmup_s, duration_s=args.duration_s,
                              progress=not args.quiet)
    opts.check()
    backend = open_backend(args.url if "://" in args.url else f"grpc://{args.url}")
    try:
        task = task_for(PoseConfig.from_dict(backend.card.config)) if backend.card.config else None
        if task is None:
            raise ValueError(f"the served model {backend.model} has no config in its card: re-export it")
        if args.ann:
            dataset = task.dataset(args.ann, args.images, det=args.det,
                                   gt_bbox=args.gt_bbox or (task.kind == "top-down" and not args.det))
            workload = served_workload(task, dataset)
        else:
            workload = synthetic_workload(task, persons=args.persons)
        rows = bench_served(backend, workload, opts)
    finally:
        backend.close()
    print(format_served_table(rows))
    publish_rows(rows, args, plot_served)
    return 0
