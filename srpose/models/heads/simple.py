"""The SimpleBaseline deconvolution head (mmpose 0.x ``TopDownSimpleHead``) and the lightweight SR head."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_DECONV_CFG = {4: (1, 0), 3: (1, 1), 2: (0, 0)}  # kernel -> (padding, output_padding)


def _select_input(x: Any, in_index: int) -> torch.Tensor:
    # mmpose selects one feature map when the backbone returns a list (HRNet); a tuple (ResNet) passes through.
    if isinstance(x, list):
        return x[in_index]
    if isinstance(x, tuple):
        return x[-1]
    return x


def init_normal(module: nn.Module, std: float = 0.001) -> None:
    """mmpose's head initialisation: (transposed) convs N(0, std) with zero bias, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_deconv_layers(in_channels: int, num_filters: Sequence[int], num_kernels: Sequence[int]) -> nn.Sequential:
    """Stride-2 ConvTranspose2d + BN + ReLU blocks, indexed like mmpose's ``deconv_layers``."""
    if len(num_filters) != len(num_kernels):
        raise ValueError(f"num_deconv_filters {tuple(num_filters)} and num_deconv_kernels {tuple(num_kernels)} "
                         "must have the same length")
    layers: list[nn.Module] = []
    for planes, kernel in zip(num_filters, num_kernels):
        if kernel not in _DECONV_CFG:
            raise ValueError(f"deconv kernel {kernel} is not supported: use 2, 3 or 4")
        padding, output_padding = _DECONV_CFG[kernel]
        layers += [nn.ConvTranspose2d(in_channels, planes, kernel, stride=2, padding=padding,
                                      output_padding=output_padding, bias=False),
                   nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
        in_channels = planes
    return nn.Sequential(*layers)


class TopDownSimpleHead(nn.Module):
    """Deconvolution layers followed by a conv to one heatmap per joint (1/4 input resolution for ResNet)."""

    def __init__(self, in_channels: int, out_channels: int, num_deconv_layers: int = 3,
                 num_deconv_filters: Sequence[int] = (256, 256, 256), num_deconv_kernels: Sequence[int] = (4, 4, 4),
                 extra: dict | None = None, in_index: int = 0, **ignored: Any):
        super().__init__()
        if num_deconv_layers < 0:
            raise ValueError(f"num_deconv_layers ({num_deconv_layers}) must be >= 0")
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        self.in_channels = in_channels
        self.in_index = in_index
        if num_deconv_layers > 0:
            self.deconv_layers = make_deconv_layers(in_channels, num_deconv_filters[:num_deconv_layers],
                                                    num_deconv_kernels[:num_deconv_layers])
            conv_channels = num_deconv_filters[num_deconv_layers - 1]
        else:
            self.deconv_layers = nn.Identity()
            conv_channels = in_channels
        extra = extra or {}
        kernel = extra.get("final_conv_kernel", 1)
        if kernel not in (0, 1, 3):
            raise ValueError(f"extra.final_conv_kernel={kernel} is not supported: use 0, 1 or 3")
        if kernel == 0:
            self.final_layer: nn.Module = nn.Identity()
        else:
            layers: list[nn.Module] = []
            convs = extra.get("num_conv_layers", 0)
            kernels = extra.get("num_conv_kernels", [1] * convs)
            for k in kernels[:convs]:
                layers += [nn.Conv2d(conv_channels, conv_channels, k, 1, (k - 1) // 2),
                           nn.BatchNorm2d(conv_channels), nn.ReLU(inplace=True)]
            layers.append(nn.Conv2d(conv_channels, out_channels, kernel, 1, 1 if kernel == 3 else 0))
            self.final_layer = nn.Sequential(*layers) if len(layers) > 1 else layers[0]

    def forward(self, x: Any) -> torch.Tensor:
        x = _select_input(x, self.in_index)
        return self.final_layer(self.deconv_layers(x))

    def init_weights(self) -> None:
        """mmpose initialisation: deconvs N(0, 0.001), BN 1/0, final conv N(0, 0.001) with zero bias."""
        init_normal(self)


class TopDownSimpleSRHead(nn.Module):
    """Lightweight SR head: deconv layers, a 1x1 keypoint encoder (``per_kp_emb`` channels per joint), a
    joint-grouped 9x9 conv to ``pixel_shuffle**2`` channels per joint and pixel shuffle to full resolution.

    Parameter names follow the official bottom-up ``BottomUpSimpleSRHead`` (without its tag head).
    """

    def __init__(self, in_channels: int, out_channels: int, num_deconv_layers: int = 3,
                 num_deconv_filters: Sequence[int] = (256, 256, 256), num_deconv_kernels: Sequence[int] = (4, 4, 4),
                 per_kp_emb: int = 4, pixel_shuffle: int = 4, heatmap_kernel: int = 9, in_index: int = 0,
                 **ignored: Any):
        super().__init__()
        self.in_index = in_index
        self.pixel_shuffle = pixel_shuffle
        if num_deconv_layers > 0:
            self.deconv_layers = make_deconv_layers(in_channels, num_deconv_filters[:num_deconv_layers],
                                                    num_deconv_kernels[:num_deconv_layers])
            feat = num_deconv_filters[num_deconv_layers - 1]
        else:
            self.deconv_layers = nn.Identity()
            feat = in_channels
        self.kp_encoder = nn.Sequential(nn.Conv2d(feat, out_channels * per_kp_emb, 1), nn.ReLU())
        self.heatmap_head = nn.Conv2d(out_channels * per_kp_emb, out_channels * pixel_shuffle ** 2, heatmap_kernel,
                                      1, heatmap_kernel // 2, groups=out_channels)

    def forward(self, x: Any) -> torch.Tensor:
        x = self.deconv_layers(_select_input(x, self.in_index))
        return F.pixel_shuffle(self.heatmap_head(self.kp_encoder(x)), self.pixel_shuffle)

    def init_weights(self) -> None:
        """N(0, 0.001) convs with zero bias, BN 1/0 (as the official SR head)."""
        TopDownSimpleHead.init_weights(self)  # type: ignore[arg-type]
