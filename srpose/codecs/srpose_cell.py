"""The SRPose heatmap codec of ``TopDownHigher`` models: full-resolution heatmaps decoded by 16 x 16 cells.

Decoding is SRPose's official ``TopDownHigher`` decoder: the maximum over whole ``cell`` x ``cell`` cells (rows /
columns beyond the last whole cell are ignored, as ``max_pool2d`` does), ties going to the first cell in raster
order and then to the first pixel of that cell in raster order; for a map whose maximum is not positive the official
code indexes cell ``(-1, -1)``, i.e. it returns the arg-max of the bottom-right cell. The score is the maximum; the
only refinement is the quarter-pixel shift (``post_process="default"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._heatmap_np import cell_grid, check_heatmaps, decode_srpose_np
from .base import HeatmapCodec, _is_tensor

__all__ = ["SRPoseHeatmap"]


@dataclass
class SRPoseHeatmap(HeatmapCodec):
    """Full-resolution Gaussian heatmaps (sigma 8 at 256 x 192, as the official configs) and the cell decoder."""

    name = "srpose"
    heatmap_size: tuple[int, int] = (192, 256)
    sigma: float = 8.0
    cell: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.post_process == "unbiased":
            raise ValueError("the SRPose decoder refines only with the official quarter-pixel shift: set "
                             "test_cfg.post_process to 'default' (or None), or use the simple decoder for DARK")
        if not isinstance(self.cell, int) or self.cell < 1:
            raise ValueError(f"cell={self.cell!r} must be a positive integer (SRPose uses 16)")

    def decode(self, heatmaps: Any, *, post: bool = True) -> Any:
        check_heatmaps(heatmaps)
        if _is_tensor(heatmaps):
            from ._heatmap_torch import decode_srpose_torch

            return decode_srpose_torch(heatmaps, cell=self.cell, post=self.refines(post))
        import numpy as np

        xy, score = decode_srpose_np(heatmaps, self.cell, self.refines(post))
        return np.concatenate([xy, score], axis=-1)

    def decode_module(self, *, post: bool = True) -> Any:
        from ._heatmap_torch import SRPoseDecode

        w, h = self.heatmap_size
        try:
            cell_grid(h, w, self.cell)
        except ValueError:
            raise ValueError(f"heatmaps of {w}x{h} hold no whole {self.cell}x{self.cell} SRPose cell; use a larger "
                             "--input-size or export without --decode") from None
        return SRPoseDecode(self.refines(post), self.cell)
