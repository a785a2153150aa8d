"""What the CPU benchmark scripts share: the machine a figure was measured on, and publishing a result (printed,
JSON, a PNG, its section of ``docs/benchmarks.md``)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any, Callable

from srpose._io import atomic_write_json, replace_markdown_section


def machine() -> dict[str, Any]:
    """Date, Python, CPU cores and architecture of this run."""
    return dict(date=_dt.date.today().isoformat(), python=platform.python_version(), cpus=os.cpu_count(),
                machine=platform.machine())


def publish(result: dict[str, Any], text: str, section: str, *, json_out: Path | None, doc: Path, write: bool,
            png: Path | None = None, plot: Callable[[dict[str, Any], Path], None] | None = None) -> None:
    """Print ``text``; write ``result`` to ``json_out`` (if given); unless ``write`` is false, draw ``plot`` into
    ``png`` and replace ``section`` of ``doc`` with ``text``."""
    print(text)
    if json_out:
        atomic_write_json(json_out, result)
    if not write:
        return
    if plot is not None and png is not None:
        plot(result, png)
    replace_markdown_section(doc, section, text)
    print(f"wrote the '{section}' section of {doc}" + (f" and {png}" if png is not None and plot else ""))


def bars(png: Path, groups: list[str], series: dict[str, list[float]], ylabel: str, *, title: str | None = None,
         line: tuple[float, str] | None = None, size: tuple[float, float] = (7.5, 3.9)) -> None:
    """A grouped bar chart on a log scale (one bar a series in each group), written to ``png`` atomically;
    ``line``: a dashed horizontal (value, label), e.g. a target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from srpose._io import atomic_path

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=name)
    if line is not None:
        ax.axhline(line[0], color="k", lw=0.8, ls="--", label=line[1])
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
