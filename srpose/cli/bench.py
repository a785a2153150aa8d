"""``srpose bench``: argv -> a backend and :class:`~srpose.eval.bench.BenchOptions` -> latency table, JSON,
PNG."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._args import add_runtime_args, count, implied_backend, number, publish_rows, wxh

__all__ = ["add_arguments", "run"]

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME_OR_CONFIG|MODEL", nargs="?", default=None,
                   help="preset/config for --backend torch; an .onnx file or .engine file for onnxruntime/tensorrt; "
                        "none for triton (the served model's card tells)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt", "triton"), default=None,
                   help="default: triton with --url, the file's runtime for .onnx/.engine files, else torch")
    p.add_argument("--model", dest="model_file", default=None, metavar="FILE",
                   help="the .onnx/.engine file to time (the positional MODEL, spelled as in `srpose eval`)")
    p.add_argument("--checkpoint", default=None, help="torch backend: checkpoint to load (timing does not need one)")
    add_runtime_args(p)
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "fp16-weights"),
                   help="torch backend on CUDA: autocast fp16/bf16 or half weights (default: fp32)")
    p.add_argument("--batch", type=count(1), nargs="+", default=None, metavar="N",
                   help="batch sizes (default: 1 8 32; 1 for bottom-up models)")
    p.add_argument("--input-size", type=wxh("--input-size"), default=None, metavar="WxH",
                   help="bottom-up models (dynamic H and W): input size to time (default: the config's)")
    p.add_argument("--warmup-s", type=number(0), default=1.0, help="warm-up seconds per batch size (default: 1)")
    p.add_argument("--duration-s", type=number(0, above=True), default=3.0,
                   help="timed seconds per batch size (default: 3)")
    p.add_argument("--end-to-end", action="store_true",
                   help="time preprocessing (affine crop + normalisation of each person) and decoding too")
    p.add_argument("--cuda-graph", action="store_true", help="tensorrt backend: replay CUDA graphs")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the rows as JSON")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write latency and throughput vs batch size")
    p.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    from ._bench_triton import add_triton_arguments

    add_triton_arguments(p)


def _backend(args: argparse.Namespace) -> tuple[Any, Any]:
    """(backend, task): the torch model of a config, or the file's backend with the task of its card."""
    from srpose.eval.bench import task_of_backend

    if args.backend == "torch":
        import torch

        from srpose.checkpoint import load_checkpoint
        from srpose.eval.backends import TorchBackend
        from srpose.models import build_model
        from srpose.tasks import task_for

        if args.threads:
            torch.set_num_threads(args.threads)
        task = task_for(args.model)
        if args.input_size is not None and task.default_hw_profile() is None:  # refused before the model is built
            raise ValueError(f"--input-size applies to bottom-up models only; {task.cfg.name} has a fixed input")
        model = build_model(task.cfg)
        if args.checkpoint:  # timing does not need trained weights
            load_checkpoint(model, args.checkpoint)
        return TorchBackend(model, device=args.device, precision=args.precision), task
    from srpose.engines import backend_kind, open_backend

    path = Path(args.model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (for --backend {args.backend})")
    kind = backend_kind(path)
    if kind != args.backend:
        raise ValueError(f"{path} is {'a ' + kind + ' model' if kind else 'not a model file'}: --backend "
                         f"{args.backend} runs {'.onnx' if args.backend == 'onnxruntime' else '.engine'} files")
    options = dict(cuda_graph=True) if args.cuda_graph and kind == "tensorrt" else {}
    backend = open_backend(path, device=args.device, threads=args.threads, **options)
    return backend, task_of_backend(backend)


def _pick_backend(args: argparse.Namespace) -> None:
    """One model (the positional or ``--model``) and the backend: given, or what the arguments imply."""
    if args.model_file is not None:
        if args.model is not None and args.model != args.model_file:
            raise ValueError(f"two models given ({args.model} and --model {args.model_file}): give one")
        args.model = args.model_file
    if args.backend is None:
        args.backend = implied_backend(args.url, args.model) or "torch"


def run(args: argparse.Namespace) -> int:
    from srpose._io import check_out_file
    from srpose.engines.profiler import format_table, plot_profile
    from srpose.eval.bench import BenchOptions, bench

    _pick_backend(args)
    check_out_file(args.json_out, option="--json")
    check_out_file(args.plot, option="--plot")
    if args.backend == "triton":
        from ._bench_triton import run_triton

        return run_triton(args)
    if args.model is None:
        raise ValueError(f"--backend {args.backend} needs NAME_OR_CONFIG|MODEL")
    opts = BenchOptions(batches=args.batch, input_size=args.input_size, warmup_s=args.warmup_s,
                        duration_s=args.duration_s, end_to_end=args.end_to_end, progress=not args.quiet)
    backend, task = _backend(args)
    try:
        rows = bench(backend, task, opts)
    finally:
        backend.close()
    for r in rows:
        r["device"] = args.device
        if args.backend == "torch":
            r["precision"] = args.precision
    print(format_table(rows))
    publish_rows(rows, args, plot_profile)
    return 0
