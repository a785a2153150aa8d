"""The module an exported graph is traced from: the model plus the optional in-graph flip test and decoder.

Node names are scoped by attribute: ``/model/backbone/...``, ``/model/keypoint_head/...``, ``/flip_merge/...``,
``/decode/...`` (the FP16 float32 islands and INT8 exclusions match on them).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["GraphWrapper"]


class GraphWrapper(nn.Module):
    """``model`` with the flip test folded in when asked: the batch is doubled with its mirror image (a constant
    index Gather for inputs of static ``flip_width``, ``flip`` for dynamic widths), the model runs once, and
    ``flip_merge`` (top-down) or ``decode`` (bottom-up: merges the halves itself) combines the halves; ``decode``
    then turns maps into keypoints / candidates."""

    def __init__(self, model: nn.Module, *, flip_width: int | None = None, flip_dynamic: bool = False,
                 flip_merge: nn.Module | None = None, decode: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.flip_width = flip_width
        self.flip_dynamic = bool(flip_dynamic)
        if flip_width is not None:
            self.register_buffer("rev_w", torch.arange(int(flip_width) - 1, -1, -1, dtype=torch.int64),
                                 persistent=False)
        self.flip_merge = flip_merge
        self.decode = decode

    def forward(self, x: torch.Tensor) -> Any:
        if self.flip_width is not None:
            x = torch.cat([x, x.index_select(3, self.rev_w)], dim=0)
        elif self.flip_dynamic:
            x = torch.cat([x, torch.flip(x, [3])], dim=0)
        y = self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[-1]
        if self.flip_merge is not None:
            y = self.flip_merge(y)
        if self.decode is not None:
            y = self.decode(y)
        return y
