"""Small reusable argument groups and argparse types of the ``srpose`` subcommands."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

__all__ = ["implied_backend", "image_graph_of", "add_model_args", "add_data_args", "add_json_arg", "add_runtime_args",
           "add_calibration_args", "publish_rows", "wxh", "batch_profile", "count", "number", "warn", "out_lines"]


def implied_backend(url: str | None, model_file: str | None) -> str | None:
    """The backend ``--url`` (triton) or a model file (by its suffix) implies; None for neither or another file."""
    from srpose.engines import backend_kind

    return "triton" if url else backend_kind(model_file) if model_file else None


def image_graph_of(model: str, dest: Any, *, crop_input: bool, flip: bool | None = None) -> str | None:
    """Where a deployment command (``srpose build``, ``srpose triton``) turns a top-down crop ``.onnx`` graph into its
    image-to-keypoints graph (crop, flip test and decoding in the network): writes it to ``dest`` and returns its
    path; None (deploy ``model`` as it is) with ``crop_input``, for other files, and for graphs without a config.
    ``flip``: the flip test asked for graphs without one (None: the config's); graphs that flip keep it, graphs that
    decode without it stay without."""
    from pathlib import Path

    from srpose.card import CardError, read_card

    if crop_input or Path(model).suffix != ".onnx":
        return None
    try:
        card = read_card(model)
    except (CardError, FileNotFoundError):
        return None  # the deployment names the problem (or derives a card)
    if card.task != "top-down" or card.image_input or not card.config:  # no config: nothing to crop with
        return None
    from srpose.export.image_graph import ImageGraphOptions, write_image_graph

    want = True if card.flip else (False if card.decode else flip)
    return str(write_image_graph(model, dest, ImageGraphOptions(flip=want)))


def add_model_args(p: argparse.ArgumentParser, *, checkpoint_required: bool = False,
                   optional_with: str | None = None) -> None:
    """NAME_OR_CONFIG positional and --checkpoint (``optional_with``: the options that make the name optional)."""
    help_ = "preset name (see `srpose list`), official mmpose .py config, or project .json config"
    if optional_with:
        help_ += f" (optional with {optional_with}: the model's card has its config)"
    p.add_argument("model", metavar="NAME_OR_CONFIG", nargs="?" if optional_with else None, default=None,
                   help=help_)
    p.add_argument("--checkpoint", required=checkpoint_required, default=None,
                   help="checkpoint .pth (official mmpose format or the project's own)")


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--ann, --images, --det | --gt-bbox, --dataset."""
    g = p.add_argument_group("data")
    g.add_argument("--ann", required=required, help="COCO-format keypoint annotation file")
    g.add_argument("--images", required=required, help="image folder")
    box = g.add_mutually_exclusive_group(required=False)
    box.add_argument("--det", default=None, help="person detection results (COCO results format; top-down)")
    box.add_argument("--gt-bbox", action="store_true", help="use ground-truth boxes instead of detections (top-down)")
    g.add_argument("--dataset", choices=("coco", "crowdpose", "mpii"), default=None,
                   help="evaluation protocol (default: the model config's dataset)")


def add_json_arg(p: Any) -> None:
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write results as JSON to OUT")


def add_runtime_args(p: Any, *, device_help: str = "cpu or cuda[:N] (default: cpu)") -> None:
    """--device and --threads."""
    p.add_argument("--device", default="cpu", help=device_help)
    p.add_argument("--threads", type=count(1), default=None, metavar="N", help="CPU threads (torch and ONNX Runtime)")


def _argtype(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising ValueError (argparse then names the option)."""
    def parse(text: str) -> Any:
        try:
            return fn(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = fn.__name__
    return parse


def count(minimum: int = 1) -> Callable[[str], int]:
    """argparse type of an integer >= ``minimum`` (threads, workers, batch sizes ...): refused while parsing, before
    any work."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if v < minimum:
            raise ValueError(f"must be >= {minimum}, got {v}")
        return v

    parse.__name__ = f"integer >= {minimum}"
    return _argtype(parse)


def number(minimum: float = 0.0, *, above: bool = False) -> Callable[[str], float]:
    """argparse type of a finite number >= ``minimum`` (> with ``above``): seconds, AP budgets, learning rates."""
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < minimum or (above and v == minimum):
            raise ValueError(f"must be a finite number {'>' if above else '>='} {minimum:g}, got {text}")
        return v

    parse.__name__ = "number"
    return _argtype(parse)


def wxh(option: str, *, minimum: int = 16, multiple: int = 1) -> Callable[[str], tuple[int, int]]:
    """argparse type of a ``WxH`` size."""
    from srpose.config import parse_wxh

    return _argtype(lambda t: parse_wxh(t, option=option, minimum=minimum, multiple=multiple))


def batch_profile(option: str = "--batch") -> Callable[[str], tuple[int, int, int]]:
    """argparse type of a MIN,OPT,MAX batch profile (one number N means N,N,N)."""
    from srpose.config import parse_batch

    return _argtype(lambda t: parse_batch(t, option=option))


def add_calibration_args(group: Any, *, required: bool = False) -> None:
    """--calib-ann, --calib-images, --calib-num, --calib-method, --calib-batch: the INT8 calibration crops."""
    group.add_argument("--calib-ann", required=required, default=None, metavar="ANN",
                       help="annotation file of the calibration crops")
    group.add_argument("--calib-images", required=required, default=None, metavar="DIR",
                       help="image folder of the calibration crops")
    group.add_argument("--calib-num", type=count(1), default=512, metavar="N", help="calibration crops (default: 512)")
    group.add_argument("--calib-method", choices=("entropy", "max", "percentile"), default="entropy",
                       help="range estimation (default: entropy)")
    group.add_argument("--calib-batch", type=count(1), default=8, metavar="N", help="crops per calibration batch")


def publish_rows(rows: list, args: Any, plot: Callable[[list, Any], Any]) -> None:
    """Write benchmark rows as JSON (``--json``) and their plot (``--plot``) where asked, saying so on stderr."""
    from srpose._io import atomic_write_json

    if args.json_out:
        atomic_write_json(args.json_out, rows)
        print(f"rows written to {args.json_out}", file=sys.stderr)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)


def warn(command: str, msg: str) -> None:
    print(f"srpose {command}: warning: {msg}", file=sys.stderr)


def out_lines(*lines: str) -> None:
    """Informational lines on stderr (stdout keeps the tables)."""
    for line in lines:
        print(line, file=sys.stderr)
