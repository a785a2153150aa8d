"""Rendering of the INT8 search's report: the Markdown tables and the two PNGs (sensitivity per group; AP against
INT8 MAC share, the Pareto curve). "AP" is the report's ``metric``: PCKh (PCKh@0.5) for MPII models."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .int8_search import QuantizeReport

__all__ = ["quantize_markdown", "plot_sensitivity", "plot_pareto", "pareto_front"]

_ROWS = (("fp32", "FP32"), ("fp16", "FP16"), ("int8", "all-INT8 (head included)"),
         ("int8_export", "INT8 export, default exclusions"), ("chosen", "**search: chosen mixed INT8/FP16**"))


def _f(v: Any, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def quantize_markdown(report: "QuantizeReport") -> str:
    """The summary table (reference graphs and the chosen set) and the per-group sensitivity table."""
    r, m = report, report.metric
    lines = [f"### {m}-guided INT8: {r.model} ({r.dataset}, {r.val_persons} persons, flip "
             f"{'on' if r.flip else 'off'}, budget Δ{m} <= {r.max_ap_drop:.4f})", "",
             f"| graph | not INT8 | INT8 MAC share | {m} | Δ{m} vs FP32 | kpt err vs FP32 (px) | output rel L2 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ap32 = r.graphs["fp32"]["metrics"][m]
    for key, label in _ROWS:
        g = r.graphs.get(key)
        if g is None:
            continue
        ap = g["metrics"][m]
        lines.append(f"| {label} | {g['fp16']} | {100 * g['int8_mac_share']:.1f}% | {ap:.4f} | "
                     f"{'-' if key == 'fp32' else format(ap - ap32, '+.4f')} | {g['kpt_px']:.3f} | "
                     f"{g['out_rel_l2']:.2e} |")
    c = r.chosen
    verdict = "meets the budget" if r.met else f"**does not meet the budget** (best {m} measured)"
    lines += ["", f"The chosen set {verdict}: {len(c['groups'])} of {len(r.groups)} groups in FP16 "
              f"({100 * c['fp16_mac_share']:.1f}% of the MACs), "
              + (", ".join(f"`{g}`" for g in c["groups"]) if c["groups"] else "none") + "."]
    ev = r.evaluations
    lines.append(f"Graphs run: {ev['run']} ({', '.join(f'{k} {v}' for k, v in ev['run_by_phase'].items())}), "
                 f"results from the cache: {ev['cached']}; {r.seconds:.0f} s.")
    if r.stopped:
        lines.append(f"> the search stopped early: {r.stopped}; rerun (the cache keeps every result) or raise the "
                     "limit.")
    lines += ["", f"| # | group | nodes | MMACs | MAC share | {m} loss, INT8 alone | {m} gain, kept FP16 | "
                  "kpt px, INT8 alone | kpt px removed | noise share alone / removed | harm | FP16 |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for i, g in enumerate(r.groups):
        s = g["sensitivity"]
        mark = "**forced**" if g["forced"] else ("**yes**" if g["fp16"] else "")
        lines.append(f"| {i} | `{g['name']}` | {len(g['nodes'])} | {g['macs'] / 1e6:.2f} | "
                     f"{100 * g['mac_share']:.1f}% | {_f(s['ap_drop_alone'], '.4f')} | "
                     f"{_f(s['ap_gain_fp16'], '+.4f')} | {_f(s['kpt_px_alone'], '.3f')} | "
                     f"{_f(s['kpt_px_fp16'], '.3f')} | {_pct(s['noise_alone'])} / {_pct(s['noise_fp16'])} | "
                     f"{_pct(s['harm'])} | {mark} |")
    lines += ["", f"{m} loss, INT8 alone: {m}(FP32) minus {m} with only this group in INT8 (the others FP16); {m} "
              f"gain, kept FP16: {m} with every group in INT8 but this one, minus all-INT8's; kpt px: mean keypoint "
              "distance "
              "to the FP32 graph's (input pixels), with it alone in INT8 / removed by keeping it in FP16; noise "
              "share: the group's share of the all-INT8 graph's output noise power, measured alone / removed by "
              f"keeping it in FP16; harm: their mean (the search's order, per MAC); forced: its INT8-alone {m} loss "
              "exceeds the budget. MAC shares are of every Conv/ConvTranspose/MatMul/"
              f"Gemm MAC of the graph (attention products, never INT8, included); Δ{m} on the 0..1 scale."]
    return "\n".join(lines) + "\n"


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out_png: str | Path) -> Path:
    from srpose._io import atomic_path

    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(out_png)


def plot_sensitivity(report: "QuantizeReport", out_png: str | Path) -> Path:
    """Per group: AP drop with it alone in INT8, AP gained by keeping it in FP16, and its harm (share of the
    all-INT8 output noise); the chosen FP16 groups in orange."""
    groups = report.groups
    n = len(groups)
    fig = _figure((11, 1.6 + 0.28 * n))
    ax_ap, ax_px = fig.subplots(1, 2, sharey=True)
    ys = list(range(n))
    colours = ["#ff7f0e" if g["fp16"] else "#1f77b4" for g in groups]
    drop = [g["sensitivity"]["ap_drop_alone"] or 0.0 for g in groups]
    gain = [g["sensitivity"]["ap_gain_fp16"] or 0.0 for g in groups]
    m = report.metric
    ax_ap.barh([y - 0.2 for y in ys], drop, height=0.4, color=colours, label=f"{m} lost with it alone in INT8")
    ax_ap.barh([y + 0.2 for y in ys], gain, height=0.4, color=colours, alpha=0.45, label=f"{m} gained in FP16")
    ax_ap.axvline(report.max_ap_drop, color="#d62728", lw=0.8, ls="--", label=f"budget {report.max_ap_drop:g}")
    ax_ap.set_xlabel(f"{m} (0..1)")
    ax_ap.legend(fontsize=7, loc="best")
    ax_px.barh(ys, [100 * (g["sensitivity"]["harm"] or 0.0) for g in groups], color=colours)
    ax_px.set_xlabel("harm: share of the all-INT8 output noise power (%)")
    ax_ap.set_yticks(ys)
    ax_ap.set_yticklabels([f"{g['name']} ({100 * g['mac_share']:.1f}%)" for g in groups], fontsize=7)
    ax_ap.invert_yaxis()
    for ax in (ax_ap, ax_px):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{report.model}: INT8 sensitivity per layer group (orange: kept in FP16; MAC share in brackets)",
                 fontsize=9)
    return _save(fig, out_png)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not beaten in both INT8 MAC share and AP, by share."""
    front: list[tuple[float, float]] = []
    for share, ap in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or ap > front[-1][1] + 1e-12:
            front.append((share, ap))
    return sorted(front)


def plot_pareto(report: "QuantizeReport", out_png: str | Path) -> Path:
    """AP against INT8 MAC share of every measured graph: the Pareto front, the search path, the reference graphs
    and the chosen set."""
    fig = _figure((7.5, 5))
    ax = fig.subplots()
    m = report.metric
    pts = [(100 * p["int8_mac_share"], p[m]) for p in report.measured]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color="#999999", label="measured FP16 sets")
    front = pareto_front(pts)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#1f77b4", lw=1.2,
            label="Pareto front")
    path = [(100 * s["int8_mac_share"], s[m]) for s in report.path]
    if path:
        ax.plot([p[0] for p in path], [p[1] for p in path], "-o", ms=3, lw=0.8, color="#2ca02c", label="search path")
    ap32 = report.graphs["fp32"]["metrics"][m]
    ax.axhline(ap32, color="#555555", lw=0.8, label=f"FP32 {m} {ap32:.4f}")
    ax.axhline(ap32 - report.max_ap_drop, color="#d62728", lw=0.8, ls="--", label="budget")
    marks = {"int8": ("s", "all-INT8"), "fp16": ("D", "FP16"), "int8_export": ("^", "INT8 export (defaults)"),
             "chosen": ("*", "chosen")}
    for key, (mark, label) in marks.items():
        g = report.graphs.get(key)
        if g is not None:
            ax.scatter([100 * g["int8_mac_share"]], [g["metrics"][m]], marker=mark, s=110 if mark == "*" else 45,
                       zorder=5, label=label)
    ax.set_xlabel("INT8 share of the MACs (%)")
    ax.set_ylabel(m)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"{report.model}: {m} against INT8 MAC share", fontsize=10)
    return _save(fig, out_png)
