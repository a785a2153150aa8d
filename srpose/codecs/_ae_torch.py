"""Associative-embedding tensor steps in torch (host side and in the exported graph): flip merge, projection to
the input size, heatmap NMS by max pooling and top-k candidates, as mmpose 0.x ``get_multi_stage_outputs``,
``aggregate_results`` and ``HeatmapParser.top_k`` compute them for one scale and one output stage.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["to_tensor", "merge_outputs", "heatmap_nms", "top_k", "pack_candidates", "BottomUpDecode"]


def to_tensor(a: Any) -> torch.Tensor:
    """``a`` (numpy or tensor) as a float32 CPU tensor."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def merge_outputs(output: torch.Tensor, output_flipped: torch.Tensor | None, num_joints: int,
                  flip_index: Sequence[int], *, size: tuple[int, int] | None = None, tag_per_joint: bool = True,
                  align_corners: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps N x K x H x W and tags N x K' x H x W x L of the raw head outputs (N x (K + K') x h x w), the
    mirrored pass flipped back (joint channels, and tag channels with ``tag_per_joint``), both bilinearly resized
    to ``size`` = (H, W) (mmpose ``project2image``; None keeps the output size), heatmaps averaged, tags stacked
    (L = 2 with the flipped pass, else 1)."""
    k = int(num_joints)

    def project(t: torch.Tensor) -> torch.Tensor:
        if size is None or tuple(t.shape[2:]) == tuple(size):  # same-size bilinear is the identity
            return t
        return F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)

    heatmaps = [project(output[:, :k])]
    tags = [project(output[:, k:])]
    if output_flipped is not None:
        perm = torch.as_tensor(list(flip_index), dtype=torch.long, device=output.device)
        flipped = torch.flip(output_flipped, [3])
        heatmaps.append(project(flipped[:, :k].index_select(1, perm)))
        tag_f = flipped[:, k:]
        tags.append(project(tag_f.index_select(1, perm) if tag_per_joint else tag_f))
    hm = (heatmaps[0] + heatmaps[1]) / 2.0 if len(heatmaps) == 2 else heatmaps[0]
    return hm, torch.stack(tags, dim=4)


def heatmap_nms(heatmaps: torch.Tensor, kernel: int = 5, padding: int | None = None) -> torch.Tensor:
    """Keep the values equal to their ``kernel`` x ``kernel`` neighbourhood maximum, zero elsewhere.

    The square max pool of mmpose is computed as a row pass and a column pass: the same maxima, far fewer
    comparisons for the 11 x 11 kernel.
    """
    padding = (kernel - 1) // 2 if padding is None else padding
    maxm = F.max_pool2d(heatmaps, (1, kernel), 1, (0, padding))
    maxm = F.max_pool2d(maxm, (kernel, 1), 1, (padding, 0))
    return heatmaps * torch.eq(maxm, heatmaps).to(heatmaps.dtype)


def top_k(heatmaps: torch.Tensor, tags: torch.Tensor, max_num_people: int, kernel: int = 5,
          padding: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tag_k N x K x M x L, loc_k N x K x M x 2 integer (x, y), val_k N x K x M) of the ``max_num_people``
    highest NMS peaks of each joint heatmap. ``tags`` is N x K x H x W x L, or N x 1 x H x W x L (shared tags)."""
    nmsed = heatmap_nms(heatmaps, kernel, padding)
    n, k, h, w = heatmaps.shape
    val_k, ind = nmsed.reshape(n, k, h * w).topk(max_num_people, dim=2)
    flat = tags.reshape(tags.shape[0], tags.shape[1], h * w, tags.shape[-1])
    if flat.shape[1] != k:
        flat = flat.expand(-1, k, -1, -1)
    tag_k = torch.gather(flat, 2, ind.unsqueeze(-1).expand(-1, -1, -1, flat.shape[-1]))
    y = torch.div(ind, w, rounding_mode="trunc")  # non-negative: trunc is floor, and exports without Mod
    x = ind - y * w
    return tag_k, torch.stack((x, y), dim=3), val_k


def pack_candidates(tag_k: torch.Tensor, loc_k: torch.Tensor, val_k: torch.Tensor) -> torch.Tensor:
    """One N x K x M x (3 + L) float tensor (x, y, value, tags)."""
    return torch.cat([loc_k.to(val_k.dtype), val_k.unsqueeze(-1), tag_k.to(val_k.dtype)], dim=3)


class BottomUpDecode(nn.Module):
    """The in-graph part of bottom-up decoding: flip merge (when the batch is doubled), projection to the input
    size, heatmap NMS and top-k. Outputs (heatmaps N x K x H x W, tags N x K' x H x W x L, candidates
    N x K x M x (3 + L)); grouping stays on the host.

    ``upsample`` is the input-to-output stride of the model (4 for the simple head, 1 for the SR head), so the
    projection is a fixed-factor resize whatever the input size.
    """

    def __init__(self, num_joints: int, flip_index: Sequence[int] | None, *, upsample: int, max_num_people: int,
                 nms_kernel: int, nms_padding: int | None = None, tag_per_joint: bool = True):
        super().__init__()
        self.k = int(num_joints)
        self.flip = flip_index is not None
        perm = list(flip_index) if flip_index is not None else list(range(self.k))
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.int64), persistent=False)
        self.upsample = int(upsample)
        self.m = int(max_num_people)
        self.kernel = int(nms_kernel)
        self.padding = (self.kernel - 1) // 2 if nms_padding is None else int(nms_padding)
        self.tag_per_joint = bool(tag_per_joint)

    def _project(self, t: torch.Tensor) -> torch.Tensor:
        if self.upsample == 1:
            return t
        return F.interpolate(t, scale_factor=float(self.upsample), mode="bilinear", align_corners=False)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.k
        if self.flip:
            y = y.reshape(2, -1, y.shape[1], y.shape[2], y.shape[3])
            first, mirrored = y[0], torch.flip(y[1], [3])
            hm = (self._project(first[:, :k]) + self._project(mirrored[:, :k].index_select(1, self.perm))) / 2.0
            tag_f = mirrored[:, k:].index_select(1, self.perm) if self.tag_per_joint else mirrored[:, k:]
            tags = torch.stack([self._project(first[:, k:]), self._project(tag_f)], dim=4)
        else:
            hm = self._project(y[:, :k])
            tags = self._project(y[:, k:]).unsqueeze(4)
        tag_k, loc_k, val_k = top_k(hm, tags, self.m, self.kernel, self.padding)
        return hm, tags, pack_candidates(tag_k, loc_k, val_k)
