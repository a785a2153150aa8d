"""``srpose eval``: argv -> a backend, the task's dataset and :class:`~srpose.eval.evaluator.EvalOptions`; prints
the metrics table and writes JSON."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ._args import add_data_args, add_json_arg, add_model_args, count, implied_backend

__all__ = ["add_arguments", "run", "make_backend", "BACKENDS", "FILE_BACKENDS"]

BACKENDS = ("torch", "oracle", "onnxruntime", "tensorrt", "triton")
#: backends that run a model file (--model) or a served model (--url)
FILE_BACKENDS = ("onnxruntime", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, optional_with="--model FILE or --url")
    add_data_args(parser)
    g = parser.add_argument_group("inference")
    g.add_argument("--backend", default=None, choices=BACKENDS,
                   help="inference backend (default: triton with --url, the file's runtime with --model, else torch)")
    g.add_argument("--model", dest="model_file", default=None, metavar="FILE",
                   help="ONNX graph or TensorRT engine of the file-based backends")
    g.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="triton backend: the server (grpc://HOST:PORT, http://HOST:PORT, or HOST:PORT for gRPC)")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    g.add_argument("--fp16", action="store_true", help="torch backend: CUDA autocast float16")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (default: the config's test_cfg.flip_test)")
    g.add_argument("--no-post", dest="post", action="store_false",
                   help="skip the decoder's refinement (top-down sub-pixel shift, bottom-up adjust and refine)")
    g.add_argument("--batch", type=count(1), default=32, metavar="N", help="persons per batch, top-down (default: 32)")
    g.add_argument("--workers", type=count(0), default=None, metavar="N",
                   help="data loader processes decoding (and, for crop graphs, cropping) the images (default: one "
                        "per core)")
    g.add_argument("--concurrency", type=count(1), default=8, metavar="N",
                   help="triton backend: requests in flight (one image each; default: 8)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that cannot be decoded (empty, truncated, not an image), named in the "
                        "report, instead of stopping; the protocol scores the others (default: stop, naming the file)")
    g.add_argument("--bottom-up", action="store_true",
                   help="insist on the bottom-up protocol (implied by bottom-up models; refused for top-down ones)")
    out = parser.add_argument_group("output")
    add_json_arg(out)
    out.add_argument("--results", default=None, metavar="OUT", help="write the keypoint results (COCO format) to OUT")


def pick_backend(args: argparse.Namespace) -> str:
    """``--backend``, or the one ``--url`` / ``--model FILE`` implies (torch without either)."""
    if args.backend is not None:
        return args.backend
    kind = implied_backend(args.url, args.model_file)
    if kind is None and args.model_file:
        raise ValueError(f"--model {args.model_file}: expected an .onnx graph or a TensorRT .engine/.plan")
    return kind or "torch"


def make_backend(args: argparse.Namespace, task: Any, command: str = "srpose eval") -> Any:
    """The backend ``--backend`` names (see :func:`pick_backend`): torch (the config with ``--checkpoint``), the
    oracle, or the model of ``--model FILE`` / ``--url``. ``task`` None: a model file or URL, whose card tells."""
    from srpose.engines import open_backend

    args.backend = pick_backend(args)
    if args.backend in FILE_BACKENDS or args.backend == "triton":
        target = args.url if args.backend == "triton" else args.model_file
        if not target:
            raise ValueError(f"backend {args.backend!r} needs " + ("--url HOST:PORT" if args.backend == "triton"
                                                                  else "--model FILE"))
        if args.backend == "triton":  # the URL may name the ensemble (grpc://HOST:PORT/MODEL); else the config's
            backend = open_backend(target if "://" in target else f"grpc://{target}",
                                   model_name=task.cfg.name if task is not None else None)
            if task is not None and backend.card.model_name != task.cfg.name:
                print(f"{command}: warning: the served model {backend.model} was exported from "
                      f"{backend.card.model_name!r}, evaluated here with the config {task.cfg.name!r}", file=sys.stderr)
            return backend
        return open_backend(target, device=args.device)
    if args.model_file or args.url:
        raise ValueError(f"backend {args.backend!r} does not take --model/--url; it builds the model from the config")
    if task is None:
        raise ValueError(f"backend {args.backend!r} needs NAME_OR_CONFIG (the model it builds)")
    if args.backend == "oracle":
        from srpose.eval.backends import OracleBackend

        return OracleBackend(task)
    from srpose.checkpoint import build_with_weights
    from srpose.eval.backends import TorchBackend

    model, _ = build_with_weights(task.cfg, args.checkpoint, command=command)
    return TorchBackend(model, device=args.device, fp16=args.fp16)


def run(args: argparse.Namespace) -> int:
    from srpose._io import atomic_write_json, check_out_file
    from srpose.eval.evaluator import EvalOptions, evaluate, format_metrics
    from srpose.resolve import get_config
    from srpose.tasks import task_for

    opts = EvalOptions(flip=args.flip, post=args.post, batch_size=args.batch, workers=args.workers,
                       progress=not args.quiet, results_file=args.results, concurrency=args.concurrency,
                       skip_bad_images=args.skip_bad_images)
    opts.check()
    check_out_file(args.json_out, option="--json")  # output paths first: not after the whole evaluation
    check_out_file(args.results, option="--results")
    if args.model is None:  # a model file or a served model: its card has the config
        from srpose.eval.bench import task_of_backend

        backend = make_backend(args, None)
        try:
            task = task_of_backend(backend)
        except ValueError:
            backend.close()
            raise
        cfg = task.cfg
    else:
        cfg = get_config(args.model)
        task = task_for(cfg)
        backend = None
    if args.bottom_up and task.kind != "bottom-up":
        raise ValueError(f"--bottom-up: {cfg.name} is a top-down model (type {cfg.model.get('type')!r}); "
                         "drop --bottom-up")
    if backend is None:
        backend = make_backend(args, task)
    try:
        card = backend.card
        if card is not None and task.kind == "top-down" and tuple(card.input_size) != tuple(cfg.image_size):
            task = task_for(cfg.with_input_size(*card.input_size))  # exported with --input-size: crop at its size
        dataset = task.dataset(args.ann, args.images, protocol=args.dataset, det=args.det, gt_bbox=args.gt_bbox)
        res = evaluate(task, backend, dataset, opts)
    finally:
        backend.close()
    print(f"{cfg.name} | backend {res.backend} | {res.dataset} {task.kind} | {res.num_persons} people in "
          f"{res.num_images} images | flip {'on' if res.flip else 'off'} | post {res.post_process or 'off'} | "
          f"decoder {res.decoder}")
    print(format_metrics(res.metrics))
    print(f"{res.images_per_s:.1f} {task.item}s/s end to end, {res.backend_ms_per_person:.2f} ms/{task.item} in the "
          "backend")
    if args.results:
        print(f"keypoint results written to {args.results}")
    if args.json_out:
        atomic_write_json(args.json_out, dict(
            model=cfg.name, config_source=cfg.source, checkpoint=args.checkpoint, model_file=args.model_file,
            url=args.url, ann=str(args.ann), images=str(args.images), det=args.det, gt_bbox=bool(args.gt_bbox),
            protocol=task.kind, **res.to_dict()))
        print(f"metrics written to {args.json_out}")
    return 0
