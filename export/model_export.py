"""Checkpoint -> ``DIR/<name>.<precision>.onnx`` + ``DIR/<name>.export.json``, for any pose task:
``ExportOptions -> export_model(...) -> ExportReport``.

Every input is checked before any work starts; files are built in a staging folder and moved into the output
folder only when all of them (and their parity checks against PyTorch) succeeded, so a failure leaves nothing
half-written. Each file is compared with the PyTorch graph it was traced from in ONNX Runtime (the runtime layer's
backend, float16 rounding emulated on the CPU) on the task's random inputs and, where calibration data is given,
on real crops.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from srpose.engines.base import batch_items as count
from srpose.export._export_io import check_image_options, io_shapes, real_image_feeds
from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
from srpose.export.int8 import DEFAULT_EXCLUDE, DEFAULT_OP_TYPES
from srpose.export.onnx_export import SUPPORTED_OPSETS, as_task, check_batch
from srpose.tasks import PoseTask, parse_shape_profile

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["PRECISIONS", "Fp16Options", "Int8Options", "ExportOptions", "ExportReport", "export_model",
           "parity_report"]

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Fp16Options:
    """The strongly typed FP16 graph: op types and node-name patterns kept in float32, and the converter."""

    keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS
    keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES
    engine: str = "srpose"


@dataclass
class Int8Options:
    """The explicit Q/DQ INT8 graph: calibration crops (``calib_ann`` / ``calib_images``), range estimation, the
    calibration cache folder (default: ``calib_cache`` in the output folder), the node patterns left in float and
    the op types quantised; ``parity_crops`` real crops for the parity check of every file."""

    calib_ann: str | None = None
    calib_images: str | None = None
    calib_num: int = 512
    calib_method: str = "entropy"
    calib_batch: int = 8
    calib_cache: str | None = None
    exclude: Sequence[str] = DEFAULT_EXCLUDE
    op_types: Sequence[str] = DEFAULT_OP_TYPES
    parity_crops: int = 16
    engine: str = "srpose"  # or "modelopt": NVIDIA ModelOpt's quantiser (srpose.export._modelopt_int8)


@dataclass
class ExportOptions:
    """What to export: ``precisions`` of the graphs, the batch profile (None: the task's default, 1,32,64
    top-down, 1,1,4 bottom-up), the in-graph ``flip`` (None: the task's default) and ``decode``, the opset, a
    smaller ``input_size`` (top-down, W x H) or the ``shape_profile`` of dynamic inputs (bottom-up), and the base
    ``name`` of the files (default: the config's).

    ``image_input``: image-to-keypoints graphs (:mod:`srpose.export.image_graph`): uint8 images (+ person boxes,
    top-down) in; top-down: keypoints in image pixels and person scores out, with the crop, normalisation, flip test
    (``flip`` None: the config's ``test_cfg.flip_test``) and decoding inside. ``batch`` is then the persons per
    call (default 1,32,128), ``image_batch`` the images per call (default 1,8,16), ``shape_profile`` the image
    sizes (top-down default 32x32,640x480,2048x2048), ``pixel_format`` the channel order (``bgr``: as OpenCV
    decodes)."""

    out_dir: str | Path
    precisions: Sequence[str] = ("fp32",)
    name: str | None = None
    batch: Sequence[int] | None = None
    flip: bool | None = None
    decode: bool = False
    opset: int = 17
    input_size: tuple[int, int] | None = None
    shape_profile: Any = None
    simplify: bool = True
    fp16: Fp16Options = field(default_factory=Fp16Options)
    int8: Int8Options = field(default_factory=Int8Options)
    image_input: bool = False
    image_batch: Sequence[int] | None = None
    pixel_format: str = "bgr"

    def image_graph_options(self) -> Any:
        """The :class:`~srpose.export.image_graph.ImageGraphOptions` of these options."""
        from srpose.export.image_graph import ImageGraphOptions

        return ImageGraphOptions(flip=self.flip, persons=self.batch, image_batch=self.image_batch,
                                 shape_profile=self.shape_profile, pixel_format=self.pixel_format)


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: one entry per file (precision, size, sha256, I/O shapes, parity against
    PyTorch, the FP16 / INT8 conversion details) and the settings; ``to_dict`` is ``<name>.export.json``."""

    model: str
    name: str
    task: str
    config_source: str
    checkpoint: str | None
    checkpoint_sha256: str | None
    input_size: list[int]
    heatmap_size: list[int]
    batch: dict[str, int]
    shape_profile: list[list[int]] | None
    flip: bool
    decode: bool
    opset: int
    output: str
    image_input: bool
    image_batch: dict[str, int] | None
    parity_reference: str
    parity_inputs: dict[str, int]
    files: list[dict[str, Any]]
    out_dir: str = ""
    report_file: str = ""
    tool_version: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        """One line per file: path, size and its parity figures."""
        lines = []
        for entry in self.files:
            parts = [f"{group}/{out}: max abs {e['max_abs']:.3g}, rel L2 "
                     f"{'n/a' if e['rel_l2'] is None else format(e['rel_l2'], '.3g')}, cos {e['cosine']:.6f}"
                     for group, outs in entry["parity"].items() for out, e in outs.items()]
            t = entry.get("traffic")
            size = f"{entry['bytes'] / 1e6:.1f} MB"
            size += "" if t is None else f", {t['bytes_per_person'] / 1e6:.3f} MB/person moved"
            lines.append(f"{Path(self.out_dir) / entry['file']}  {size}  [{'; '.join(parts)}]")
        return lines


def _check_options(task: PoseTask, opts: ExportOptions, checkpoint: str | None) -> tuple[list[str], str]:
    """Refuse bad options before any work; returns (precisions, file base name)."""
    from srpose._io import check_out_dir
    from srpose.export.calibration import check_image_folder

    precisions = list(dict.fromkeys(opts.precisions))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precision {bad or precisions}: choose from {PRECISIONS}")
    unsupported = [p for p in precisions if p not in task.precisions]
    if unsupported:
        raise ValueError(f"--precision {' '.join(unsupported)}: {task.kind} models export "
                         f"{', '.join(task.precisions)}" + (" (INT8 calibration of bottom-up models needs whole "
                                                            "images: not supported yet)" if "int8" in unsupported
                                                           else ""))
    if int(opts.opset) not in SUPPORTED_OPSETS:
        raise ValueError(f"--opset {opts.opset} is not supported: use {SUPPORTED_OPSETS.start}.."
                         f"{SUPPORTED_OPSETS.stop - 1} (17 recommended)")
    name = opts.name or task.cfg.name
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"--name {name!r} must be a plain file name without folders")
    check_out_dir(opts.out_dir, option="--out-dir")
    i8 = opts.int8
    if (i8.calib_ann is None) != (i8.calib_images is None):
        raise ValueError("give both --calib-ann and --calib-images (calibration crops need the annotations and "
                         "the images)")
    if opts.image_input:
        check_image_options(task, opts)
    elif opts.image_batch is not None:
        raise ValueError("--image-batch applies to image-input graphs: add --image-input")
    if task.kind == "bottom-up":
        if opts.input_size is not None:
            raise ValueError("--input-size does not apply to bottom-up models (any size runs): bound the TensorRT "
                             "input sizes with --shape-profile MIN,OPT,MAX instead")
        if i8.calib_ann is not None:
            raise ValueError("bottom-up models have no INT8 export yet (calibration needs whole images): drop "
                             "--calib-ann / --calib-images")
        if opts.shape_profile is not None:
            parse_shape_profile(opts.shape_profile)
    elif opts.shape_profile is not None and not opts.image_input:
        raise ValueError(f"--shape-profile applies to bottom-up models and to image-input graphs; {task.cfg.name} is "
                         "top-down: add --image-input to bound its image sizes")
    if "int8" in precisions and i8.calib_ann is None:
        raise ValueError("--precision int8 needs calibration data: pass --calib-ann ANN --calib-images DIR")
    if i8.calib_images is not None:
        check_image_folder(i8.calib_images)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    if i8.calib_num < 1 or i8.calib_batch < 1 or i8.parity_crops < 0:
        raise ValueError("--calib-num and --calib-batch must be >= 1, --parity-crops >= 0")
    if not (opts.image_input and task.kind == "top-down"):
        task.export_flip(opts.flip, opts.decode)
    return precisions, name


def export_model(config: Any, options: ExportOptions, *, checkpoint: str | None = None,
                 model: "nn.Module | None" = None) -> ExportReport:
    """Export the model of ``config`` (a preset, config file, PoseConfig or task) with the weights of
    ``checkpoint`` (or an already built ``model``) as ``options`` asks; returns the report (also written as
    ``<name>.export.json``)."""
    from srpose import __version__
    from srpose._io import atomic_write_json, publish_files
    from srpose.checkpoint import build_with_weights

    t_start = time.perf_counter()
    task = as_task(config)
    if options.input_size is not None and task.kind == "top-down":
        task = as_task(task.cfg.with_input_size(*options.input_size))
    image_top_down = options.image_input and task.kind == "top-down"
    batch = check_batch(task.default_batch if options.batch is None or image_top_down else options.batch)
    precisions, name = _check_options(task, options, checkpoint)
    sha = None
    if model is None:
        model, sha = build_with_weights(task.cfg, checkpoint, command="srpose export")
    calib, real = _calibration_readers(task, options, batch)
    out_dir = Path(options.out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"srpose-export-{name}-"))
    try:
        report = _build(task, model, options, name, batch, precisions, staging, calib, real, sha, checkpoint)
        report.tool_version, report.seconds = f"srpose {__version__}", round(time.perf_counter() - t_start, 2)
        report.out_dir, report.report_file = str(out_dir), str(out_dir / f"{name}.export.json")
        atomic_write_json(staging / f"{name}.export.json", report.to_dict())
        out_dir.mkdir(parents=True, exist_ok=True)
        # publish every file and the report, or none of them (a full disk leaves the previous export as it was)
        publish_files({out_dir / f: staging / f for f in [*(e["file"] for e in report.files), f"{name}.export.json"]})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _calibration_readers(task: PoseTask, opts: ExportOptions, batch: tuple[int, int, int]) -> tuple[Any, Any]:
    from srpose.export.calibration import CalibrationReader

    i8 = opts.int8
    if i8.calib_ann is None:
        return None, None
    calib = CalibrationReader(i8.calib_ann, i8.calib_images, task.cfg, num=i8.calib_num, batch_size=i8.calib_batch)
    real = (CalibrationReader(i8.calib_ann, i8.calib_images, task.cfg, num=i8.parity_crops,
                              batch_size=min(i8.parity_crops, batch[2])) if i8.parity_crops else None)
    return calib, real


def _build(task: PoseTask, model: "nn.Module", opts: ExportOptions, name: str, batch: tuple[int, int, int],
           precisions: Sequence[str], staging: Path, calib: Any, real: Any, sha: str | None,
           checkpoint: str | None) -> ExportReport:
    from srpose.export.onnx_export import export_onnx, read_card_of

    image = opts.image_input
    wrap = image and task.kind == "top-down"  # the network is the raw crop graph; flip and decode go around it
    net_dir = staging / "network" if image else staging
    net_dir.mkdir(exist_ok=True)
    fp32 = net_dir / f"{name}.fp32.onnx"
    export_onnx(model, task, fp32, batch=batch, shape_profile=None if wrap else opts.shape_profile,
                flip=False if wrap else opts.flip, decode=False if wrap else opts.decode, opset=opts.opset,
                simplify=opts.simplify, metadata=dict(checkpoint_sha256=sha))
    paths, details = _convert(fp32, net_dir, name, precisions, opts, calib)
    networks = dict(paths)
    if image:
        from srpose.export.image_graph import write_image_graph

        paths = {p: write_image_graph(path, staging / f"{name}.{p}.onnx", opts.image_graph_options())
                 for p, path in paths.items()}
    card = read_card_of(paths[precisions[0]])
    reference = task.reference_for(model, card)
    groups = task.parity_inputs(card)
    if real is not None:
        groups["real"] = real_image_feeds(task, card, real) if card.image_input and wrap else list(real)
    files = [_file_entry(task, paths[p], p, reference, groups, details.get(p), networks[p]) for p in precisions]
    profile = None if card.hw_profile is None else [[w, h] for h, w in card.hw_profile]
    return ExportReport(
        model=task.cfg.name, name=name, task=task.kind, config_source=task.cfg.source, checkpoint=checkpoint,
        checkpoint_sha256=sha, input_size=list(card.input_size), heatmap_size=list(card.heatmap_size),
        batch=dict(zip(("min", "opt", "max"), card.batch)), shape_profile=profile, flip=card.flip,
        decode=card.decode, opset=int(opts.opset), output=card.output_kind, image_input=card.image_input,
        image_batch=None if card.image_batch is None else dict(zip(("min", "opt", "max"), card.image_batch)),
        parity_reference="PyTorch eager (same flip/decode) vs ONNX Runtime CPU (FP16: float16 rounding emulated)",
        parity_inputs={g: sum(count(b) for b in items) for g, items in groups.items()}, files=files)


def _convert(fp32: Path, staging: Path, name: str, precisions: Sequence[str], opts: ExportOptions,
             calib: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    """The FP16 / INT8 graphs derived from the FP32 one, and what each conversion did."""
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8

    paths, details = {"fp32": fp32}, {}
    if "fp16" in precisions:
        paths["fp16"] = staging / f"{name}.fp16.onnx"
        f = opts.fp16
        details["fp16"] = convert_fp16(fp32, paths["fp16"], keep_fp32_ops=f.keep_fp32_ops,
                                       keep_fp32_nodes=f.keep_fp32_nodes, engine=f.engine).to_dict()
    if "int8" in precisions:
        paths["int8"] = staging / f"{name}.int8.onnx"
        i8 = opts.int8
        cache_dir = Path(i8.calib_cache) if i8.calib_cache else Path(opts.out_dir) / "calib_cache"
        details["int8"] = quantize_int8(fp32, paths["int8"], calib, method=i8.calib_method, exclude=i8.exclude,
                                        op_types=i8.op_types, cache_dir=cache_dir, data_key=calib.data_key(),
                                        input_name="input", keep_fp32_ops=opts.fp16.keep_fp32_ops,
                                        keep_fp32_nodes=opts.fp16.keep_fp32_nodes, engine=i8.engine).to_dict()
    return paths, details


def _file_entry(task: PoseTask, path: Path, precision: str, reference: Callable, groups: dict,
                detail: Any, network: Path) -> dict[str, Any]:
    """The report entry of a written file; ``network``: its network (the file itself, or the crop graph an image
    graph wraps: the bytes moved are the network's, per person crop)."""
    from srpose._io import sha256_file
    from srpose.export.traffic import export_traffic

    entry: dict[str, Any] = dict(precision=precision, file=path.name, bytes=path.stat().st_size,
                                 sha256=sha256_file(path), **io_shapes(path))
    entry["parity"] = parity_report(path, reference, groups, task)
    entry["traffic"] = export_traffic(network)  # activation bytes written per person, by type (#22)
    if detail is not None:
        entry[precision] = detail
    return entry


def parity_report(onnx_path: str | Path, reference: Callable[[np.ndarray], dict], groups: dict[str, list],
                  task: PoseTask) -> dict[str, dict[str, Any]]:
    """Errors of ``onnx_path`` (ONNX Runtime CPU) against the PyTorch ``reference`` on each named group of input
    batches: ``{group: {output name: max abs, relative L2, cosine, ...}}``."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.export.compare import ErrorAccumulator

    from srpose.card import KEYPOINTS

    out: dict[str, dict[str, Any]] = {}
    backend = OnnxRuntimeBackend(onnx_path)
    decoded_kpts = backend.decoded and task.kind == "top-down"
    try:
        for group, batches in groups.items():
            accs: dict[str, ErrorAccumulator] = {}
            for x in batches:
                ref, got = reference(x), backend.infer(x)
                for name, r in ref.items():
                    if got[name].shape != r.shape:
                        raise RuntimeError(f"{onnx_path}: output {name!r} has shape {got[name].shape} in ONNX "
                                           f"Runtime but {r.shape} in PyTorch for {count(x)} inputs")
                    acc = accs.setdefault(name, ErrorAccumulator(keypoints=decoded_kpts and name == KEYPOINTS))
                    try:
                        acc.add(task.compare_view(name, r), task.compare_view(name, got[name]))
                    except ValueError as e:  # non-finite values: the parity check fails, naming where
                        raise ValueError(f"parity check of {Path(onnx_path).name}, output {name!r} on the {group} "
                                         f"inputs: {e}") from None
            if accs:
                out[group] = {name: acc.result() for name, acc in accs.items()}
    finally:
        backend.close()
    return out
