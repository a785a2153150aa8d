"""The ``srpose export`` command: checkpoint -> ``DIR/<name>.<precision>.onnx`` + ``DIR/<name>.export.json``.

Every input is checked before any work starts; files are built in a staging folder and moved into ``--out-dir``
only when all of them (and their parity checks) succeeded, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig

__all__ = ["add_export_arguments", "run_export", "parse_input_size", "check_out_dir", "parity_report"]

PRECISIONS = ("fp32", "fp16", "int8")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose export``."""
    from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
    from srpose.export.int8 import DEFAULT_EXCLUDE, DEFAULT_OP_TYPES
    from srpose.cli import add_model_args

    add_model_args(p)
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--name", default=None, help="base name of the output files (default: the config's name)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="graphs to write (default: fp32); fp16 = strongly typed casts, int8 = explicit Q/DQ")
    p.add_argument("--batch", default="1,8,32", metavar="MIN,OPT,MAX",
                   help="batch profile stored for TensorRT (default: 1,8,32); the ONNX batch axis is dynamic")
    p.add_argument("--flip", action="store_true", help="fold the flip test into the graph (batch doubled inside)")
    p.add_argument("--decode", action="store_true", help="decode in the graph: output N x K x 3 keypoints")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--input-size", default=None, metavar="WxH", help="input size (default: the config's)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxsim")
    f = p.add_argument_group("fp16")
    f.add_argument("--keep-fp32-ops", nargs="*", default=list(DEFAULT_KEEP_FP32_OPS), metavar="OP",
                   help="op types kept in float32 (default: normalisation, softmax, reductions, exp/log ...)")
    f.add_argument("--keep-fp32-nodes", nargs="*", default=list(DEFAULT_KEEP_FP32_NODES), metavar="PATTERN",
                   help=f"node names / fnmatch patterns kept in float32 (default: {' '.join(DEFAULT_KEEP_FP32_NODES)})")
    f.add_argument("--fp16-engine", choices=("srpose", "modelopt"), default="srpose",
                   help="built-in converter (default) or NVIDIA ModelOpt AutoCast when installed")
    c = p.add_argument_group("int8 calibration")
    c.add_argument("--calib-ann", default=None, metavar="ANN", help="annotation file of the calibration crops")
    c.add_argument("--calib-images", default=None, metavar="DIR", help="image folder of the calibration crops")
    c.add_argument("--calib-num", type=int, default=512, metavar="N", help="calibration crops (default: 512)")
    c.add_argument("--calib-method", choices=("entropy", "max", "percentile"), default="entropy",
                   help="range estimation (default: entropy)")
    c.add_argument("--calib-batch", type=int, default=8, metavar="N", help="crops per calibration batch")
    c.add_argument("--calib-cache", default=None, metavar="DIR",
                   help="calibration cache folder (default: DIR/calib_cache under --out-dir)")
    c.add_argument("--int8-exclude", nargs="*", default=list(DEFAULT_EXCLUDE), metavar="PATTERN",
                   help="node names / fnmatch patterns left in float (default: the heads' output convs)")
    c.add_argument("--int8-op-types", nargs="+", default=list(DEFAULT_OP_TYPES), metavar="OP",
                   help=f"op types to quantise (default: {' '.join(DEFAULT_OP_TYPES)})")
    c.add_argument("--parity-crops", type=int, default=16, metavar="N",
                   help="real crops for the parity check when calibration data is given (default: 16)")
    b = p.add_argument_group("bottom-up models (dynamic H and W; fp32 only)")
    b.add_argument("--shape-profile", default=None, metavar="MIN,OPT,MAX",
                   help="input sizes WxH for TensorRT, e.g. 512x512,704x512,1536x1536 (default: from the input size)")
    b.add_argument("--no-flip", action="store_true",
                   help="with --decode: leave the flip test out of the graph (default: the config's flip_test)")


def parse_input_size(text: str) -> tuple[int, int]:
    """``"192x256"`` -> (192, 256)."""
    from srpose.config import parse_wxh

    return parse_wxh(text, option="--input-size")


def check_out_dir(path: str | Path) -> Path:
    """Raise unless ``path`` is (or can be created as) a writable folder; creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--out-dir {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {path} is not writable: choose another --out-dir")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create output folder {path}: {parent} is not writable")
    return path


def _torch_reference(model: "nn.Module", cfg: "PoseConfig", flip: bool, decode: bool) -> Any:
    from srpose.export.onnx_export import ExportWrapper

    return ExportWrapper(model, cfg, flip=flip, decode=decode).eval()


def parity_report(onnx_path: str | Path, reference: Any, batches: dict[str, list[np.ndarray]],
                  keypoints: bool) -> dict[str, Any]:
    """Errors of ``onnx_path`` (ONNX Runtime CPU) against the torch ``reference`` on each named list of batches."""
    import torch

    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.export.compare import ErrorAccumulator

    out: dict[str, Any] = {}
    backend = OnnxRuntimeBackend(onnx_path)
    try:
        for name, items in batches.items():
            if not items:
                continue
            acc = ErrorAccumulator(keypoints=keypoints)
            for x in items:
                with torch.no_grad():
                    ref = reference(torch.from_numpy(x)).numpy()
                acc.add(ref, backend.infer(x))
            out[name] = acc.result()
    finally:
        backend.close()
    return out


def _io_shapes(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(vi: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    def dtype(vi: Any) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    return dict(inputs=[dict(name=i.name, shape=dims(i), dtype=dtype(i)) for i in m.graph.input],
                outputs=[dict(name=o.name, shape=dims(o), dtype=dtype(o)) for o in m.graph.output])


def run_export(args: argparse.Namespace) -> int:
    """Run ``srpose export``; returns the exit status (bad inputs raise ValueError / FileNotFoundError / ...)."""
    from srpose.export.calibration import CalibrationReader, check_image_folder
    from srpose.export.onnx_export import SUPPORTED_OPSETS, parse_batch
    from srpose import __version__, get_config
    from srpose._io import atomic_path, atomic_write_json
    from srpose.checkpoint import build_with_weights

    t_start = time.perf_counter()
    # ---- check everything before any work
    cfg = get_config(args.model)
    from srpose.models.bottom_up import is_bottom_up

    if is_bottom_up(cfg):
        from srpose.export.bottom_up import run_bottom_up_export_from_export_args

        return run_bottom_up_export_from_export_args(args)
    if getattr(args, "shape_profile", None) or getattr(args, "no_flip", False):
        raise ValueError(f"--shape-profile and --no-flip apply to bottom-up models only; {cfg.name} is top-down")
    if args.input_size:
        cfg = cfg.with_input_size(*parse_input_size(args.input_size))
    batch = parse_batch(args.batch)
    if args.opset not in SUPPORTED_OPSETS:
        raise ValueError(f"--opset {args.opset} is not supported: use {SUPPORTED_OPSETS.start}.."
                         f"{SUPPORTED_OPSETS.stop - 1} (17 recommended)")
    precisions = list(dict.fromkeys(args.precision))
    name = args.name or cfg.name
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"--name {name!r} must be a plain file name without folders")
    out_dir = check_out_dir(args.out_dir)
    if (args.calib_ann is None) != (args.calib_images is None):
        raise ValueError("give both --calib-ann and --calib-images (calibration crops need the annotations and "
                         "the images)")
    if "int8" in precisions and args.calib_ann is None:
        raise ValueError("--precision int8 needs calibration data: pass --calib-ann ANN --calib-images DIR")
    if args.calib_images is not None:
        check_image_folder(args.calib_images)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if args.calib_num < 1 or args.calib_batch < 1 or args.parity_crops < 0:
        raise ValueError("--calib-num and --calib-batch must be >= 1, --parity-crops >= 0")

    model, ckpt_sha = build_with_weights(cfg, args.checkpoint, command="srpose export")
    calib = real = None
    if args.calib_ann is not None:
        calib = CalibrationReader(args.calib_ann, args.calib_images, cfg, num=args.calib_num,
                                  batch_size=args.calib_batch)
        if args.parity_crops:
            real = CalibrationReader(args.calib_ann, args.calib_images, cfg, num=args.parity_crops,
                                     batch_size=min(args.parity_crops, batch[2]))

    # ---- build everything in a staging folder
    staging = Path(tempfile.mkdtemp(prefix=f"srpose-export-{name}-"))
    try:
        report = _build(args, cfg, model, name, batch, precisions, staging, out_dir, calib, real, ckpt_sha)
        report.update(tool_version=f"srpose {__version__}", seconds=round(time.perf_counter() - t_start, 2))
        # ---- publish: files first, the JSON report last
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in report["files"]:
            src = staging / entry["file"]
            with atomic_path(out_dir / entry["file"]) as tmp:
                shutil.copyfile(src, tmp)
        json_path = out_dir / f"{name}.export.json"
        atomic_write_json(json_path, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for entry in report["files"]:
        par = entry.get("parity", {})
        desc = ", ".join(f"{k}: max abs {v['max_abs']:.3g}, rel L2 {v['rel_l2']:.3g}, cos {v['cosine']:.6f}"
                         for k, v in par.items())
        print(f"{out_dir / entry['file']}  {entry['bytes'] / 1e6:.1f} MB  [{desc}]")
    print(f"report written to {json_path}")
    return 0


def _build(args: argparse.Namespace, cfg: "PoseConfig", model: "nn.Module", name: str, batch: tuple[int, int, int],
           precisions: Sequence[str], staging: Path, out_dir: Path, calib: Any, real: Any,
           ckpt_sha: str | None) -> dict[str, Any]:
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8
    from srpose.export.onnx_export import INPUT_NAME, export_onnx
    from srpose._io import sha256_file

    meta = dict(checkpoint_sha256=ckpt_sha)
    fp32 = staging / f"{name}.fp32.onnx"
    export_onnx(model, cfg, fp32, batch=batch, flip=args.flip, decode=args.decode, opset=args.opset,
                simplify=args.simplify, metadata=meta)
    paths: dict[str, Path] = {"fp32": fp32}
    details: dict[str, Any] = {}
    if "fp16" in precisions:
        paths["fp16"] = staging / f"{name}.fp16.onnx"
        details["fp16"] = convert_fp16(fp32, paths["fp16"], keep_fp32_ops=args.keep_fp32_ops,
                                       keep_fp32_nodes=args.keep_fp32_nodes, engine=args.fp16_engine).to_dict()
    if "int8" in precisions:
        paths["int8"] = staging / f"{name}.int8.onnx"
        cache_dir = Path(args.calib_cache) if args.calib_cache else out_dir / "calib_cache"
        details["int8"] = quantize_int8(fp32, paths["int8"], calib, method=args.calib_method,
                                        exclude=args.int8_exclude, op_types=args.int8_op_types,
                                        cache_dir=cache_dir, data_key=calib.data_key(),
                                        input_name=INPUT_NAME).to_dict()

    reference = _torch_reference(model, cfg, args.flip, args.decode)
    w, h = cfg.image_size
    n_rand = min(batch[2], max(batch[0], 4))
    rand = [np.random.default_rng(0).standard_normal((n_rand, 3, h, w)).astype(np.float32)]
    real_batches = list(real) if real is not None else []
    files = []
    for prec in precisions:
        path = paths[prec]
        entry: dict[str, Any] = dict(precision=prec, file=path.name, bytes=path.stat().st_size,
                                     sha256=sha256_file(path), **_io_shapes(path))
        entry["parity"] = parity_report(path, reference, {"random": rand, "real": real_batches},
                                        keypoints=bool(args.decode))
        if prec in details:
            entry[prec] = details[prec]
        files.append(entry)
    return dict(
        model=cfg.name, name=name, config_source=cfg.source, checkpoint=args.checkpoint, checkpoint_sha256=ckpt_sha,
        input_size=list(cfg.image_size), heatmap_size=list(cfg.heatmap_size), batch=dict(zip(("min", "opt", "max"),
                                                                                               batch)),
        flip=bool(args.flip), decode=bool(args.decode), opset=int(args.opset), output="keypoints" if args.decode
        else "heatmaps", parity_reference="PyTorch eager (same flip/decode) vs ONNX Runtime CPU (FP16: float16 "
        "rounding emulated)",
        parity_inputs=dict(random=n_rand, real=sum(len(b) for b in real_batches)), files=files)
