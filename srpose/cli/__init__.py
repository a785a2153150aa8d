"""The ``srpose`` console command: subcommands that map argv to the options of a library call and print its report.

The CLI sits on top of every layer. Each subcommand lives in a module here with ``add_<command>_arguments(parser)``
and ``run_<command>(args) -> int`` (``add_arguments`` / ``run`` in a one-command module), imported only when that
command is used. Argument groups are small reusable functions (:mod:`srpose.cli._args`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

__all__ = ["COMMANDS", "build_parser", "main", "error_message"]

#: command -> (help, module under srpose.cli)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("list the model presets", "info"),
    "info": ("parameters, GMACs and output shape of a model", "info"),
    "eval": ("evaluate keypoint AP (COCO, CrowdPose; top-down and bottom-up) or PCKh (MPII)", "evaluate"),
    "export": ("export to ONNX: FP32, strongly typed FP16 and Q/DQ INT8 graphs with parity checks", "export"),
    "quantize": ("AP-guided INT8: keep in FP16 the layer groups that cost AP, within an AP budget", "quantize"),
    "parity": ("compare exported models with PyTorch on real data: output error, AP deltas, throughput", "parity"),
    "build": ("build a TensorRT engine from an exported ONNX graph (strongly typed)", "build"),
    "bench": ("latency and throughput of a backend (torch, onnxruntime, tensorrt) per batch size", "bench"),
    "train": ("train or fine-tune a model (single process, or many through torchrun)", "train"),
    "generate": ("generate a COCO-format data set of synthetic people (deterministic by seed)", "generate"),
    "pipeline": ("checkpoint to report: export every precision, engines where possible, parity, bench", "pipeline"),
    "triton": ("write a Triton Inference Server model repository (pre/post-processing, network, ensemble)",
               "triton"),
    "serve": ("run a local Triton server on a model repository (127.0.0.1; prints its URLs)", "serve"),
    "predict": ("pose on your images, videos and webcam: detector, keypoints, tracking, drawn output", "predict"),
    "demo": ("end to end on built-in defaults: generate data, train, export, evaluate, bench, report", "pipeline"),
}


def _entry(command: str, kind: str):  # noqa: ANN202 - a function
    """``add_<command>_arguments`` / ``run_<command>`` of the command's module (``add_arguments`` / ``run`` in a
    module serving one command)."""
    module = importlib.import_module(f"srpose.cli.{COMMANDS[command][1]}")
    name = f"add_{command}_arguments" if kind == "add" else f"run_{command}"
    return getattr(module, name, None) or getattr(module, "add_arguments" if kind == "add" else "run")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand (``only``: build just that one's arguments, the others stay bare)."""
    from srpose import __version__

    parser = argparse.ArgumentParser(prog="srpose", description="SRPose-TRT: SRPose checkpoints to ONNX and "
                                     "TensorRT; evaluation, parity, profiling, training and serving.")
    parser.add_argument("--version", action="version", version=f"srpose {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            _entry(name, "add")(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    if command == "predict":
        # predict runs reader, pose and writer threads side by side: OpenMP workers spinning while they wait starve
        # them (the demo model in PyTorch on 2 busy cores: 31 frames/s waiting passively, 1 to 10 spinning). Read
        # once, when torch loads (parsing loads it): set here, first; the user's own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    import warnings

    # library warnings (e.g. the host flip test's cost per person) as one line each, like the errors below
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"srpose {args.command}: warning: {msg}\n"
    try:
        return int(_entry(args.command, "run")(args) or 0)
    except BrokenPipeError:  # the reader left (`srpose list | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141  # 128 + SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C: one line (files being written stay under temporary names, then go)
        print(f"\nsrpose {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT
    except (ValueError, OSError, RuntimeError) as e:
        print(f"srpose {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 2


def error_message(e: BaseException) -> str:
    """The one line the CLI prints for an error: the library's message (bad input names the file, value and fix),
    the original message of an error raised in a data-loader worker (not its traceback), a full disk or another
    operating-system error named with its file; terminal escape codes removed."""
    import errno
    import re

    msg = str(e)
    if "Original Traceback (most recent call last)" in msg:  # re-raised by torch's DataLoader from a worker
        lines = [ln for ln in msg.splitlines() if ln.startswith(f"{type(e).__name__}: ")]
        msg = lines[-1][len(type(e).__name__) + 2:] if lines else msg.splitlines()[0]
    elif isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" while writing {e.filename}" if e.filename else ""
        msg = (f"no space left on the device{where}: free some space or write to another disk (nothing "
               "half-written was published)")
    elif isinstance(e, OSError) and e.strerror and e.filename is not None and msg.startswith("[Errno"):
        msg = f"{e.filename}: {e.strerror}" + (f" (and {e.filename2})" if e.filename2 else "")
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", msg)


if __name__ == "__main__":
    sys.exit(main())
