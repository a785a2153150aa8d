"""AP-guided INT8: choose which layer groups stay FP16 by measured keypoint accuracy, not by a fixed exclusion list:
``QuantizeOptions -> search_int8(...) -> QuantizeReport`` (``srpose quantize``).

From a checkpoint: the FP32 graph, calibration ranges (cached, :mod:`srpose.export.int8`), the quantisable layer
groups and their MACs (:mod:`srpose.eval._int8_groups`), each group's sensitivity and the search for the FP16 set
with the fewest FP16 MACs whose AP drop against FP32 is within ``max_ap_drop`` (rule:
:mod:`srpose.eval._int8_rule`). Every graph measured is the real mixed INT8/FP16 graph
(:func:`srpose.export._int8_mixed.write_mixed_model`, what TensorRT builds), run in ONNX Runtime on held-out crops
(float16 rounding emulated on the CPU). Results are cached by FP32 graph, calibration, validation data, groups and
settings (:mod:`srpose.eval._int8_eval`), so a rerun with another budget runs no sensitivity inference.

Outputs in ``out_dir``: ``<name>.fp32.onnx``, ``<name>.mixed.onnx`` (its card: precision ``mixed``,
``precision_details["mixed"]["int8_exclude"]`` for ``srpose export --int8-exclude``), ``<name>.quantize.json`` /
``.md`` and ``<name>.sensitivity.png`` / ``<name>.pareto.png``; all written atomically. Top-down models only (the
INT8 export is top-down only). "AP" is the held-out set's protocol metric on the 0..1 scale: keypoint AP (COCO,
CrowdPose), PCKh@0.5 for MPII models (the report's ``metric``, ``PCKh``; ``max_ap_drop`` then budgets PCKh).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, DEFAULT_KEEP_FP32_OPS
from srpose.export.int8 import CALIB_METHODS, DEFAULT_OP_TYPES

from ._int8_groups import GROUPINGS

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["QuantizeOptions", "QuantizeReport", "search_int8"]


@dataclass
class QuantizeOptions:
    """What to search: calibration crops (``calib_*``), held-out crops (``val_ann`` / ``val_images``, GT boxes;
    ``val_num`` images of them, evenly spread, None: all; the output error against FP32 on the first ``error_items``),
    the AP budget ``max_ap_drop`` (AP on the 0..1 scale: 0.005 = half an AP point; PCKh@0.5 for MPII), the grouping
    (``block`` / ``node``), the FP16 policy of the non-INT8 groups (as ``srpose export``'s), evaluation settings
    (``flip`` None: the config's), the search's bounds (seconds, graphs run), the cache folder (default
    ``out_dir/quantize_cache``) and the export's name / batch profile / input size."""

    out_dir: str | Path
    calib_ann: str
    calib_images: str
    val_ann: str
    val_images: str
    max_ap_drop: float = 0.005
    val_num: int | None = None
    calib_num: int = 512
    calib_method: str = "entropy"
    calib_batch: int = 8
    group_by: str = "block"
    op_types: Sequence[str] = DEFAULT_OP_TYPES
    keep_fp32_ops: Sequence[str] = DEFAULT_KEEP_FP32_OPS
    keep_fp32_nodes: Sequence[str] = DEFAULT_KEEP_FP32_NODES
    flip: bool | None = None
    post: bool = True
    batch_size: int = 32
    threads: int | None = None
    error_items: int = 128
    time_limit_s: float | None = 3600.0
    max_evals: int | None = None
    cache_dir: str | Path | None = None
    name: str | None = None
    batch: Sequence[int] | None = None
    input_size: tuple[int, int] | None = None
    progress: bool = True

    def check(self) -> None:
        """Refuse bad options before any work."""
        from srpose._io import check_out_dir
        from srpose.export.calibration import check_image_folder

        if not self.max_ap_drop >= 0:
            raise ValueError(f"--max-ap-drop must be >= 0 (AP on the 0..1 scale, 0.01 = one AP point), got "
                             f"{self.max_ap_drop}")
        if self.max_ap_drop > 0.5:
            raise ValueError(f"--max-ap-drop {self.max_ap_drop} is on the 0..1 AP scale (0.01 = one AP point); "
                             "pass e.g. 0.005")
        for opt, path in (("--calib-ann", self.calib_ann), ("--val-ann", self.val_ann)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{opt} {path} does not exist")
        check_image_folder(self.calib_images)
        check_image_folder(self.val_images)
        if self.calib_method not in CALIB_METHODS:
            raise ValueError(f"--calib-method {self.calib_method!r}: use one of entropy, max, percentile")
        if self.group_by not in GROUPINGS:
            raise ValueError(f"--group-by {self.group_by!r}: use one of {', '.join(GROUPINGS)}")
        for opt, val in (("--val-num", self.val_num), ("--max-evals", self.max_evals),
                         ("--error-persons", self.error_items)):
            if val is not None and val < 1:
                raise ValueError(f"{opt} must be >= 1, got {val}")
        if self.calib_num < 1 or self.calib_batch < 1 or self.batch_size < 1:
            raise ValueError("--calib-num, --calib-batch and --batch-size must be >= 1")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ValueError(f"--time-limit must be > 0 seconds, got {self.time_limit_s}")
        check_out_dir(self.out_dir, option="--out-dir")


@dataclass
class QuantizeReport:
    """What :func:`search_int8` found: the reference graphs (``fp32``, ``fp16``, ``int8``, ``int8_export``,
    ``chosen``: metrics, keypoint error, INT8 MAC share), every group with its sensitivity, the
    chosen FP16 set, the search path, every measured set, the evaluation counts and the files written.
    ``metric`` names the figure budgeted (``AP``; ``PCKh`` for MPII): the key of the graphs' ``metrics`` and of the
    path and measured rows."""

    model: str
    name: str
    dataset: str
    val_persons: int
    calib_crops: int
    flip: bool
    group_by: str
    max_ap_drop: float
    met: bool
    macs_total: int
    graphs: dict[str, dict[str, Any]]
    groups: list[dict[str, Any]]
    chosen: dict[str, Any]
    path: list[dict[str, Any]] = field(default_factory=list)
    measured: list[dict[str, Any]] = field(default_factory=list)
    evaluations: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    metric: str = "AP"

    @property
    def int8_exclude_args(self) -> str:
        """``--int8-exclude ...`` giving the chosen set back to ``srpose export --precision int8``."""
        return "--int8-exclude " + " ".join(shlex.quote(n) for n in self.chosen["int8_exclude"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "int8_exclude_args": self.int8_exclude_args}

    def markdown(self) -> str:
        from ._int8_report import quantize_markdown

        return quantize_markdown(self)


# ---------------------------------------------------------------------------------------------- the library call
def search_int8(config: Any, options: QuantizeOptions, *, checkpoint: str | None = None,
                model: "nn.Module | None" = None) -> QuantizeReport:
    """Search the FP16 set of the model of ``config`` (preset, config file, PoseConfig or task) with the weights of
    ``checkpoint`` (or an already built ``model``), write the mixed graph and the report files, return the report."""
    from srpose.export.onnx_export import as_task

    t0 = time.perf_counter()
    options.check()
    task = as_task(config)
    if task.kind != "top-down":
        raise ValueError(f"{task.cfg.name} is a {task.kind} model: INT8 export (and so the INT8 search) is "
                         "top-down only, as calibration of bottom-up models needs whole images")
    if options.input_size is not None:
        task = as_task(task.cfg.with_input_size(*options.input_size))
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    setup = _prepare(task, options, checkpoint, model)
    report = _run(setup, options)
    report.seconds = round(time.perf_counter() - t0, 1)
    _write(report, setup, options)
    return report


@dataclass
class _Setup:
    """Everything the search needs, prepared (and checked) before any graph is measured."""

    task: Any
    name: str
    out: Path
    fp32: Path
    calib: Any
    groups: list[Any]
    dataset: Any
    fixed_nodes: list[str]
    node_macs: dict[str, int]
    key: str
    cache_file: Path
    flip: bool


def _prepare(task: Any, opts: QuantizeOptions, checkpoint: str | None, model: Any) -> _Setup:
    import onnx

    from srpose.checkpoint import build_with_weights
    from srpose.export.calibration import CalibrationReader
    from srpose.export.int8 import DEFAULT_EXCLUDE, calibration_ranges, resolve_excluded_nodes
    from srpose.export.onnx_export import export_onnx, model_sha256

    from ._int8_eval import CACHE_FORMAT
    from ._int8_groups import layer_groups, node_macs

    name = opts.name or task.cfg.name
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"--name {name!r} must be a plain file name without folders")
    out = Path(opts.out_dir)
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else out / "quantize_cache"
    out.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    val_ann = _validation_annotations(Path(opts.val_ann), opts.val_num, cache_dir)
    dataset = task.dataset(str(val_ann), str(opts.val_images), gt_bbox=True)
    val_key = CalibrationReader(val_ann, opts.val_images, task.cfg, num=None).data_key()
    reader = CalibrationReader(opts.calib_ann, opts.calib_images, task.cfg, num=opts.calib_num,
                               batch_size=opts.calib_batch)
    sha = None
    if model is None:
        model, sha = build_with_weights(task.cfg, checkpoint, command="srpose quantize")
    fp32 = out / f"{name}.fp32.onnx"
    export_onnx(model, task, fp32, batch=opts.batch, metadata=dict(checkpoint_sha256=sha))
    calib = calibration_ranges(fp32, reader, method=opts.calib_method, op_types=opts.op_types,
                               cache_dir=cache_dir, data_key=reader.data_key())
    proto = onnx.load(str(fp32))
    groups = layer_groups(proto, calib.op_types, by=opts.group_by)
    quantisable = {n for g in groups for n in g.nodes}
    fixed = [n for n in resolve_excluded_nodes(proto, DEFAULT_EXCLUDE, calib.op_types) if n in quantisable]
    flip = bool(task.cfg.test_cfg.get("flip_test", True) if opts.flip is None else opts.flip)
    blob = json.dumps(dict(format=CACHE_FORMAT, fp32=model_sha256(fp32), calibration=calib.key, validation=val_key,
                           groups=[[g.name, g.nodes] for g in groups], flip=flip, post=opts.post,
                           error_items=opts.error_items,
                           keep_fp32_ops=list(opts.keep_fp32_ops), keep_fp32_nodes=list(opts.keep_fp32_nodes),
                           op_types=list(calib.op_types), fixed=fixed), sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()
    return _Setup(task=task, name=name, out=out, fp32=fp32, calib=calib, groups=groups, dataset=dataset,
                  fixed_nodes=fixed, node_macs=node_macs(proto), key=key,
                  cache_file=cache_dir / f"{name}.int8search.{key[:16]}.json", flip=flip)


def _validation_annotations(ann: Path, num: int | None, cache_dir: Path) -> Path:
    """``ann`` itself, or (``num`` images, evenly spread by image id) a subset annotation file in ``cache_dir``."""
    from srpose._io import atomic_write_json

    if num is None:
        return ann
    raw = ann.read_bytes()
    data = json.loads(raw)
    if isinstance(data, list):  # MPII: a list of persons, images named by file
        names = sorted({p["image"] for p in data})
        step = (len(names) - 1) / max(num - 1, 1)
        keep = {names[round(i * step)] for i in range(num)} if 1 < num < len(names) else set(names[:num])
        path = cache_dir / f"{ann.stem}.val{num}.{hashlib.sha256(raw).hexdigest()[:12]}.json"
        if not path.is_file():
            atomic_write_json(path, [p for p in data if p["image"] in keep])
        return path
    images = sorted(data.get("images", []), key=lambda im: im["id"])
    if num >= len(images):
        return ann
    step = (len(images) - 1) / max(num - 1, 1)
    keep = [images[round(i * step)] for i in range(num)] if num > 1 else images[:1]
    ids = {im["id"] for im in keep}
    path = cache_dir / f"{ann.stem}.val{num}.{hashlib.sha256(raw).hexdigest()[:12]}.json"
    if not path.is_file():
        atomic_write_json(path, dict(data, images=keep,
                                     annotations=[a for a in data.get("annotations", []) if a["image_id"] in ids]))
    return path


def _run(s: _Setup, opts: QuantizeOptions) -> QuantizeReport:
    """Reference graphs, sensitivity, search; the report without its files."""
    from tqdm import tqdm

    from srpose.export._int8_mixed import write_mixed_model

    from ._int8_eval import Budget, SetEvaluator
    from ._int8_rule import measure_sensitivity, search_fp16_set

    n = len(s.groups)
    deadline = None if opts.time_limit_s is None else time.perf_counter() + opts.time_limit_s
    bar = tqdm(total=4 + 2 * n, desc=f"int8 search {s.name}", unit="graph", disable=not opts.progress)

    def on_result(tag: str, cached: bool) -> None:
        if bar.n >= bar.total:
            bar.total = bar.n + 1
        bar.set_postfix_str("cached" if cached else f"ran {tag[:20] or 'all-INT8'}", refresh=False)
        bar.update(1)

    def build(nodes: list[str], path: Path) -> Any:
        return write_mixed_model(s.fp32, path, s.calib, nodes, keep_fp32_ops=opts.keep_fp32_ops,
                                 keep_fp32_nodes=opts.keep_fp32_nodes)

    ev = SetEvaluator(task=s.task, dataset=s.dataset, fp32_path=s.fp32, groups=s.groups, build=build,
                      cache_file=s.cache_file, key=s.key, flip=s.flip, post=opts.post, batch_size=opts.batch_size,
                      threads=opts.threads, error_items=opts.error_items,
                      budget=Budget(deadline=deadline, max_runs=opts.max_evals), on_result=on_result)
    phases: dict[str, int] = {}
    try:
        fp32 = ev.fp32()
        every = set(range(n))
        refs = dict(fp32=fp32, fp16=ev.fp16_set(every, mandatory=True), int8=ev.fp16_set((), mandatory=True))
        # the INT8 export's default exclusions (none quantisable in the presets: then it is the all-INT8 graph)
        refs["int8_export"] = ev.graph("int8_export", lambda p: build(s.fixed_nodes, p),
                                       mandatory=True) if s.fixed_nodes else refs["int8"]
        phases["reference"] = ev.runs
        ap32 = fp32["metrics"][ev.metric]
        sens, stopped = measure_sensitivity(ev, ap32, refs["int8"], refs["fp16"])
        phases["sensitivity"] = ev.runs - phases["reference"]
        found = search_fp16_set(ev, sens, ap32, opts.max_ap_drop)
        phases["search"] = ev.runs - phases["reference"] - phases["sensitivity"]
    finally:
        bar.close()
    refs["chosen"] = found.result
    return _report(s, opts, ev, refs, sens, found, stopped or found.stopped, phases)


def _proto(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _report(s: _Setup, opts: QuantizeOptions, ev: Any, refs: dict[str, Any], sens: list[Any], found: Any,
            stopped: str | None, phases: dict[str, int]) -> QuantizeReport:
    from srpose.export._int8_mixed import int8_exclude_for

    from ._int8_rule import fp16_macs

    groups, total = s.groups, max(sum(s.node_macs.values()), 1)
    quantisable = sum(g.macs for g in groups)
    fixed_macs = sum(s.node_macs.get(nd, 0) for nd in s.fixed_nodes)

    def share(fp16: Sequence[int]) -> float:
        return (quantisable - fp16_macs(groups, fp16)) / total

    key = ev.metric
    ap32 = refs["fp32"]["metrics"][key]
    fixed = f"fixed list ({len(s.fixed_nodes)} node{'s' if len(s.fixed_nodes) != 1 else ''})"
    counts = dict(fp32=(0.0, "-"), fp16=(0.0, f"every group ({len(groups)})"), int8=(quantisable / total, "none"),
                  int8_export=((quantisable - fixed_macs) / total, fixed + " in FP16"),
                  chosen=(share(found.chosen), f"{len(found.chosen)} of {len(groups)} groups"))
    graphs = {k: dict(metrics=r["metrics"], kpt_px=r["kpt_px"], out_rel_l2=r["out_rel_l2"],
                      int8_mac_share=counts[k][0], fp16=counts[k][1]) for k, r in refs.items()}
    chosen_nodes = [nd for i in sorted(found.chosen) for nd in groups[i].nodes]
    chosen = dict(groups=[groups[i].name for i in sorted(found.chosen)], indices=sorted(found.chosen),
                  fp16_nodes=chosen_nodes, int8_exclude=int8_exclude_for(_proto(s.fp32), chosen_nodes),
                  fp16_mac_share=fp16_macs(groups, found.chosen) / total, int8_mac_share=share(found.chosen),
                  metrics=found.result["metrics"], ap_drop=ap32 - found.result["metrics"][key],
                  kpt_px=found.result["kpt_px"], out_rel_l2=found.result["out_rel_l2"])
    rows = [dict(name=g.name, nodes=g.nodes, op_types=g.op_types, macs=g.macs, mac_share=g.macs / total,
                 sensitivity=sens[i].to_dict(), forced=i in found.forced, fp16=i in found.chosen)
            for i, g in enumerate(groups)]
    path = [dict(kind=p["kind"], fp16=[groups[i].name for i in p["fp16"]], int8_mac_share=share(p["fp16"]),
                 **{key: p["result"]["metrics"][key]}, ap_drop=ap32 - p["result"]["metrics"][key],
                 kpt_px=p["result"]["kpt_px"], out_rel_l2=p["result"]["out_rel_l2"]) for p in found.path]
    measured = [dict(fp16=f, int8_mac_share=share(f), **{key: r["metrics"][key]}, kpt_px=r["kpt_px"],
                     out_rel_l2=r["out_rel_l2"])
                for f, r in _measured_sets(ev)]
    return QuantizeReport(
        model=s.task.cfg.name, name=s.name, dataset=s.dataset.dataset_name, val_persons=len(s.dataset),
        calib_crops=s.calib.crops, flip=s.flip, group_by=opts.group_by, max_ap_drop=float(opts.max_ap_drop),
        met=found.met, macs_total=total, graphs=graphs, groups=rows, chosen=chosen, path=path,
        measured=measured, stopped=stopped, metric=key,
        evaluations=dict(run=ev.runs, cached=ev.hits, run_by_phase=phases, cache_file=str(s.cache_file)))


def _measured_sets(ev: Any) -> list[tuple[list[int], dict[str, Any]]]:
    out = []
    for tag, r in ev.results.items():
        parts = [p for p in tag.split(",") if p]
        if tag != "fp32" and all(p.isdigit() for p in parts):
            out.append(([int(p) for p in parts], r))
    return out


def _write(report: QuantizeReport, s: _Setup, opts: QuantizeOptions) -> None:
    """The mixed graph of the chosen set, then the JSON, Markdown and PNGs (each atomically)."""
    from srpose._io import atomic_write_json, atomic_write_text
    from srpose.export._int8_mixed import write_mixed_model

    from ._int8_report import plot_pareto, plot_sensitivity

    files = dict(fp32=s.out / f"{s.name}.fp32.onnx", mixed=s.out / f"{s.name}.mixed.onnx",
                 json=s.out / f"{s.name}.quantize.json", markdown=s.out / f"{s.name}.quantize.md",
                 sensitivity_png=s.out / f"{s.name}.sensitivity.png", pareto_png=s.out / f"{s.name}.pareto.png")
    c = report.chosen
    write_mixed_model(s.fp32, files["mixed"], s.calib, c["fp16_nodes"], keep_fp32_ops=opts.keep_fp32_ops,
                      keep_fp32_nodes=opts.keep_fp32_nodes,
                      details=dict(search=dict(max_ap_drop=report.max_ap_drop, met=report.met, fp16_groups=c["groups"],
                                               ap_fp32=report.graphs["fp32"]["metrics"][report.metric],
                                               ap=c["metrics"][report.metric], metric=report.metric,
                                               int8_mac_share=round(c["int8_mac_share"], 6), key=s.key)))
    report.files = {k: str(v) for k, v in files.items()}
    plot_sensitivity(report, files["sensitivity_png"])
    plot_pareto(report, files["pareto_png"])
    atomic_write_text(files["markdown"], report.markdown())
    atomic_write_json(files["json"], report.to_dict())
