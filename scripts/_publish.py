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
