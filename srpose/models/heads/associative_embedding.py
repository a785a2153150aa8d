"""Bottom-up (associative embedding) heads.

Parameter names follow the official checkpoints key for key: ``backbone.*`` and ``keypoint_head.*`` with
``deconv_layers`` / ``final_layer`` (mmpose 0.x ``BottomUpSimpleHead``, later ``AESimpleHead``) and
``deconv_layers`` / ``kp_encoder`` / ``heatmap_head`` / ``tag_head`` (SRPose ``BottomUpSimpleSRHead``).

Every head returns one tensor N x (K + L) x H x W: K joint heatmaps followed by the L tag maps (L = K with
``tag_per_joint``, else 1), as the first (only) element of mmpose's ``final_outputs``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from srpose.models.heads.simple import _select_input, init_normal, make_deconv_layers

__all__ = ["BottomUpSimpleHead", "BottomUpSimpleSRHead"]

def _ae_enabled(with_ae_loss: Sequence[bool] | None) -> bool:
    return True if with_ae_loss is None else bool(with_ae_loss[0])


def _deconvs(in_channels: int, num_deconv_layers: int, filters: Sequence[int],
             kernels: Sequence[int]) -> tuple[nn.Module, int]:
    if num_deconv_layers < 0:
        raise ValueError(f"num_deconv_layers ({num_deconv_layers}) must be >= 0")
    if num_deconv_layers == 0:
        return nn.Identity(), in_channels
    if len(filters) != num_deconv_layers or len(kernels) != num_deconv_layers:
        raise ValueError(f"num_deconv_layers={num_deconv_layers} but num_deconv_filters={tuple(filters)} and "
                         f"num_deconv_kernels={tuple(kernels)}: give one filter count and kernel per layer")
    return make_deconv_layers(in_channels, filters, kernels), int(filters[-1])


class BottomUpSimpleHead(nn.Module):
    """Deconvolution layers and one conv to K heatmaps + L tag maps (1/4 input resolution for ResNet)."""

    def __init__(self, in_channels: int, num_joints: int, num_deconv_layers: int = 3,
                 num_deconv_filters: Sequence[int] = (256, 256, 256), num_deconv_kernels: Sequence[int] = (4, 4, 4),
                 tag_per_joint: bool = True, with_ae_loss: Sequence[bool] | None = (True,),
                 extra: dict | None = None, **ignored: Any):
        super().__init__()
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        self.num_joints = int(num_joints)
        self.dim_tag = (self.num_joints if tag_per_joint else 1) if _ae_enabled(with_ae_loss) else 0
        self.deconv_layers, feat = _deconvs(in_channels, num_deconv_layers, num_deconv_filters, num_deconv_kernels)
        kernel = (extra or {}).get("final_conv_kernel", 1)
        if kernel not in (1, 3):
            raise ValueError(f"extra.final_conv_kernel={kernel} is not supported by BottomUpSimpleHead: use 1 or 3")
        self.final_layer = nn.Conv2d(feat, self.num_joints + self.dim_tag, kernel, 1, 1 if kernel == 3 else 0)

    def forward(self, x: Any) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(_select_input(x, 0)))

    def init_weights(self) -> None:
        """mmpose initialisation: convs N(0, 0.001) with zero bias, BN 1/0."""
        init_normal(self)


class BottomUpSimpleSRHead(nn.Module):
    """SRPose's bottom-up SR head: deconvs, a 1x1 keypoint encoder (``per_kp_emb`` channels per joint), a
    joint-grouped 9x9 conv to ``pixel_shuffle**2`` channels per joint and pixel shuffle for the heatmaps; a 1x1
    tag conv on the deconv features, upsampled (nearest) to the heatmap size."""

    def __init__(self, in_channels: int, num_joints: int, num_deconv_layers: int = 3,
                 num_deconv_filters: Sequence[int] = (256, 256, 256), num_deconv_kernels: Sequence[int] = (4, 4, 4),
                 tag_per_joint: bool = True, with_ae_loss: Sequence[bool] | None = (True,), extra: dict | None = None,
                 per_kp_emb: int = 4, pixel_shuffle: int = 1, **ignored: Any):
        super().__init__()
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        if pixel_shuffle < 1 or per_kp_emb < 1:
            raise ValueError(f"pixel_shuffle ({pixel_shuffle}) and per_kp_emb ({per_kp_emb}) must be >= 1")
        self.num_joints = int(num_joints)
        self.pixel_shuffle = int(pixel_shuffle)
        self.deconv_layers, feat = _deconvs(in_channels, num_deconv_layers, num_deconv_filters, num_deconv_kernels)
        k = self.num_joints
        self.kp_encoder = nn.Sequential(nn.Conv2d(feat, k * per_kp_emb, 1), nn.ReLU())
        self.heatmap_head = nn.Conv2d(k * per_kp_emb, k * self.pixel_shuffle ** 2, 9, 1, 4, groups=k)
        self.dim_tag = (k if tag_per_joint else 1) if _ae_enabled(with_ae_loss) else 0
        if self.dim_tag:
            self.tag_head = nn.Conv2d(feat, self.dim_tag, 1)

    def forward(self, x: Any) -> torch.Tensor:
        x = self.deconv_layers(_select_input(x, 0))
        hp = F.pixel_shuffle(self.heatmap_head(self.kp_encoder(x)), self.pixel_shuffle)
        if not self.dim_tag:
            return hp
        tag = self.tag_head(x)
        if self.pixel_shuffle != 1:  # nearest, integer factor: same as mmpose's interpolate(tag, hp.shape[2:])
            tag = F.interpolate(tag, scale_factor=float(self.pixel_shuffle), mode="nearest")
        return torch.cat([hp, tag], 1)

    def init_weights(self) -> None:
        """mmpose initialisation: convs N(0, 0.001) with zero bias, BN 1/0."""
        init_normal(self)
