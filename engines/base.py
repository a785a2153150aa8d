"""The inference backend interface: float32 crops in, heatmaps (or decoded keypoints) out.

Backends never import ``srpose``; the evaluator owns flip test, decoding and metrics so any backend plugs in.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["Backend"]


class Backend:
    """Base class of inference backends (PyTorch, ONNX Runtime, TensorRT, oracle).

    Class attributes a subclass may override:

    - ``name``: short name shown in reports.
    - ``output_kind``: ``"heatmaps"`` (N x K x H x W) or ``"keypoints"`` (N x K x 3: heatmap-pixel x, y, score,
      decoded in the graph).
    - ``flip_in_graph``: the backend already averages the flipped input, so the evaluator must not flip.
    - ``needs_meta``: ``infer`` wants the batch metadata (e.g. ground-truth joints) as a second argument.

    ``last_timing_ms`` holds the time of the latest ``infer`` call in milliseconds: device compute time measured
    with CUDA events when ``timing_source == "device"``, wall time otherwise (``"wall"``); ``last_copy_ms`` the
    host-device copy time where the backend measures it apart.
    """

    name: str = "base"
    output_kind: str = "heatmaps"
    flip_in_graph: bool = False
    needs_meta: bool = False
    timing_source: str = "wall"
    precision: str | None = None

    def __init__(self) -> None:
        self.last_timing_ms: float | None = None
        self.last_copy_ms: float | None = None

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
        """Run the model on N x 3 x H x W float32 crops; returns float32 outputs as described by ``output_kind``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer()")

    def close(self) -> None:
        """Release the backend's resources (sessions, engines, device memory). Safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, output_kind={self.output_kind!r})"
