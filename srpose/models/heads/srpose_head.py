"""The multi-stage SRPose head (official ``TopDownSRPoseHead``)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvergeHead(nn.Module):
    """Joint-grouped conv to ``up_ratio**2`` channels per joint, then pixel shuffle."""

    def __init__(self, in_dim: int, up_ratio: int, kernel_size: int, padding: int, num_joints: int):
        super().__init__()
        self.in_dim, self.up_ratio, self.num_joints = in_dim, up_ratio, num_joints
        self.conv = nn.Conv2d(in_dim * num_joints, up_ratio ** 2 * num_joints, kernel_size, 1, padding, 1, num_joints)
        nn.init.normal_(self.conv.weight, std=0.001)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.up_ratio)


class ConvBlock(nn.Module):
    """ConvNeXt-style block: 7x7 depthwise conv, BN, pointwise MLP (Linear-GELU-Linear), residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y))).permute(0, 3, 1, 2)
        return x + y


class TopDownSRPoseHead(nn.Module):
    """Coarse-to-fine SR head: a low-resolution heatmap stage, then fused stages whose keypoint embeddings are
    super-resolved by :class:`ConvergeHead`. Training returns every supervised stage's heatmaps (the first at the
    coarsest feature resolution); eval only the final full-resolution heatmaps."""

    def __init__(self, in_channels: Sequence[int] = (2048, 1024, 512, 256),
                 out_channels: Sequence[int] = (256, 128, 64, 32), num_joints: int = 17,
                 upsample_log: Sequence[int] = (3, 2, 1, 2), per_emb_nums: Sequence[int] = (16, 8, 4, 4),
                 supervises: Sequence[bool] = (True, True, True, True), **ignored: Any):
        super().__init__()
        n = len(out_channels)
        for name, seq in (("in_channels", in_channels), ("upsample_log", upsample_log),
                          ("per_emb_nums", per_emb_nums), ("supervises", supervises)):
            if len(seq) != n:
                raise ValueError(f"TopDownSRPoseHead: {name} has {len(seq)} entries, out_channels has {n}")
        if not supervises[-1]:
            raise ValueError("TopDownSRPoseHead: the last stage must be supervised (it produces the output)")
        self.in_channels, self.out_channels = list(in_channels), list(out_channels)
        self.num_joints, self.upsample_log, self.supervises = num_joints, list(upsample_log), list(supervises)
        self.lr_head = nn.Sequential(nn.Conv2d(in_channels[0], num_joints, 1), nn.ReLU())
        self.lr_fuse = nn.Sequential(nn.Conv2d(num_joints, out_channels[0], 1), nn.ReLU())
        self.pre_interpolate = nn.ModuleList([nn.Sequential(
            nn.Conv2d(out_channels[i - 1], out_channels[i - 1], 3, 1, 1, 1, out_channels[i - 1]),
            nn.Conv2d(out_channels[i - 1], out_channels[i], 1),
            nn.BatchNorm2d(out_channels[i]), nn.ReLU()) for i in range(1, n)])
        self.pre_fuse = nn.ModuleList([nn.Sequential(nn.Conv2d(i, o, 1), nn.BatchNorm2d(o), nn.ReLU())
                                       for i, o in zip(in_channels, out_channels)])
        self.fuse = nn.ModuleList([nn.Conv2d(2 * o, o, 1) for o in out_channels[1:]])
        self.post_fuse = nn.ModuleList([nn.Sequential(ConvBlock(o), ConvBlock(o)) for o in out_channels[1:]])
        self.kp_encoder = nn.ModuleList([
            nn.Sequential(nn.Conv2d(o, e * num_joints, 1), nn.ReLU()) if s else nn.Identity()
            for o, e, s in zip(out_channels, per_emb_nums, supervises)])
        # Kernel sizes 3, 5, 7, 9 from the coarsest to the finest stage, as in the official head.
        self.converge = nn.ModuleList([
            ConvergeHead(per_emb_nums[i], 2 ** upsample_log[i], 11 - 2 * (n - i), 5 - (n - i), num_joints)
            if supervises[i] else nn.Identity() for i in range(n)])

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        xs = list(xs)[::-1]
        if len(xs) != len(self.out_channels):
            raise ValueError(f"TopDownSRPoseHead expects {len(self.out_channels)} feature maps, got {len(xs)}")
        heatmaps: list[torch.Tensor] = []
        feat = xs[0]
        for i, x in enumerate(xs):
            if i == 0:
                hp = self.lr_head(x)
                heatmaps.append(hp)
                feat = self.pre_fuse[0](x) + self.lr_fuse(hp)
            else:
                feat = self.pre_interpolate[i - 1](feat)
                feat = F.interpolate(feat, x.shape[2:])  # nearest, as the official head
                feat = self.fuse[i - 1](torch.cat([feat, self.pre_fuse[i](x)], 1))
                feat = self.post_fuse[i - 1](feat)
            if self.training and self.supervises[i]:
                heatmaps.append(self.converge[i](self.kp_encoder[i](feat)))
        if self.training:
            return heatmaps
        return self.converge[-1](self.kp_encoder[-1](feat))

    def init_weights(self) -> None:
        """BN to 1/0; convergence convs N(0, 0.001) (set at construction), other layers keep PyTorch defaults."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
