"""``srpose parity``: exported models against the PyTorch reference on the same crops.

For each ONNX file: output error against PyTorch on the batches the evaluator feeds it (max abs, relative L2,
cosine; the first ``error_persons`` persons, all by default on the command line), mean keypoint distance in
input-crop pixels, AP/AR and their deltas to PyTorch over every person, and backend throughput.
Writes JSON, Markdown and a bar chart; ``--max-ap-drop`` turns an accuracy loss into a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from srpose.engines.base import Backend

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig

__all__ = ["add_parity_arguments", "run_parity", "run_parity_check", "ParityProbe", "models_over_drop", "to_markdown",
           "plot_parity"]


class ParityProbe(Backend):
    """Wraps a backend: returns its outputs unchanged while comparing the batches with a reference function (the
    first ``max_persons`` persons; all when ``None``) and timing the wrapped backend alone."""

    def __init__(self, backend: Backend, reference: Callable[[np.ndarray], np.ndarray], *,
                 to_input_px: Callable[[np.ndarray], np.ndarray], max_persons: int | None = None) -> None:
        from srpose.export.compare import ErrorAccumulator

        super().__init__()
        self.backend = backend
        self.reference = reference
        self.to_input_px = to_input_px
        self.name = backend.name
        self.output_kind = backend.output_kind
        self.flip_in_graph = backend.flip_in_graph
        self.errors = ErrorAccumulator()
        self.kpt = ErrorAccumulator(keypoints=True)
        self.backend_ms = 0.0
        self.persons = 0
        self.max_persons = max_persons
        self.compared = 0

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
        out = self.backend.infer(images)
        self.last_timing_ms = self.backend.last_timing_ms
        self.backend_ms += float(self.backend.last_timing_ms or 0.0)
        self.persons += len(images)
        if self.max_persons is None or self.compared < self.max_persons:
            # the reference reruns PyTorch on the batch: bounded, as it costs more than most backends
            ref = self.reference(images)
            self.errors.add(ref, out)
            self.kpt.add(self.to_input_px(ref), self.to_input_px(out))
            self.compared += len(images)
        return out

    def close(self) -> None:
        self.backend.close()


def _reference_fn(model: "nn.Module", cfg: "PoseConfig", flip: bool,
                  decode: bool) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from srpose.export.onnx_export import ExportWrapper

    wrapper = ExportWrapper(model, cfg, flip=flip, decode=decode).eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapper(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

    return run


def _to_input_px_fn(cfg: "PoseConfig", keypoints: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Outputs -> N x K x 2 keypoints in input-crop pixels (heatmaps decoded with the config's decoder)."""
    from srpose.decode import decode_heatmaps

    iw, ih = cfg.image_size
    hw, hh = cfg.heatmap_size
    post_process = cfg.test_cfg.get("post_process", "default")
    decoder = str(cfg.data.get("decoder", "simple"))

    def convert(out: np.ndarray) -> np.ndarray:
        if keypoints:
            return out[..., :2] * np.array([iw / hw, ih / hh], dtype=np.float32)
        n = len(out)
        center = np.tile(np.array([[iw / 2, ih / 2]], np.float32), (n, 1))
        scale = np.tile(np.array([[iw / 200, ih / 200]], np.float32), (n, 1))
        xy, _ = decode_heatmaps(out, center, scale, kind=decoder, post=post_process is not None,
                                post_process=post_process or "default",
                                modulate_kernel=int(cfg.test_cfg.get("modulate_kernel", 11)))
        return xy

    return convert


def _primary(metrics: Mapping[str, float]) -> str:
    return "AP" if "AP" in metrics else ("Mean" if "Mean" in metrics else next(iter(metrics)))


def run_parity_check(model: "nn.Module", cfg: "PoseConfig", model_files: Sequence[str | Path], dataset: Any, *,
                     flip: bool | None = None, batch_size: int = 32, workers: int = 2, threads: int | None = None,
                     progress: bool = False, checkpoint_sha256: str | None = None,
                     reference_results: str | Path | None = None,
                     error_persons: int | None = None) -> dict[str, Any]:
    """Evaluate the PyTorch ``model`` and each ONNX file on ``dataset``; returns the parity report (a dict).
    ``reference_results``: also write the PyTorch keypoints there (COCO results format). ``error_persons``: compare
    outputs and keypoints on the first N persons only (``None``: all); AP and AR always cover every person."""
    if error_persons is not None and error_persons < 1:
        raise ValueError(f"error_persons must be >= 1 (or None for all), got {error_persons}")
    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    from .backends import TorchBackend
    from .evaluator import evaluate

    ref_flip = bool(cfg.test_cfg.get("flip_test", True) if flip is None else flip)
    torch_backend = TorchBackend(model)
    ref = evaluate(torch_backend, dataset, cfg.data, cfg.test_cfg, flip=ref_flip, batch_size=batch_size,
                   workers=workers, progress=progress, results_file=reference_results)
    key = _primary(ref.metrics)
    report: dict[str, Any] = dict(
        model=cfg.name, dataset=ref.dataset, persons=ref.num_persons, images=ref.num_images, flip=ref_flip,
        primary_metric=key, input_size=list(cfg.image_size),
        reference=dict(name="pytorch", precision="fp32", metrics=ref.metrics,
                       persons_per_s=1e3 / ref.backend_ms_per_person if ref.backend_ms_per_person else None,
                       backend_ms_per_person=ref.backend_ms_per_person),
        models=[], warnings=[])
    for path in model_files:
        if Path(path).suffix in (".engine", ".plan"):
            from srpose.engines.tensorrt import TensorRTBackend

            backend = TensorRTBackend(path)
        else:
            backend = OnnxRuntimeBackend(path, threads=threads)
        notes = []
        sha = backend.meta.get("checkpoint_sha256")
        if checkpoint_sha256 and sha and sha != checkpoint_sha256:
            notes.append(f"{Path(path).name} was exported from another checkpoint (sha256 {sha[:12]}...)")
        keypoints = backend.output_kind == "keypoints"
        model_flip = ref_flip
        if backend.flip_in_graph and not ref_flip:
            notes.append(f"{Path(path).name} has the flip test in its graph; the reference runs without flip")
        if keypoints and ref_flip and not backend.flip_in_graph:
            notes.append(f"{Path(path).name} outputs keypoints without an in-graph flip: evaluated without flip")
            model_flip = False
        probe = ParityProbe(backend, _reference_fn(model, cfg, backend.flip_in_graph, keypoints),
                            to_input_px=_to_input_px_fn(cfg, keypoints), max_persons=error_persons)
        try:
            res = evaluate(probe, dataset, cfg.data, cfg.test_cfg, flip=model_flip, batch_size=batch_size,
                           workers=workers, progress=progress)
        finally:
            probe.close()
        err = probe.errors.result()
        report["models"].append(dict(
            file=str(path), name=Path(path).name, precision=backend.precision, output_kind=backend.output_kind,
            flip_in_graph=backend.flip_in_graph, flip=res.flip or backend.flip_in_graph, metrics=res.metrics,
            delta={k: res.metrics[k] - ref.metrics[k] for k in res.metrics if k in ref.metrics},
            output_error={k: err[k] for k in ("max_abs", "rel_l2", "cosine", "ref_max_abs")},
            error_persons=probe.compared,
            mean_kpt_px=probe.kpt.result()["mean_kpt_px"],
            persons_per_s=probe.persons / (probe.backend_ms / 1e3) if probe.backend_ms else None,
            backend_ms_per_person=probe.backend_ms / probe.persons if probe.persons else None, notes=notes))
        report["warnings"].extend(notes)
    return report


def models_over_drop(report: Mapping[str, Any], max_drop: float | None) -> list[str]:
    """Names of the models whose primary metric is more than ``max_drop`` below the reference (none if ``None``)."""
    if max_drop is None:
        return []
    key = report["primary_metric"]
    return [m["name"] for m in report["models"] if -m["delta"][key] > max_drop + 1e-12]


def to_markdown(report: Mapping[str, Any]) -> str:
    """The parity report as a Markdown table."""
    key = report["primary_metric"]
    ar = "AR" if "AR" in report["reference"]["metrics"] else None
    lines = [f"### Parity: {report['model']} ({report['dataset']}, {report['persons']} persons, "
             f"flip {'on' if report['flip'] else 'off'})", ""]
    head = f"| model | precision | {key} | Δ{key} |" + (f" {ar} | Δ{ar} |" if ar else "") + \
        " max abs | rel L2 | cosine | kpt err (px) | persons/s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    r = report["reference"]
    pps = f"{r['persons_per_s']:.1f}" if r.get("persons_per_s") else "-"
    lines.append(f"| PyTorch | fp32 | {r['metrics'][key]:.4f} | - |" +
                 (f" {r['metrics'][ar]:.4f} | - |" if ar else "") + f" - | - | - | - | {pps} |")
    for m in report["models"]:
        e = m["output_error"]
        pps = f"{m['persons_per_s']:.1f}" if m.get("persons_per_s") else "-"
        lines.append(f"| {m['name']} | {m['precision']} | {m['metrics'][key]:.4f} | {m['delta'][key]:+.4f} |" +
                     (f" {m['metrics'][ar]:.4f} | {m['delta'][ar]:+.4f} |" if ar else "") +
                     f" {e['max_abs']:.3g} | {e['rel_l2']:.3g} | {e['cosine']:.6f} | {m['mean_kpt_px']:.3f} | {pps} |")
    compared = {m.get("error_persons", report["persons"]) for m in report["models"]}
    if compared and max(compared) < report["persons"]:
        lines.append(f"\n> output error and keypoint error over the first {max(compared)} persons; "
                     f"{key} over all {report['persons']}")
    for w in report.get("warnings", []):
        lines.append(f"\n> note: {w}")
    return "\n".join(lines) + "\n"


def plot_parity(report: Mapping[str, Any], out_png: str | Path) -> Path:
    """Bar chart of the primary metric and throughput per model (PyTorch first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srpose._io import atomic_path

    key = report["primary_metric"]
    labels = ["PyTorch fp32"] + [f"{m['name']}" for m in report["models"]]
    values = [report["reference"]["metrics"][key]] + [m["metrics"][key] for m in report["models"]]
    speed = [report["reference"].get("persons_per_s") or 0.0] + [m.get("persons_per_s") or 0.0
                                                                   for m in report["models"]]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.4 * len(labels), 4))
    colors = ["#777777"] + ["#1f77b4"] * len(report["models"])
    for ax, vals, title in ((axes[0], values, key), (axes[1], speed, "persons / s (backend)")):
        bars = ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3f}" if title == key else f"{v:.1f}", (b.get_x() + b.get_width() / 2, v),
                        ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"{report['model']}: parity with PyTorch ({report['dataset']})", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_png


def publish_parity(report: Mapping[str, Any], md: str, args: argparse.Namespace, key: str = "AP") -> int:
    """Print the Markdown table, write the JSON / Markdown / PNG outputs asked for, and return the exit status of
    the ``--max-ap-drop`` gate (1 when ``report['failed']`` names a model)."""
    from srpose._io import atomic_write_json, atomic_write_text

    print(md)
    if args.json_out:
        atomic_write_json(args.json_out, report)
        print(f"report written to {args.json_out}")
    if args.markdown:
        atomic_write_text(args.markdown, md)
        print(f"markdown written to {args.markdown}")
    if args.plot:
        plot_parity(report, args.plot)
        print(f"plot written to {args.plot}")
    if report.get("failed"):
        print(f"srpose parity: {', '.join(report['failed'])} lost more than {args.max_ap_drop} {key} against PyTorch",
              file=sys.stderr)
        return 1
    return 0


def add_parity_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose parity``."""
    from srpose.cli import add_data_args, add_json_arg, add_model_args

    add_model_args(p)
    p.add_argument("--models", nargs="+", required=True, metavar="FILE",
                   help="exported ONNX files (any precision, flip and decode variant) or TensorRT plans")
    add_data_args(p)
    p.add_argument("--max-ap-drop", type=float, default=None, metavar="X",
                   help="exit with status 1 when a model's AP (PCKh for MPII) is more than X below PyTorch's")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test of the reference (default: the config's test_cfg.flip_test)")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="persons per batch (default: 32)")
    p.add_argument("--error-persons", type=int, default=None, metavar="N",
                   help="compare outputs with PyTorch on the first N persons only (default: all); AP covers all")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="data loader workers (default: 2)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="ONNX Runtime intra-op threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    out = p.add_argument_group("output")
    add_json_arg(out)
    out.add_argument("--markdown", default=None, metavar="OUT", help="write a Markdown table to OUT")
    out.add_argument("--plot", default=None, metavar="OUT.png", help="write a bar chart (AP, persons/s) to OUT.png")


def _config_for_models(cfg: "PoseConfig", files: Sequence[str]) -> "PoseConfig":
    """The config at the input size the ONNX files were exported with (all must agree)."""
    from srpose.export.onnx_export import read_metadata

    sizes = {}
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"model file {f} does not exist")
        if Path(f).suffix == ".onnx":
            size = read_metadata(f).get("input_size")
        else:  # a TensorRT plan: the export metadata is in its sidecar
            from srpose.engines.tensorrt import read_sidecar

            size = ((read_sidecar(f) or {}).get("onnx_metadata") or {}).get("input_size")
            if isinstance(size, str):
                size = json.loads(size)
        if size is not None:
            sizes[f] = tuple(int(v) for v in size)
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise ValueError(f"the models were exported at different input sizes {sorted(distinct)}: compare models of "
                         "one input size at a time")
    if distinct:
        w, h = distinct.pop()
        if (w, h) != tuple(cfg.image_size):
            cfg = cfg.with_input_size(w, h)
    return cfg


def run_parity(args: argparse.Namespace) -> int:
    """Run ``srpose parity``; 0 when every model is within ``--max-ap-drop``, 1 otherwise."""
    from srpose import get_config
    from srpose.checkpoint import build_with_weights
    from srpose.models.bottom_up import is_bottom_up

    from .commands import _make_dataset

    if is_bottom_up(get_config(args.model)):  # whole images, no person boxes: the bottom-up protocol
        from .bottom_up import run_bottom_up_parity_command

        return run_bottom_up_parity_command(args)
    if args.batch < 1 or args.workers < 0:
        raise ValueError(f"--batch must be >= 1 and --workers >= 0, got {args.batch} and {args.workers}")
    if args.error_persons is not None and args.error_persons < 1:
        raise ValueError(f"--error-persons must be >= 1 (leave it out to compare every person), "
                         f"got {args.error_persons}")
    if args.max_ap_drop is not None and args.max_ap_drop < 0:
        raise ValueError(f"--max-ap-drop must be >= 0, got {args.max_ap_drop}")
    cfg = _config_for_models(get_config(args.model), args.models)
    dataset = _make_dataset(args, cfg, args.dataset or cfg.data.get("dataset", "coco"))
    model, sha = build_with_weights(cfg, args.checkpoint, command="srpose parity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = run_parity_check(model, cfg, args.models, dataset, flip=args.flip, batch_size=args.batch,
                                  workers=args.workers, threads=args.threads, progress=not args.quiet,
                                  checkpoint_sha256=sha, error_persons=args.error_persons)
    key = report["primary_metric"]
    failed = models_over_drop(report, args.max_ap_drop)
    report["max_ap_drop"] = args.max_ap_drop
    report["failed"] = failed
    return publish_parity(report, to_markdown(report), args, key)
