"""The ``srpose eval`` command: build a backend, run the top-down evaluation, print / write the metrics.

Backends are looked up in :data:`BACKENDS` (name -> factory(args, cfg) -> Backend); file-based backends
(ONNX Runtime, TensorRT) register themselves with :func:`register_backend` and read ``--model FILE``.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from srpose.engines.base import Backend
    from srpose.config import PoseConfig

    from .evaluator import EvalResult

__all__ = ["BACKENDS", "register_backend", "add_eval_arguments", "run_eval", "format_table"]

BackendFactory = Callable[[argparse.Namespace, "PoseConfig"], "Backend"]


def _torch_backend(args: argparse.Namespace, cfg: "PoseConfig") -> "Backend":
    from srpose import build_model, load_checkpoint

    from .backends import TorchBackend

    model = build_model(cfg)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    else:
        print("srpose eval: warning: no --checkpoint given, evaluating randomly initialised weights",
              file=sys.stderr)
    return TorchBackend(model, device=args.device, fp16=args.fp16)


def _oracle_backend(args: argparse.Namespace, cfg: "PoseConfig") -> "Backend":
    from .backends import OracleBackend

    return OracleBackend(cfg.data)


#: backend name -> factory(args, cfg); factories of file-based backends read ``args.model_file``.
BACKENDS: dict[str, BackendFactory] = {"torch": _torch_backend, "oracle": _oracle_backend}
#: backends that take ``--model FILE`` (file-based engines add themselves here).
FILE_BACKENDS: set[str] = set()


def register_backend(name: str, factory: BackendFactory, *, takes_model_file: bool = False) -> None:
    """Make ``--backend name`` available; ``takes_model_file`` backends require ``--model FILE``."""
    BACKENDS[name] = factory
    if takes_model_file:
        FILE_BACKENDS.add(name)


def _onnxruntime_backend(args: argparse.Namespace, cfg: "PoseConfig") -> "Backend":
    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(args.model_file, providers="cuda" if str(args.device).startswith("cuda") else None)


register_backend("onnxruntime", _onnxruntime_backend, takes_model_file=True)


def _tensorrt_backend(args: argparse.Namespace, cfg: "PoseConfig") -> "Backend":
    from srpose.engines.tensorrt import TensorRTBackend

    dev = str(args.device)
    if not dev.startswith("cuda"):
        raise ValueError("the tensorrt backend runs on a GPU: pass --device cuda (or cuda:N)")
    return TensorRTBackend(args.model_file, device=int(dev.split(":")[1]) if ":" in dev else 0)


register_backend("tensorrt", _tensorrt_backend, takes_model_file=True)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose eval``."""
    from srpose.cli import add_data_args, add_json_arg, add_model_args

    add_model_args(parser)
    add_data_args(parser)
    g = parser.add_argument_group("inference")
    g.add_argument("--backend", default="torch", metavar="NAME",
                   help=f"inference backend: {', '.join(sorted(BACKENDS))} (default: torch)")
    g.add_argument("--model", dest="model_file", default=None, metavar="FILE",
                   help="model / engine file of file-based backends (ONNX, TensorRT)")
    g.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    g.add_argument("--fp16", action="store_true", help="torch backend: CUDA autocast float16")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (default: the config's test_cfg.flip_test)")
    g.add_argument("--no-post", dest="post", action="store_false",
                   help="skip the decoder's sub-pixel post-processing")
    g.add_argument("--batch", type=int, default=32, metavar="N", help="persons per batch (default: 32)")
    g.add_argument("--workers", type=int, default=2, metavar="N", help="data loader workers (default: 2)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--bottom-up", action="store_true",
                   help="bottom-up protocol: whole images, no person boxes (implied by bottom-up models)")
    out = parser.add_argument_group("output")
    add_json_arg(out)
    out.add_argument("--results", default=None, metavar="OUT", help="write the keypoint results (COCO format) to OUT")


def _make_dataset(args: argparse.Namespace, cfg: "PoseConfig", dataset: str) -> Any:
    from srpose.data import DATASET_CLASSES

    if dataset not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(DATASET_CLASSES)}")
    cls = DATASET_CLASSES[dataset]
    if dataset == "mpii":
        if args.det:
            raise ValueError("MPII is evaluated on its annotated person boxes: drop --det")
        return cls(args.ann, args.images, cfg.data)
    if not args.det and not args.gt_bbox:
        raise ValueError(f"{dataset} evaluation needs person boxes: pass --det DET.json or --gt-bbox")
    return cls(args.ann, args.images, cfg.data, det_file=args.det, use_gt_bbox=bool(args.gt_bbox))


def format_table(metrics: dict[str, float]) -> str:
    """Two aligned rows: metric names and values."""
    width = max(7, *(len(k) + 1 for k in metrics))
    names = "".join(f"{k:>{width}}" for k in metrics)
    values = "".join(f"{v:>{width}.4f}" for v in metrics.values())
    return f"{names}\n{values}"


def _summary(args: argparse.Namespace, cfg: "PoseConfig", res: "EvalResult") -> dict[str, Any]:
    return dict(model=cfg.name, config_source=cfg.source, checkpoint=args.checkpoint, model_file=args.model_file,
                ann=str(args.ann), images=str(args.images), det=args.det, gt_bbox=bool(args.gt_bbox),
                **res.to_dict())


def run_eval(args: argparse.Namespace) -> int:
    """Run ``srpose eval``; returns the exit status (errors raise ValueError / FileNotFoundError / RuntimeError)."""
    from srpose import get_config
    from srpose._io import atomic_write_json

    from .evaluator import evaluate

    if args.backend not in BACKENDS:
        raise ValueError(f"unknown backend {args.backend!r}: choose one of {sorted(BACKENDS)}")
    if args.backend in FILE_BACKENDS and not args.model_file:
        raise ValueError(f"backend {args.backend!r} needs --model FILE")
    if args.backend not in FILE_BACKENDS and args.model_file:
        raise ValueError(f"backend {args.backend!r} does not take --model; it builds the model from the config")
    if args.batch < 1 or args.workers < 0:
        raise ValueError(f"--batch must be >= 1 and --workers >= 0, got {args.batch} and {args.workers}")
    cfg = get_config(args.model)
    if getattr(args, "bottom_up", False) or cfg.model.get("type") in ("BottomUp", "AssociativeEmbedding"):
        from .bottom_up import run_bottom_up_eval

        return run_bottom_up_eval(args, cfg)
    dataset_name = args.dataset or cfg.data.get("dataset", "coco")
    dataset = _make_dataset(args, cfg, dataset_name)
    backend = BACKENDS[args.backend](args, cfg)
    size = (getattr(backend, "meta", None) or {}).get("input_size")
    if size and tuple(size) != tuple(cfg.image_size):  # a model exported with --input-size: crop at its size
        cfg = cfg.with_input_size(*size)
        dataset = _make_dataset(args, cfg, dataset_name)
    try:
        res = evaluate(backend, dataset, cfg.data, cfg.test_cfg, flip=args.flip, post=args.post,
                       batch_size=args.batch, workers=args.workers, progress=not args.quiet,
                       results_file=args.results)
    finally:
        backend.close()
    print(f"{cfg.name} | backend {res.backend} | {res.dataset} | {res.num_persons} persons in {res.num_images} "
          f"images | flip {'on' if res.flip else 'off'} | post {res.post_process or 'off'} | decoder {res.decoder}")
    print(format_table(res.metrics))
    print(f"{res.images_per_s:.1f} persons/s end to end, {res.backend_ms_per_person:.2f} ms/person in the backend")
    if args.results:
        print(f"keypoint results written to {args.results}")
    if args.json_out:
        atomic_write_json(args.json_out, _summary(args, cfg, res))
        print(f"metrics written to {args.json_out}")
    return 0
