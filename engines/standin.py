"""A zero-cost stand-in for an engine: the outputs a graph of ``card`` returns, of the right shapes, at once.

It measures what the host side costs per person (reading, decoding, cropping, batching, decoding on the host,
results) with the inference taken out, as a TensorRT engine on a fast GPU would almost take it out: the inputs it
hands out (:meth:`StandInBackend.input_arrays`) are reused buffers, as TensorRT's pinned arrays are, and its outputs
are arrays made once per shape. ``scripts/bench_host.py`` and ``scripts/bench_predict.py`` use it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from srpose.card import BOXES, INPUT_DTYPES, KEYPOINTS, SCORES, ArtifactCard
from srpose.engines.base import Backend, batch_items

__all__ = ["StandInBackend"]


class StandInBackend(Backend):
    """Outputs of a graph described by ``card`` (crop or image input, raw or decoded, top-down or bottom-up raw),
    zeros, without computing anything (image graphs: people placed in their input boxes, see
    :meth:`_people_in_boxes`); ``slots`` buffer sets of inputs handed out in turn, as TensorRT does."""

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
        hh, ww = x.shape[1:3] if c.image_input else x.shape[2:]  # uint8 N x H x W x 3, or N x 3 x H x W
        return {self.output_names[0]: (n, 2 * k, int(hh), int(ww))}

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        n = batch_items(images)
        shapes = self._shapes(n, images)
        key = tuple(sorted(shapes.items()))
        out = self._outputs.get(key)
        if out is None:
            out = self._outputs[key] = {name: np.zeros(s, np.float32) for name, s in shapes.items()}
        if self.card.task == "top-down" and self.card.image_input and isinstance(images, Mapping):
            out = self._people_in_boxes(np.asarray(images[BOXES]), out)
        self.calls += 1
        self.last_timing_ms = 0.0
        return out

    def _people_in_boxes(self, boxes: np.ndarray, zeros: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Image graphs: each person's joints on a fixed pattern spread over its box, confident, scored as the
        box, so that what runs after the graph (tracking from keypoints, drawing) sees people where they are."""
        k = self.card.num_joints
        pattern = getattr(self, "_pattern", None)
        if pattern is None:
            t = np.linspace(0.0, 1.0, k, dtype=np.float32)
            pattern = self._pattern = np.stack([0.2 + 0.6 * ((t * 7.0) % 1.0), 0.05 + 0.9 * t], axis=1)
        b = boxes.reshape(-1, 5)[: zeros[KEYPOINTS].shape[0]].astype(np.float32)
        kp = np.empty_like(zeros[KEYPOINTS])
        kp[..., :2] = b[:, None, :2] + pattern[None] * b[:, None, 2:4]
        kp[..., 2] = 1.0
        return {KEYPOINTS: kp, SCORES: b[:, 4].copy()}

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
