"""Checkpoint to report in one call, for any task: ``PipelineOptions -> run_pipeline(...) -> PipelineReport``.

Export every precision the task supports, and for top-down models the image-to-keypoints graph of each (crop,
flip test and decoding inside; bottom-up: the in-graph decode graph), build TensorRT engines where TensorRT and a
GPU exist (top-down: of the image-to-keypoints graphs, the fast ones on a GPU; otherwise say so and run the same
graphs in ONNX Runtime), compare every model with the PyTorch reference, bench them, and write one Markdown report
with tables and PNG plots plus ``summary.json``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from srpose.tasks import PoseTask

from .report import PhaseTimer, Target, parity_markdown, plot_parity, targets_markdown

__all__ = ["PipelineOptions", "PipelineReport", "run_pipeline", "tensorrt_status", "say"]


@dataclass
class PipelineOptions:
    """Evaluation data (``ann`` / ``images``: GT boxes top-down, whole images bottom-up) and calibration data
    (default: the evaluation data); ``precisions`` (None: every one the task exports); ``error_items``: outputs
    compared with PyTorch on the first N items (AP covers all); ``out``: the report folder (default
    ``pipeline/<name>``); ``image_input``: also export the image-to-keypoints graph of each precision (top-down)
    and build the engines from those; ``decode``: the in-graph decode graph (bottom-up, or top-down without
    ``image_input``, whose image graphs decode inside)."""

    ann: str
    images: str
    out: str | None = None
    calib_ann: str | None = None
    calib_images: str | None = None
    calib_num: int = 256
    error_items: int = 512
    precisions: Sequence[str] | None = None
    decode: bool = True
    image_input: bool = True
    bench_batches: Sequence[int] = (1, 8)
    bench_s: float = 1.5
    threads: int | None = None
    max_ap_drop: float | None = None

    def check(self) -> None:
        """Refuse bad options before any work (the demo checks before training)."""
        if not (self.ann and self.images):
            raise ValueError("the pipeline evaluates on real data: pass --ann ANN.json --images DIR")
        if self.error_items < 1:
            raise ValueError(f"--error-persons must be >= 1, got {self.error_items}")
        if self.calib_num < 1 or any(b < 1 for b in self.bench_batches) or self.bench_s <= 0:
            raise ValueError("--calib-num and --bench-batch sizes must be >= 1 and --bench-s > 0")
        if self.max_ap_drop is not None and not 0 <= self.max_ap_drop < float("inf"):
            raise ValueError(f"--max-ap-drop must be >= 0 (AP points on the 0..1 scale, e.g. 0.005), got "
                             f"{self.max_ap_drop}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.out is not None:
            from srpose._io import check_out_dir

            check_out_dir(self.out, option="--out")


@dataclass
class PipelineReport:
    """What :func:`run_pipeline` made: the graphs, engines (or why none), the parity report, bench rows, the
    checked targets and the phase times; ``report_md`` / ``summary_json`` are its files."""

    out: str
    files: list[str]
    engines: list[str]
    tensorrt_skipped: str | None
    parity: Any
    bench: list[dict[str, Any]]
    targets: list[Target] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report_md: str = ""
    summary_json: str = ""

    @property
    def failed(self) -> list[str]:
        return self.parity.failed


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def tensorrt_status() -> str | None:
    """None when engines can be built here, otherwise the reason they cannot."""
    from srpose.engines.tensorrt import tensorrt_status as status

    return status()


def run_pipeline(config: Any, checkpoint: str | Path, options: PipelineOptions, *, timer: PhaseTimer | None = None,
                 extra_sections: Sequence[str] = (), title: str | None = None,
                 targets_fn: Callable[[Any, float], list[Target]] | None = None) -> PipelineReport:
    """Export, build (where possible), parity, bench, report; ``timer`` carries phases timed before (the demo's
    data and training); ``targets_fn(parity, seconds)`` adds a checked-targets section."""
    import torch

    from srpose._io import atomic_write_json, check_out_dir
    from srpose.export.onnx_export import as_task

    options.check()
    if options.threads:
        torch.set_num_threads(options.threads)
    timer = timer or PhaseTimer()
    task = as_task(config)
    out = Path(options.out or Path("pipeline") / task.cfg.name)
    check_out_dir(out, option="--out")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f"{task.cfg.name}.json"  # the exact config next to the outputs: every step can rebuild it
    atomic_write_json(cfg_path, task.cfg.to_dict())
    with timer.phase("export"):
        files, image_files = _export(task, checkpoint, options, out)
    engines, reason = _build_engines(image_files or files, out, timer)
    files = files + image_files
    say("parity against PyTorch")
    with timer.phase("parity"):
        parity, model = _parity(task, checkpoint, options, [*files, *engines], out)
    say("bench")
    with timer.phase("bench"):
        rows = _bench(task, model, files, options, out)
    report = PipelineReport(out=str(out), files=[str(f) for f in files], engines=[str(e) for e in engines],
                            tensorrt_skipped=reason, parity=parity, bench=rows)
    report.targets = targets_fn(parity, timer.total) if targets_fn else []
    _write(report, task, checkpoint, options, timer, extra_sections, title)
    return report


def _export(task: PoseTask, checkpoint: str | Path, opts: PipelineOptions, out: Path) -> tuple[list[Path], list[Path]]:
    """(crop graphs, plus the decode graph; image-to-keypoints graphs, top-down)."""
    from srpose.export import ExportOptions, Int8Options, export_model

    precisions = list(opts.precisions or task.precisions)
    onnx_dir = out / "onnx"
    say(f"export {', '.join(precisions)} to {onnx_dir}")
    batch = (1, max(opts.bench_batches), max(32, max(opts.bench_batches))) if task.kind == "top-down" else None
    int8 = Int8Options(calib_ann=opts.calib_ann or opts.ann, calib_images=opts.calib_images or opts.images,
                       calib_num=opts.calib_num) if "int8" in precisions else Int8Options()
    export_model(task, ExportOptions(out_dir=onnx_dir, precisions=precisions, batch=batch, int8=int8),
                 checkpoint=str(checkpoint))
    files = [onnx_dir / f"{task.cfg.name}.{p}.onnx" for p in precisions]
    images: list[Path] = []
    if opts.image_input and task.kind == "top-down":
        name = f"{task.cfg.name}-image"
        say(f"export the image-to-keypoints graphs {name}.*.onnx (crop, flip test and decoding inside)")
        export_model(task, ExportOptions(out_dir=onnx_dir, name=name, precisions=precisions, int8=int8,
                                         image_input=True), checkpoint=str(checkpoint))
        images = [onnx_dir / f"{name}.{p}.onnx" for p in precisions]
    elif opts.decode:
        # the flip test goes into the decode graph when the reference flips, so both are scored alike
        flip = bool(task.cfg.test_cfg.get("flip_test", True))
        name = f"{task.cfg.name}-decode"
        export_model(task, ExportOptions(out_dir=onnx_dir, name=name, batch=batch, decode=True, flip=flip),
                     checkpoint=str(checkpoint))
        files.append(onnx_dir / f"{name}.fp32.onnx")
    return files, images


def _build_engines(files: Sequence[Path], out: Path, timer: PhaseTimer) -> tuple[list[Path], str | None]:
    reason = tensorrt_status()
    if reason is not None:
        say(f"TensorRT engines skipped: {reason}; the same graphs run in ONNX Runtime below")
        return [], reason
    from srpose.engines.tensorrt import BuildOptions, build_engine

    say("build TensorRT engines")
    engines = []
    with timer.phase("TensorRT build"):
        for f in files:
            eng = out / "engines" / (f.stem + ".engine")
            eng.parent.mkdir(parents=True, exist_ok=True)
            build_engine(f, eng, BuildOptions())
            engines.append(eng)
    return engines, None


def _parity(task: PoseTask, checkpoint: str | Path, opts: PipelineOptions, models: Sequence[Path],
            out: Path) -> tuple[Any, Any]:
    from srpose.checkpoint import build_with_weights

    from .parity import ParityOptions, run_parity
    from .visualize import render_results

    model, sha = build_with_weights(task.cfg, checkpoint, command="srpose pipeline")
    dataset = task.gt_dataset(opts.ann, opts.images)
    results_file = out / "results.json"  # the PyTorch keypoints, drawn below
    report = run_parity(task, model, models, dataset, ParityOptions(
        threads=opts.threads, workers=0, progress=True, checkpoint_sha256=sha, reference_results=results_file,
        error_items=opts.error_items, max_ap_drop=opts.max_ap_drop,
        device="cuda" if any(Path(m).suffix == ".engine" for m in models) else "cpu"))
    from srpose._io import atomic_write_json

    atomic_write_json(out / "parity.json", report.to_dict())
    plot_parity(report, out / "parity.png")
    render_results(results_file, opts.ann, opts.images, out / "keypoints.png")
    return report, model


def _bench(task: PoseTask, model: Any, files: Sequence[Path], opts: PipelineOptions, out: Path) -> list[dict]:
    from srpose._io import atomic_write_json
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.engines.profiler import format_table, plot_profile

    from .backends import TorchBackend
    from .bench import BenchOptions, bench

    rows: list[dict[str, Any]] = []
    batches = list(opts.bench_batches) if task.kind == "top-down" else [1]
    bench_opts = BenchOptions(batches=batches, warmup_s=0.3, duration_s=opts.bench_s, progress=False)
    for be in [TorchBackend(model)] + [OnnxRuntimeBackend(f, threads=opts.threads) for f in files]:
        try:
            for r in bench(be, task, bench_opts):
                r["backend"] = "pytorch" if isinstance(be, TorchBackend) else Path(be.path).name
                rows.append(r)
        finally:
            be.close()
    atomic_write_json(out / "bench.json", rows)
    plot_profile(rows, out / "bench.png")
    print(format_table(rows))
    return rows


def _write(report: PipelineReport, task: PoseTask, checkpoint: str | Path, opts: PipelineOptions,
           timer: PhaseTimer, extra_sections: Sequence[str], title: str | None) -> None:
    import torch

    from srpose._io import atomic_write_json, atomic_write_text
    from srpose.engines.profiler import format_table

    out, parity, seconds = Path(report.out), report.parity, timer.total
    tables = parity_markdown(parity)
    lines = [f"# {title or 'SRPose-TRT pipeline report'}: `{task.cfg.name}`", "",
             f"Checkpoint `{checkpoint}`, evaluation on `{opts.ann}` ({parity.items} {parity.unit}s"
             f"{', GT boxes' if task.kind == 'top-down' else ''}), {time.strftime('%Y-%m-%d %H:%M')}, torch "
             f"{torch.__version__}, {os.cpu_count()} CPU cores.", ""]
    if report.targets:
        lines += ["## Targets", "", *targets_markdown(report.targets), ""]
    engines = [Path(e).name for e in report.engines]
    lines += [*extra_sections,
              "## Parity with PyTorch", "", tables, "![AP and throughput per model](parity.png)", "",
              "## Throughput (CPU unless a GPU is shown)", "", "```", format_table(report.bench), "```", "",
              "![latency and throughput vs batch size](bench.png)", "",
              "## Predicted keypoints (PyTorch reference)", "", "![keypoints](keypoints.png)", "",
              "## TensorRT", "",
              (f"Engines built: {', '.join(engines)}." if engines else
               f"No engines built: {report.tensorrt_skipped}. The ONNX graphs above are exactly what `srpose build` "
               "gives TensorRT (precision lives in the graph), so their accuracy carries over."), "",
              "## Time", "", *timer.markdown(), "",
              "## Files", "", f"- ONNX graphs and export report: `{out / 'onnx'}`",
              "- `parity.json`, `bench.json`, `results.json`, `summary.json`", ""]
    report.seconds = dict(timer.seconds, total=seconds)
    summary = dict(model=task.cfg.name, task=task.kind, checkpoint=str(checkpoint), ann=str(opts.ann),
                   images=str(opts.images), files=report.files, engines=report.engines,
                   tensorrt_skipped=report.tensorrt_skipped,
                   metrics=dict(reference=parity.reference["metrics"], **{m["name"]: m["metrics"]
                                                                          for m in parity.models}),
                   seconds=report.seconds, cpu_count=os.cpu_count(), targets=[vars(t) for t in report.targets])
    report.summary_json = str(atomic_write_json(out / "summary.json", summary))
    report.report_md = str(atomic_write_text(out / "report.md", "\n".join(lines)))
    say(f"report written to {report.report_md} ({seconds:.0f} s)")
    print(tables)
    if report.targets:
        print("\n".join(targets_markdown(report.targets)))
        missed = [t.name for t in report.targets if not t.met]
        print(f"\ntargets missed: {'; '.join(missed)}" if missed else "\nall targets met", flush=True)
