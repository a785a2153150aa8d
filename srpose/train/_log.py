"""Training logs: the JSON-lines log file (rank 0) and the one-line console summary of each epoch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["JsonLog", "epoch_line"]


class JsonLog:
    """Append-only JSON lines (rank 0); each line is flushed so a crash loses at most the line being written."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, **rec: Any) -> None:
        """Append one record (nothing without a file)."""
        if self._f is not None:
            self._f.write(json.dumps(rec, default=float) + "\n")
            self._f.flush()

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()


def epoch_line(summary: Mapping[str, Any], total: int, key: str, best_epoch: int | None) -> str:
    """One console line per epoch: loss, throughput and, when evaluated, the key metric."""
    line = (f"epoch {summary['epoch']}/{total}  loss {summary['loss']:.4g}  lr {summary['lr']:.2e}  "
            f"{summary['seconds']:.0f} s  {summary['images_per_s']:.1f} img/s  "
            f"data {100 * summary['data_time_share']:.0f}%")
    metrics = summary.get("metrics")
    if metrics and key in metrics:
        line += f"  {key} {metrics[key]:.4f}" + (" (best)" if best_epoch == summary["epoch"] else "")
    return line
