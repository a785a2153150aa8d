"""The simple (MSRA) heatmap codec of mmpose 0.x ``TopDownSimpleHead`` models (SimpleBaseline, HRNet, HRFormer).

Decoding is mmpose 0.x ``keypoints_from_heatmaps`` (``use_udp=False``): global arg-max (first in raster order),
location ``(-1, -1)`` where the maximum is not positive, then ``post_process`` ``"default"`` (quarter-pixel shift:
x (y) moves 0.25 towards the higher horizontal (vertical) neighbour, only for ``1 < x < W - 1`` and
``1 < y < H - 1``) or ``"unbiased"`` (DARK: Gaussian modulation with ``modulate_kernel`` and one Taylor step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._heatmap_np import check_heatmaps, check_kernel, decode_simple_np
from .base import HeatmapCodec, _is_tensor

__all__ = ["MSRAHeatmap"]


@dataclass
class MSRAHeatmap(HeatmapCodec):
    """MSRA Gaussian heatmaps (1/4 of the input by default, sigma 2) with the simple arg-max decoder."""

    name = "simple"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.post_process == "unbiased":
            check_kernel(self.modulate_kernel)

    def decode(self, heatmaps: Any, *, post: bool = True) -> Any:
        check_heatmaps(heatmaps)
        mode = self.post_process if self.refines(post) else None
        if _is_tensor(heatmaps):
            from ._heatmap_torch import decode_simple_torch

            return decode_simple_torch(heatmaps, mode, self.modulate_kernel)
        import numpy as np

        xy, score = decode_simple_np(heatmaps, mode, self.modulate_kernel)
        return np.concatenate([xy, score], axis=-1)

    def decode_module(self, *, post: bool = True) -> Any:
        from ._heatmap_torch import SimpleDecode

        if self.refines(post) and self.post_process == "unbiased":
            raise ValueError("in-graph decoding supports post_process 'default' or None, not 'unbiased' (DARK); "
                             "export without --decode and let the evaluator decode the heatmaps")
        w, h = self.heatmap_size
        return SimpleDecode((h, w), self.refines(post))
