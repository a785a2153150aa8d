"""The inference backend interface: float32 images in, named float32 outputs out.

Backends never import torch or srpose's model code; the pose task (``srpose.tasks``) owns flip test, decoding and
the protocol, so any backend plugs in. A file-backed backend carries the file's :class:`~srpose.card.ArtifactCard`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from srpose.card import INPUT_DTYPES

if TYPE_CHECKING:  # pragma: no cover
    from srpose.card import ArtifactCard

__all__ = ["Backend", "Pending", "empty_inputs", "batch_items", "Inputs"]

#: what ``infer`` takes: N x 3 x H x W float32 crops / images, or ``{input name: array}`` (image-input graphs)
Inputs = Any


def empty_inputs(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Fresh arrays of ``shapes`` in each input's dtype (:data:`srpose.card.INPUT_DTYPES`, else float32)."""
    return {k: np.empty(tuple(s), INPUT_DTYPES.get(k, "float32")) for k, s in shapes.items()}


def batch_items(inputs: Inputs) -> int:
    """Items of one backend input: crops / images of an array, or the persons (boxes) of an image graph's feed."""
    from srpose.card import BOXES

    if isinstance(inputs, Mapping):
        return len(inputs[BOXES]) if BOXES in inputs else len(next(iter(inputs.values())))
    return len(inputs)


class Pending:
    """A submitted batch: :meth:`result` waits for it and returns ``{output name: array}`` (once)."""

    def __init__(self, wait: Callable[[], dict[str, np.ndarray]]) -> None:
        self._wait: Callable[[], dict[str, np.ndarray]] | None = wait
        self._out: dict[str, np.ndarray] | None = None

    @classmethod
    def done(cls, outputs: dict[str, np.ndarray]) -> "Pending":
        p = cls(lambda: outputs)
        return p

    def result(self) -> dict[str, np.ndarray]:
        if self._wait is not None:
            wait, self._wait = self._wait, None
            self._out = wait()
        assert self._out is not None
        return self._out


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
    - ``slots``: batches that can be in flight at once (:meth:`submit`): 2 for TensorRT, which uploads the next
      batch while the current one runs; 1 where ``submit`` simply runs ``infer``.

    Image-to-keypoints graphs (``card.image_input``) take ``{input name: array}``; a caller fills
    :meth:`input_arrays` (pinned host memory for TensorRT, so nothing is staged again) and passes them back.

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
    slots: int = 1

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

    @property
    def image_input(self) -> bool:
        """The graph takes uint8 images (+ boxes, top-down) and does its own pre- and post-processing."""
        return bool(self.card is not None and self.card.image_input)

    def infer(self, images: Inputs, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run the model on N x 3 x H x W float32 images (or ``{input name: array}``); returns ``{output name:
        array}`` (float32; image graphs' outputs as the graph types them)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer()")

    def input_arrays(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Writable arrays of ``shapes`` for the next :meth:`submit` (fresh ones here; TensorRT hands out its
        pinned buffers)."""
        return empty_inputs(shapes)

    def submit(self, inputs: Inputs) -> Pending:
        """Start a batch; ``Pending.result()`` returns its outputs. Here it runs at once (see ``slots``)."""
        return Pending.done(self.infer(inputs))

    def close(self) -> None:
        """Release the backend's resources (sessions, engines, device memory). Safe to call twice."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, outputs={self.output_names})"
