"""A zero-cost stand-in for an engine: the outputs a graph of ``card`` returns, of the right shapes, at once.

It measures what the host side costs per person (reading, decoding, cropping, batching, decoding on the host,
results) with the inference taken out, as a TensorRT engine on a fast GPU would almost take it out: the inputs it
hands out (:meth:`StandInBackend.input_arrays`) are reused buffers, as TensorRT's pinned arrays are, and its outputs
are arrays made once per shape. ``scripts/bench_host.py`` and ``scripts/bench_predict.py`` use it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from srpose.card import INPUT_DTYPES, KEYPOINTS, SCORES, ArtifactCard
from srpose.engines.base import Backend, batch_items

__all__ = ["StandInBackend"]


class StandInBackend(Backend):
    """Outputs of a graph described by ``card`` (crop or image input, raw or decoded, top-down or bottom-up raw),
    zeros, without computing anything; ``slots`` buffer sets of inputs handed out in turn, as TensorRT does."""

    name = "stand-in"

    def __init__(self, card: ArtifactCard, slots: int = 2) -> None:
        super().__init__()
        self.card = card
        self.precision = card.precision
        self.output_names = list(card.output_names)
        self.input_names = list(card.input_names)
        self.slots = int(slots)
        self._outputs: dict[tuple, dict[str, np.ndarray]] = {}
        self._buffers: list[dict[str, np.ndarray]] = [{} for _ in range(self.slots)]
        self._next = 0
        self.calls = 0

    def _shapes(self, n: int, inputs: Any) -> dict[str, tuple[int, ...]]:
        c = self.card
        k = c.num_joints
        if c.task == "top-down":
            if c.image_input:
                return {KEYPOINTS: (n, k, 3), SCORES: (n,)}
            w, h = c.heatmap_size
            return {self.output_names[0]: (n, k, 3) if c.decode else (n, k, h, w)}
        if c.decode:
            raise ValueError("the stand-in returns raw bottom-up maps only (decoded graphs' candidates depend on "
                             "what the maps hold)")
        x = inputs[self.input_names[0]] if isinstance(inputs, Mapping) else inputs
        hh, ww = (x.shape[1:3] if x.ndim == 4 and x.shape[-1] == 3 else x.shape[2:])
        return {self.output_names[0]: (n, 2 * k, int(hh), int(ww))}

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        n = batch_items(images)
        shapes = self._shapes(n, images)
        key = tuple(sorted(shapes.items()))
        out = self._outputs.get(key)
        if out is None:
            out = self._outputs[key] = {name: np.zeros(s, np.float32) for name, s in shapes.items()}
        self.calls += 1
        self.last_timing_ms = 0.0
        return out

    def input_arrays(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        """Views of this slot's reused buffers (grown when a larger shape comes), like TensorRT's pinned arrays."""
        bufs = self._buffers[self._next]
        self._next = (self._next + 1) % self.slots
        out = {}
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            buf = bufs.get(name)
            if buf is None or buf.size < size:
                buf = bufs[name] = np.empty(size, INPUT_DTYPES.get(name, "float32"))
            out[name] = buf[:size].reshape(shape)
        return out
