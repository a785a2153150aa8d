"""``srpose demo`` (and ``srpose pipeline``): checkpoint to report in one command.

demo: generate a small data set (or take real COCO-format data), train a small preset, then run the pipeline.
pipeline: export every precision (heatmap graphs and the in-graph decode graph), build TensorRT engines where
TensorRT and a GPU exist (otherwise say so and use ONNX Runtime), evaluate every model against the PyTorch
reference, bench them, and write one Markdown report with tables and PNG plots.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = ["add_demo_arguments", "run_demo", "add_pipeline_arguments", "run_pipeline", "DEMO_PRESET", "PhaseTimer",
           "Target", "demo_targets", "targets_markdown"]

#: The demo's model: small enough to learn the generated data in a few CPU minutes (see docs/benchmarks.md).
DEMO_PRESET = "res18w16_srpose_coco_96x64"
#: What the demo must show (issue #6): a model that has learnt something, and what deployment costs in AP. AP is on
#: the 0..1 scale; the precision budgets are in AP points (1.0 AP = 0.01).
DEMO_MIN_AP = 0.70
DEMO_MAX_AP_DROP = {"fp16": 0.001, "int8": 0.010}
DEMO_TIME_BUDGET_S = 600.0


class PhaseTimer:
    """Wall-clock seconds per named phase, in the order the phases first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    def markdown(self) -> list[str]:
        total = self.total
        lines = ["| phase | seconds | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.1f} | {100 * v / max(total, 1e-9):.0f}% |" for k, v in self.seconds.items()]
        return lines + [f"| **total** | **{total:.1f}** | 100% |"]


@dataclass
class Target:
    """One checked target of the demo: what, the measured value, the bound, and whether it is met."""

    name: str
    value: str
    bound: str
    met: bool


def demo_targets(train_ap: float | None, report: Mapping[str, Any], seconds: float | None = None) -> list[Target]:
    """The demo's targets, checked against the trained AP, the parity report and (optionally) the wall time."""
    key = report["primary_metric"]
    out = [Target(f"trained model {key}", "n/a" if train_ap is None else f"{train_ap:.4f}", f">= {DEMO_MIN_AP}",
                  train_ap is not None and train_ap >= DEMO_MIN_AP)]
    for m in report["models"]:
        bound = DEMO_MAX_AP_DROP.get(m["precision"])
        if bound is None:
            continue
        drop = -m["delta"][key]
        out.append(Target(f"{m['name']} {key} loss vs PyTorch", f"{drop:+.4f}", f"<= {bound:.3f}",
                          drop <= bound + 1e-12))
    if seconds is not None:
        cpus = os.cpu_count()
        out.append(Target(f"wall time ({cpus} CPU cores)", f"{seconds:.0f} s", f"< {DEMO_TIME_BUDGET_S:.0f} s",
                          seconds < DEMO_TIME_BUDGET_S))
    return out


def targets_markdown(targets: Sequence[Target]) -> list[str]:
    """The targets as Markdown table lines."""
    lines = ["| target | measured | bound | met |", "|---|---:|---:|:---:|"]
    return lines + [f"| {t.name} | {t.value} | {t.bound} | {'yes' if t.met else '**no**'} |" for t in targets]


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def tensorrt_status() -> str | None:
    """None when engines can be built here, otherwise the reason they cannot."""
    from srpose.engines import _trt_compat

    if _trt_compat.trt is None:
        return f"TensorRT is not installed ({_trt_compat.TRT_IMPORT_ERROR})"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed"
    return None


def _plot_loss(log_file: Path, out_png: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srpose._io import atomic_path

    recs = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    pts = [(r["iter"], r["loss"]) for r in recs if "loss" in r and "iter" in r]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_png


# --------------------------------------------------------------------------------------------- pipeline
def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose pipeline``."""
    p.add_argument("model", metavar="NAME_OR_CONFIG", help="preset, official .py config or project .json config")
    p.add_argument("--checkpoint", required=True, help="checkpoint to deploy")
    _pipeline_options(p)


def _pipeline_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (evaluation and INT8 calibration)")
    g.add_argument("--ann", required=False, help="COCO-format annotations of the evaluation set")
    g.add_argument("--images", required=False, help="image folder of the evaluation set")
    g.add_argument("--calib-ann", default=None, help="calibration annotations (default: --ann)")
    g.add_argument("--calib-images", default=None, help="calibration images (default: --images)")
    g.add_argument("--calib-num", type=int, default=256, help="calibration crops (default 256)")
    g.add_argument("--error-persons", type=int, default=512, metavar="N",
                   help="compare outputs with PyTorch on the first N persons (default 512); AP covers all")
    o = p.add_argument_group("pipeline")
    o.add_argument("--out", default=None, help="output folder (default: demo/ for the demo, pipeline/<name>/ otherwise)")
    o.add_argument("--precision", nargs="+", default=["fp32", "fp16", "int8"], choices=("fp32", "fp16", "int8"))
    o.add_argument("--no-decode", dest="decode", action="store_false", help="skip the in-graph decode graph")
    o.add_argument("--bench-batch", type=int, nargs="+", default=[1, 8], help="bench batch sizes (default 1 8)")
    o.add_argument("--bench-s", type=float, default=1.5, help="timed seconds per bench batch size (default 1.5)")
    o.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime and torch")
    o.add_argument("--max-ap-drop", type=float, default=None, help="exit 1 when a model loses more AP than this")


def _check_pipeline_options(args: argparse.Namespace) -> None:
    """Refuse bad pipeline options before any work (the demo calls it before training)."""
    if args.error_persons < 1:
        raise ValueError(f"--error-persons must be >= 1, got {args.error_persons}")


def run_pipeline(args: argparse.Namespace, *, extra_sections: Sequence[str] = (), title: str | None = None,
                 timer: PhaseTimer | None = None,
                 targets_fn: Callable[[Mapping[str, Any], float], list[Target]] | None = None) -> int:
    """Export, build (where possible), parity, bench, report. Returns 1 when ``--max-ap-drop`` is exceeded.

    ``timer`` carries phases timed before the pipeline (the demo's data and training); ``targets_fn(report,
    seconds)`` adds a checked-targets section to the report and to ``summary.json``."""
    import torch

    from srpose.engines.profiler import format_table, plot_profile, profile
    from srpose import get_config
    from srpose._io import atomic_write_json, atomic_write_text
    from srpose.checkpoint import build_with_weights
    from srpose.cli import main as cli_main
    from srpose.data import DATASET_CLASSES

    from .backends import TorchBackend
    from .parity import models_over_drop, plot_parity, run_parity_check, to_markdown
    from .visualize import render_results

    if not (args.ann and args.images):
        raise ValueError("the pipeline evaluates on real crops: pass --ann ANN.json --images DIR")
    _check_pipeline_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = timer or PhaseTimer()
    cfg = get_config(args.model)
    out = Path(args.out or Path("pipeline") / cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    onnx_dir = out / "onnx"

    # keep the exact config next to the outputs so every later step (and the user) can rebuild the model
    cfg_path = out / f"{cfg.name}.json"
    atomic_write_json(cfg_path, cfg.to_dict())
    calib_ann, calib_images = args.calib_ann or args.ann, args.calib_images or args.images

    _say(f"export {', '.join(args.precision)} to {onnx_dir}")
    common = [str(cfg_path), "--checkpoint", str(args.checkpoint), "--out-dir", str(onnx_dir),
              "--calib-ann", str(calib_ann), "--calib-images", str(calib_images), "--calib-num", str(args.calib_num),
              "--batch", f"1,{max(args.bench_batch)},{max(32, max(args.bench_batch))}"]
    with timer.phase("export"):
        if cli_main(["export", *common, "--precision", *args.precision]) != 0:
            raise RuntimeError("export failed")
        files = [onnx_dir / f"{cfg.name}.{p}.onnx" for p in args.precision]
        if args.decode:
            # the flip test goes into the decode graph when the reference flips, so both are scored alike
            flip = ["--flip"] if cfg.test_cfg.get("flip_test", True) else []
            if cli_main(["export", *common, "--precision", "fp32", "--decode", *flip,
                         "--name", f"{cfg.name}-decode"]) != 0:
                raise RuntimeError("export of the decode graph failed")
            files.append(onnx_dir / f"{cfg.name}-decode.fp32.onnx")

    engines: list[Path] = []
    reason = tensorrt_status()
    if reason is None:
        _say("build TensorRT engines")
        with timer.phase("TensorRT build"):
            for f in files:
                eng = out / "engines" / (f.stem + ".engine")
                eng.parent.mkdir(parents=True, exist_ok=True)
                if cli_main(["build", str(f), "--out", str(eng)]) != 0:
                    raise RuntimeError(f"engine build failed for {f}")
                engines.append(eng)
    else:
        _say(f"TensorRT engines skipped: {reason}; the same graphs run in ONNX Runtime below")

    _say("parity against PyTorch")
    with timer.phase("parity"):
        model, sha = build_with_weights(cfg, args.checkpoint, command="srpose pipeline")
        ds_cls = DATASET_CLASSES[str(cfg.data.get("dataset", "coco"))]
        dataset = ds_cls(str(args.ann), str(args.images), cfg.data, use_gt_bbox=True)
        results_file = out / "results.json"  # the PyTorch keypoints, drawn below
        report = run_parity_check(model, cfg, [*files, *engines], dataset, threads=args.threads, workers=0,
                                  progress=True, checkpoint_sha256=sha,
                                  reference_results=results_file, error_persons=args.error_persons)
        atomic_write_json(out / "parity.json", report)
        plot_parity(report, out / "parity.png")
        render_results(results_file, args.ann, args.images, out / "keypoints.png")

    _say("bench")
    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    rows: list[dict[str, Any]] = []
    with timer.phase("bench"):
        backends: list[Any] = [TorchBackend(model)] + [OnnxRuntimeBackend(f, threads=args.threads) for f in files]
        w, h = cfg.image_size
        for be in backends:
            try:
                for r in profile(be, (3, h, w), args.bench_batch, warmup_s=0.3, duration_s=args.bench_s,
                                 progress=False):
                    r["backend"] = "pytorch" if isinstance(be, TorchBackend) else Path(be.path).name
                    r["precision"] = r.get("precision") or ("fp32" if isinstance(be, TorchBackend) else None)
                    rows.append(r)
            finally:
                be.close()
        atomic_write_json(out / "bench.json", rows)
        plot_profile(rows, out / "bench.png")
    bench_table = format_table(rows)
    print(bench_table)

    seconds = timer.total
    targets = targets_fn(report, seconds) if targets_fn else []
    tables = to_markdown(report)
    lines = [f"# {title or 'SRPose-TRT pipeline report'}: `{cfg.name}`", "",
             f"Checkpoint `{args.checkpoint}`, evaluation on `{args.ann}` ({report['persons']} persons, GT boxes), "
             f"{time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {os.cpu_count()} CPU cores.", ""]
    if targets:
        lines += ["## Targets", "", *targets_markdown(targets), ""]
    lines += [*extra_sections,
              "## Parity with PyTorch", "", tables, "![AP and throughput per model](parity.png)", "",
              "## Throughput (CPU unless a GPU is shown)", "", "```", bench_table, "```", "",
              "![latency and throughput vs batch size](bench.png)", "",
              "## Predicted keypoints (PyTorch reference)", "", "![keypoints](keypoints.png)", "",
              "## TensorRT", "",
              (f"Engines built: {', '.join(e.name for e in engines)}." if engines else
               f"No engines built: {reason}. The ONNX graphs above are exactly what `srpose build` gives TensorRT "
               "(precision lives in the graph), so their accuracy carries over."), "",
              "## Time", "", *timer.markdown(), "",
              "## Files", "", f"- ONNX graphs and export report: `{onnx_dir}`",
              "- `parity.json`, `bench.json`, `results.json`, `summary.json`", ""]
    summary = dict(model=cfg.name, checkpoint=str(args.checkpoint), ann=str(args.ann), images=str(args.images),
                   files=[str(f) for f in files], engines=[str(e) for e in engines], tensorrt_skipped=reason,
                   metrics=dict(reference=report["reference"]["metrics"],
                                **{m["name"]: m["metrics"] for m in report["models"]}),
                   seconds=dict(timer.seconds, total=seconds), cpu_count=os.cpu_count(),
                   targets=[vars(t) for t in targets])
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", "\n".join(lines))
    _say(f"report written to {out / 'report.md'} ({seconds:.0f} s)")
    print(tables)
    if targets:
        print("\n".join(targets_markdown(targets)))
        missed = [t.name for t in targets if not t.met]
        print(f"\ntargets missed: {'; '.join(missed)}" if missed else "\nall targets met", flush=True)
    over = models_over_drop(report, args.max_ap_drop)
    if over:
        print(f"models losing more than {args.max_ap_drop} AP: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------- demo
def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose demo``."""
    from srpose.data.synthetic import image_size_type

    p.add_argument("--data", choices=("synthetic", "coco"), default="synthetic",
                   help="generated people (default) or a real COCO-format set given by --ann/--images")
    p.add_argument("--preset", default=DEMO_PRESET, help=f"model to train (default {DEMO_PRESET})")
    p.add_argument("--train-ann", default=None, help="--data coco: training annotations (default: --ann)")
    p.add_argument("--train-images", default=None, help="--data coco: training images (default: --images)")
    g = p.add_argument_group("generated data (--data synthetic)")
    g.add_argument("--train-size", type=int, default=4000, help="training images (default 4000)")
    g.add_argument("--val-size", type=int, default=2000,
                   help="validation images (default 2000: AP deltas of 0.1 point are noise on a few hundred persons)")
    g.add_argument("--image-size", type=image_size_type, default=(192, 160), metavar="WxH",
                   help="generated image size (default 192x160)")
    g.add_argument("--people", type=int, nargs=2, default=(1, 1), metavar=("MIN", "MAX"),
                   help="people per generated image (default 1 1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--batch", type=int, default=None, help="training batch size (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="training learning rate (default: the preset's)")
    p.add_argument("--device", default=None, help="training device (default: cuda if available, else cpu)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data loader workers (default: 0 on 2 cores or fewer, where loader processes slow the "
                        "training threads down by ~18%%, else 2)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="validate every N epochs as well as after the last one (default 0: after the last only)")
    p.add_argument("--seed", type=int, default=0)
    _pipeline_options(p)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``srpose demo``."""
    import torch

    from srpose import get_config
    from srpose.data.synthetic import generate_dataset
    from srpose.train.trainer import train

    from .train_hooks import make_eval_fn

    for opt, val in (("--train-size", args.train_size), ("--val-size", args.val_size)):
        if val < 1:
            raise ValueError(f"{opt} must be >= 1, got {val}")
    _check_pipeline_options(args)
    if args.data == "coco" and not (args.ann and args.images):
        raise ValueError("--data coco needs --ann ANN.json --images DIR (and optionally --train-ann/--train-images)")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be >= 0 (0: after the last epoch only), got {args.eval_every}")
    out = Path(args.out or "demo")
    out.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    if args.data == "synthetic":
        _say(f"generate {args.train_size} training and {args.val_size} validation images under {out / 'data'}")
        with timer.phase("generate data"):
            gen = dict(image_size=args.image_size, people=args.people, progress=True)
            tr = generate_dataset(out / "data" / "train", num_images=args.train_size, seed=args.seed, **gen)
            va = generate_dataset(out / "data" / "val", num_images=args.val_size, seed=args.seed + 1, **gen)
        train_ann, train_images, args.ann, args.images = tr["ann"], tr["images"], va["ann"], va["images"]
    else:
        train_ann, train_images = args.train_ann or args.ann, args.train_images or args.images
    cfg = get_config(args.preset)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    epochs = int(args.epochs or cfg.train["epochs"])
    _say(f"train {cfg.name} for {epochs} epochs on {device}")
    eval_fn = make_eval_fn(cfg, str(args.ann), str(args.images), batch_size=64)
    # loading in the training process is faster on 2 cores: worker processes compete with torch's threads
    workers = args.workers if args.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
    with timer.phase("train (with validation)"):
        res = train(cfg, train_ann=train_ann, train_images=train_images, work_dir=out / "train", epochs=epochs,
                    batch_size=args.batch, lr=args.lr, workers=workers, eval_every=args.eval_every, eval_fn=eval_fn,
                    seed=args.seed, device=device, checkpoint_every=epochs)
    t_train = timer.seconds["train (with validation)"]
    ckpt = res.best or res.latest
    loss_png = _plot_loss(Path(res.log_file), out / "loss.png") if res.log_file else None
    ap = res.best_metric if res.best_metric is not None else res.metrics.get("AP")
    per_epoch = ", ".join(f"{h['metrics']['AP']:.3f} (epoch {h['epoch']})" for h in res.history
                          if "AP" in h.get("metrics", {}))
    section = ["## Training", "",
               f"{cfg.name} trained {res.epochs} epochs ({res.iters} iterations) on {args.data} data in "
               f"{t_train:.0f} s on {device}: {res.images_per_s:.1f} images/s, data loading "
               f"{100 * res.data_time_share:.0f}% of step time ({workers} loader workers). Validation AP: "
               f"{per_epoch}; the checkpoint deployed below is the best (epoch {res.best_epoch}, AP {ap:.3f}).", ""]
    if ap is not None and ap < DEMO_MIN_AP:
        section += [f"> warning: the trained model reached AP {ap:.3f} < {DEMO_MIN_AP}; the parity figures below say "
                    "little about deployment accuracy. Train longer (--epochs).", ""]
    if loss_png:
        section += ["![training loss](loss.png)", ""]
    args.model, args.checkpoint, args.out = cfg.name, ckpt, str(out)  # the pipeline writes beside the training
    return run_pipeline(args, extra_sections=section, title="SRPose-TRT demo", timer=timer,
                        targets_fn=lambda report, seconds: demo_targets(ap, report, seconds))
