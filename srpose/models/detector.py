"""The detectors: a backbone and a keypoint head, with the official parameter prefixes."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from srpose.config import PoseConfig


class TopDown(nn.Module):
    """``backbone.*`` + ``keypoint_head.*``, as mmpose's ``TopDown`` / SRPose's ``TopDownHigher``.

    ``forward(img)`` returns N x K x H x W heatmaps in eval mode and, in training mode, the list of every supervised
    stage's heatmaps (a one-element list for single-output heads).
    """

    def __init__(self, backbone: nn.Module, keypoint_head: nn.Module, cfg: "PoseConfig | None" = None):
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = keypoint_head
        self.cfg = cfg

    def forward(self, img: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.keypoint_head(self.backbone(img))
        if self.training and isinstance(out, torch.Tensor):
            return [out]
        return out

    def init_weights(self) -> None:
        """Initialise backbone and head as mmpose does without pretrained weights."""
        for m in (self.backbone, self.keypoint_head):
            if hasattr(m, "init_weights"):
                m.init_weights()


class BottomUp(TopDown):
    """``backbone.*`` + ``keypoint_head.*`` as mmpose's ``BottomUp`` / ``AssociativeEmbedding``.

    ``forward(img)`` returns N x (K + L) x H x W (heatmaps, then tag maps) in eval mode and a one-element list in
    training mode. Inputs of any height and width divisible by 32 work (the bottom-up resize gives multiples of 64).
    """
