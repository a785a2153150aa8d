"""Rendering of reports: the parity table (Markdown) and chart (PNG), the checked-targets table and phase timer
of the pipeline and the demo."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .parity import ParityReport

__all__ = ["parity_markdown", "plot_parity", "plot_loss", "PhaseTimer", "Target", "targets_markdown"]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def parity_markdown(report: "ParityReport") -> str:
    """The parity report as a Markdown table (one row per model, PyTorch first)."""
    key = report.primary_metric
    ar = "AR" if "AR" in report.reference["metrics"] else None
    lines = [f"### Parity: {report.model} ({report.dataset}, {report.task}, {report.items} {report.unit}s, "
             f"flip {'on' if report.flip else 'off'})", ""]
    kpt = report.task == "top-down"  # final keypoints vs PyTorch's, image pixels
    head = (f"| model | precision | {key} | Δ{key} |" + (f" {ar} | Δ{ar} |" if ar else "") +
            " people | max abs | rel L2 | cosine | kpt err (px) |" +
            (" Δkpt median / p99 (image px) |" if kpt else "") + f" {report.unit}s/s |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    r = report.reference
    lines.append(f"| PyTorch | fp32 | {r['metrics'][key]:.4f} | - |" + (f" {r['metrics'][ar]:.4f} | - |" if ar else "")
                 + f" {r['people']} | - | - | - | - |" + (" - |" if kpt else "") +
                 f" {_fmt(r.get('items_per_s'), '.1f')} |")
    for m in report.models:
        e = m["output_error"]
        lines.append(f"| {m['name']} | {m['precision']} | {m['metrics'][key]:.4f} | {m['delta'][key]:+.4f} |" +
                     (f" {m['metrics'][ar]:.4f} | {m['delta'][ar]:+.4f} |" if ar else "") +
                     f" {m['people']} | {_fmt(e['max_abs'], '.3g')} | {_fmt(e['rel_l2'], '.3g')} | "
                     f"{_fmt(e['cosine'], '.6f')} | {_fmt(m['mean_kpt_px'], '.3f')} |" +
                     (f" {_fmt(m.get('image_kpt_px_median'), '.3f')} / {_fmt(m.get('image_kpt_px_p99'), '.3f')} |"
                      if kpt else "") + f" {_fmt(m.get('items_per_s'), '.1f')} |")
    if any(m.get("image_input") for m in report.models):
        lines.append("\n> image-to-keypoints graphs (`--image-input`): output and kpt errors against the same graph in "
                     "PyTorch, in image pixels; Δkpt against PyTorch with the host pipeline (OpenCV crops)")
    compared = {m["error_items"] for m in report.models}
    if compared and max(compared) < report.items:
        lines.append(f"\n> output error and keypoint error over the first {max(compared)} {report.unit}s; "
                     f"{key} over all {report.items}")
    for w in report.warnings:
        lines.append(f"\n> note: {w}")
    return "\n".join(lines) + "\n"


def plot_parity(report: "ParityReport", out_png: str | Path) -> Path:
    """Bar chart of the primary metric and throughput per model (PyTorch first)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from srpose._io import atomic_path

    key = report.primary_metric
    labels = ["PyTorch fp32"] + [m["name"] for m in report.models]
    values = [report.reference["metrics"][key]] + [m["metrics"][key] for m in report.models]
    speed = [report.reference.get("items_per_s") or 0.0] + [m.get("items_per_s") or 0.0 for m in report.models]
    fig = Figure(figsize=(4 + 1.4 * len(labels), 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colors = ["#777777"] + ["#1f77b4"] * len(report.models)
    for ax, vals, title in ((axes[0], values, key), (axes[1], speed, f"{report.unit}s / s (backend)")):
        bars = ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3f}" if title == key else f"{v:.1f}", (b.get_x() + b.get_width() / 2, v),
                        ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"{report.model}: parity with PyTorch ({report.dataset})", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_png


def plot_loss(log_file: Path, out_png: Path) -> Path | None:
    """The training loss per iteration of a trainer's JSON-lines log as a PNG (None when the log has no loss)."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from srpose._io import atomic_path

    recs = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    pts = [(r["iter"], r["loss"]) for r in recs if "loss" in r and "iter" in r]
    if not pts:
        return None
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_png


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
    """One checked target: what, the measured value, the bound, and whether it is met."""

    name: str
    value: str
    bound: str
    met: bool


def targets_markdown(targets: Sequence[Target]) -> list[str]:
    """The targets as Markdown table lines."""
    lines = ["| target | measured | bound | met |", "|---|---:|---:|:---:|"]
    return lines + [f"| {t.name} | {t.value} | {t.bound} | {'yes' if t.met else '**no**'} |" for t in targets]
