"""ResNet backbone with mmpose 0.x module names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), in plain PyTorch."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from torch import Tensor, nn

from ._blocks import (
    BasicBlock,
    BlockType,
    Bottleneck,
    ConvBNReLU,
    build_bn,
    check_conv_cfg,
    constant_init_,
    get_expansion,
    is_norm,
    kaiming_init_,
    load_pretrained,
    make_downsample,
    warn_ignored,
)

__all__ = ["ResNet", "make_res_layer"]


def make_res_layer(
    block: BlockType,
    num_blocks: int,
    in_channels: int,
    out_channels: int,
    expansion: Optional[int] = None,
    stride: int = 1,
    dilation: int = 1,
    style: str = "pytorch",
    avg_down: bool = False,
    with_cp: bool = False,
    norm_cfg: Optional[dict] = None,
) -> nn.Sequential:
    """A ResNet stage (mmpose ``ResLayer``): the first block strides and projects the shortcut when needed."""
    expansion = get_expansion(block, expansion)
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = make_downsample(in_channels, out_channels, stride, avg_down, norm_cfg)
    common = dict(expansion=expansion, dilation=dilation, style=style, with_cp=with_cp, norm_cfg=norm_cfg)
    layers = [block(in_channels, out_channels, stride=stride, downsample=downsample, **common)]
    layers += [block(out_channels, out_channels, stride=1, **common) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet-18/34/50/101/152 as in mmpose 0.x (no fc); returns one tensor for one out index, else a tuple."""

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(
        self,
        depth: int,
        in_channels: int = 3,
        stem_channels: int = 64,
        base_channels: int = 64,
        expansion: Optional[int] = None,
        num_stages: int = 4,
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (3,),
        style: str = "pytorch",
        deep_stem: bool = False,
        avg_down: bool = False,
        frozen_stages: int = -1,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        norm_eval: bool = False,
        with_cp: bool = False,
        zero_init_residual: bool = True,
        **ignored: object,
    ) -> None:
        super().__init__()
        warn_ignored("ResNet", ignored)
        out_indices = tuple(out_indices)
        self._check(depth, num_stages, strides, dilations, out_indices, style, conv_cfg, norm_cfg)
        self.depth = depth
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.out_indices = out_indices
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.frozen_stages = frozen_stages
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]
        self.expansion = get_expansion(self.block, expansion)

        self._make_stem(in_channels, stem_channels, deep_stem, norm_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._make_layers(stem_channels, base_channels * self.expansion)
        self.feat_dim = self.out_channels[-1]
        self._freeze_stages()

    def _check(self, depth: int, num_stages: int, strides: Sequence[int], dilations: Sequence[int],
               out_indices: tuple[int, ...], style: str, conv_cfg: Optional[dict], norm_cfg: Optional[dict]) -> None:
        """ValueError naming the bad argument and its accepted values."""
        if depth not in self.arch_settings:
            raise ValueError(f"invalid ResNet depth {depth!r}; use one of {sorted(self.arch_settings)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(
                f"strides {tuple(strides)} and dilations {tuple(dilations)} must both have num_stages={num_stages} "
                "entries"
            )
        if not out_indices or min(out_indices) < 0 or max(out_indices) >= num_stages:
            raise ValueError(f"out_indices {out_indices} must be non-empty and within 0..{num_stages - 1}")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        check_conv_cfg(conv_cfg)
        build_bn(norm_cfg, 1)  # validate norm_cfg early with a clear error

    def _make_stem(self, in_channels: int, stem_channels: int, deep_stem: bool, norm_cfg: Optional[dict]) -> None:
        """``stem`` (three 3x3 convs) or ``conv1`` / ``bn1`` / ``relu`` (one 7x7 conv), as the official keys."""
        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                ConvBNReLU(in_channels, half, 3, stride=2, padding=1, norm_cfg=norm_cfg),
                ConvBNReLU(half, half, 3, stride=1, padding=1, norm_cfg=norm_cfg),
                ConvBNReLU(half, stem_channels, 3, stride=1, padding=1, norm_cfg=norm_cfg),
            )
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = build_bn(norm_cfg, stem_channels)
            self.relu = nn.ReLU(inplace=True)

    def _make_layers(self, in_ch: int, out_ch: int) -> None:
        """``layer1`` ... ``layerN``: the residual stages."""
        self.res_layers = []
        self.out_channels = []
        for i, num_blocks in enumerate(self.stage_blocks):
            layer = make_res_layer(
                self.block, num_blocks, in_ch, out_ch, expansion=self.expansion, stride=self.strides[i],
                dilation=self.dilations[i], style=self.style, avg_down=self.avg_down, with_cp=self.with_cp,
                norm_cfg=self.norm_cfg,
            )
            name = f"layer{i + 1}"
            self.add_module(name, layer)
            self.res_layers.append(name)
            self.out_channels.append(out_ch)
            in_ch, out_ch = out_ch, out_ch * 2

    @property
    def norm1(self) -> nn.BatchNorm2d:
        """Stem norm layer (mmpose alias of ``bn1``)."""
        return self.bn1

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            stem = [self.stem] if self.deep_stem else [self.conv1, self.bn1]
            for m in stem:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            m = getattr(self, f"layer{i}")
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def init_weights(self, pretrained: Optional[str] = None) -> None:
        """Load ``pretrained`` non-strictly, or (None) kaiming convs, BN = 1/0, last BN of each block 0."""
        if pretrained is not None:
            load_pretrained(self, pretrained)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init_(m)
            elif is_norm(m):
                constant_init_(m, 1)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    constant_init_(m.last_norm, 0)

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        """Features of the ``out_indices`` stages (a tensor if one, else a tuple)."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def train(self, mode: bool = True) -> "ResNet":
        """Set train mode, keeping frozen stages (and all BN if ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
