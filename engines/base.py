"""The inference backend interface: float32 images in, named float32 outputs out.

Backends never import torch or srpose's model code; the pose task (``srpose.tasks``) owns flip test, decoding and
the protocol, so any backend plugs in. A file-backed backend carries the file's :class:`~srpose.card.ArtifactCard`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from srpose.card import ArtifactCard

__all__ = ["Backend"]


class Backend:
    """Base class of inference backends (PyTorch, ONNX Runtime, TensorRT, Triton, oracle): load, infer, last timing.

    Attributes a subclass sets:

    - ``name``: short name shown in reports; ``precision``: ``fp32`` / ``fp16`` / ``int8`` or None.
    - ``card``: the artifact card of the file it runs (None for in-process backends); ``decoded`` and
      ``flip_in_graph`` follow from it (the graph decodes / folds the flip test in).
    - ``output_names``: the keys of what :meth:`infer` returns.
    - ``needs_meta``: ``infer`` wants the batch metadata (e.g. ground-truth joints) as a second argument.
    - ``serves_images``: a served model (Triton) that takes whole images (+ person boxes) and returns people in
      image pixels instead of ``infer`` on crops; the evaluator then sends it requests (``srpose.tasks.served``).

    ``last_timing_ms`` holds the time of the latest ``infer`` call in milliseconds: device compute time measured
    with CUDA events when ``timing_source == "device"``, wall time otherwise (``"wall"``); ``last_copy_ms`` the
    host-device copy time where the backend measures it apart.
    """

    name: str = "base"
    needs_meta: bool = False
    serves_images: bool = False
    timing_source: str = "wall"
    precision: str | None = None
    card: "ArtifactCard | None" = None
    output_names: list[str] = []

    def __init__(self) -> None:
        self.last_timing_ms: float | None = None
        self.last_copy_ms: float | None = None

    @property
    def decoded(self) -> bool:
        """The graph ends in the codec's decoder (keypoints / bottom-up candidates instead of raw maps)."""
        return bool(self.card is not None and self.card.decode)

    @property
    def flip_in_graph(self) -> bool:
        """The graph averages the mirrored input itself, so the caller must not flip."""
        return bool(self.card is not None and self.card.flip)

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run the model on N x 3 x H x W float32 images; returns ``{output name: float32 array}``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer()")

    def close(self) -> None:
        """Release the backend's resources (sessions, engines, device memory). Safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, outputs={self.output_names})"
