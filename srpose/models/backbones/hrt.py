"""HRFormer backbone (``HRT``) as defined in SRPose's mmpose fork, in plain PyTorch.

Module and parameter names match the official implementation key for key, so official checkpoints
(including the unused ``relative_position_bias_table``/``relative_position_index`` entries) load with
``strict=True``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._hrt_modules import Bottleneck, GeneralTransformerBlock, build_norm, spatial_size

__all__ = ["HRT", "HighResolutionTransformerModule"]

_STAGE_KEYS = ("num_modules", "num_branches", "block", "num_blocks", "num_channels")
_TRANSFORMER_KEYS = ("num_heads", "num_window_sizes", "num_mlp_ratios")


class HighResolutionTransformerModule(nn.Module):
    """One HRFormer module: parallel transformer branches followed by HRNet-style multi-resolution fusion.

    With ``multiscale_output=False`` only the fuse layers producing branch 0 exist and one tensor is returned.
    """

    def __init__(
        self,
        num_branches: int,
        num_blocks: Sequence[int],
        in_channels: Sequence[int],
        num_channels: Sequence[int],
        multiscale_output: bool,
        norm_cfg: Optional[dict],
        num_heads: Sequence[int],
        num_window_sizes: Sequence[int],
        num_mlp_ratios: Sequence[float],
        drop_paths: Sequence[float],
    ) -> None:
        super().__init__()
        for name, seq in (("num_blocks", num_blocks), ("num_channels", num_channels), ("in_channels", in_channels),
                          ("num_heads", num_heads), ("num_window_sizes", num_window_sizes),
                          ("num_mlp_ratios", num_mlp_ratios)):
            if len(seq) != num_branches:
                raise ValueError(f"num_branches is {num_branches} but {name} has {len(seq)} entries: {list(seq)}")
        if list(in_channels) != list(num_channels):
            raise ValueError(f"in_channels {list(in_channels)} must equal num_channels {list(num_channels)}")
        self.num_branches = num_branches
        self.in_channels = list(num_channels)
        self.multiscale_output = multiscale_output
        self.norm_cfg = norm_cfg
        self.branches = nn.ModuleList(
            nn.Sequential(*[
                GeneralTransformerBlock(
                    num_channels[b], num_channels[b], num_heads=num_heads[b], window_size=num_window_sizes[b],
                    mlp_ratio=num_mlp_ratios[b], drop_path=drop_paths[k], norm_cfg=norm_cfg,
                )
                for k in range(num_blocks[b])
            ])
            for b in range(num_branches)
        )
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self) -> Optional[nn.ModuleList]:
        if self.num_branches == 1:
            return None
        ch = self.in_channels
        fuse_layers = []
        for i in range(self.num_branches if self.multiscale_output else 1):
            row: List[Optional[nn.Module]] = []
            for j in range(self.num_branches):
                if j > i:
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, bias=False),
                        build_norm(self.norm_cfg, ch[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="bilinear", align_corners=False),
                    ))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_ch = ch[i] if last else ch[j]
                        layers = [
                            nn.Conv2d(ch[j], ch[j], 3, stride=2, padding=1, groups=ch[j], bias=False),
                            build_norm(self.norm_cfg, ch[j]),
                            nn.Conv2d(ch[j], out_ch, 1, bias=False),
                            build_norm(self.norm_cfg, out_ch),
                        ]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        """Run branches then fuse; returns ``num_branches`` maps (or 1 without multiscale output)."""
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(t) for branch, t in zip(self.branches, x)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = x[0] if i == 0 else row[0](x[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + x[j]
                elif j > i:
                    z = row[j](x[j])
                    size = spatial_size(x[i])
                    if spatial_size(z) != size:  # sizes not a power-of-2 multiple: second resize, as mmpose does
                        z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
                    y = y + z
                else:
                    y = y + row[j](x[j])
            out.append(self.relu(y))
        return out


class HRT(nn.Module):
    """HRFormer backbone (official SRPose ``HRT``).

    Args:
        extra: mmpose-style ``extra`` dict with ``drop_path_rate`` and ``stage1``..``stage4``; ``stage4`` may set
            ``multiscale_output`` (default False: a single stride-4 map is returned).
        in_channels: input image channels.
        norm_cfg: mmcv-style norm config (``BN``/``SyncBN`` both become ``nn.BatchNorm2d``); default BN.
        norm_eval: keep BN layers in eval mode while training.
        zero_init_residual: zero ``bn3`` of the bottlenecks in :meth:`init_weights`.
        **ignored: other official arguments (``conv_cfg``, ``with_cp``) accepted and ignored.

    ``forward(x)`` returns a list of feature maps: ``[N, C0, H/4, W/4]`` or, with ``multiscale_output``, the four
    maps at strides 4, 8, 16, 32.
    """

    def __init__(
        self,
        extra: dict,
        in_channels: int = 3,
        norm_cfg: Optional[dict] = None,
        norm_eval: bool = False,
        zero_init_residual: bool = False,
        **ignored: object,
    ) -> None:
        super().__init__()
        if ignored.get("conv_cfg") is not None:
            raise ValueError(f"conv_cfg {ignored['conv_cfg']!r} is not supported; only plain Conv2d (conv_cfg=None)")
        self.extra = extra
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self._check_extra(extra)

        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = build_norm(norm_cfg, 64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = build_norm(norm_cfg, 64)
        self.relu = nn.ReLU(inplace=True)

        depths = [extra[s]["num_blocks"][0] * extra[s]["num_modules"] for s in ("stage2", "stage3", "stage4")]
        dpr = [v.item() for v in torch.linspace(0, float(extra.get("drop_path_rate", 0.0)), sum(depths))]
        starts = [0, depths[0], depths[0] + depths[1], sum(depths)]

        self.stage1_cfg = extra["stage1"]
        planes = self.stage1_cfg["num_channels"][0]
        self.layer1 = self._make_layer(64, planes, self.stage1_cfg["num_blocks"][0])
        pre_channels = [planes * Bottleneck.expansion]

        for idx, (name, tname) in enumerate((("stage2", "transition1"), ("stage3", "transition2"),
                                              ("stage4", "transition3"))):
            cfg = extra[name]
            setattr(self, f"{name}_cfg", cfg)
            channels = list(cfg["num_channels"])
            setattr(self, tname, self._make_transition_layer(pre_channels, channels))
            multiscale = cfg.get("multiscale_output", False) if name == "stage4" else True
            stage = self._make_stage(cfg, channels, multiscale, dpr[starts[idx]:starts[idx + 1]])
            setattr(self, name, stage)
            pre_channels = channels

    @staticmethod
    def _check_extra(extra: dict) -> None:
        if not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict with stage1..stage4, got {type(extra).__name__}")
        for s in ("stage1", "stage2", "stage3", "stage4"):
            if s not in extra:
                raise ValueError(f"extra is missing {s!r}; expected keys stage1..stage4 (and drop_path_rate)")
            keys = _STAGE_KEYS + (_TRANSFORMER_KEYS if s != "stage1" else ())
            missing = [k for k in keys if k not in extra[s]]
            if missing:
                raise ValueError(f"extra[{s!r}] is missing {missing}")
            want = "BOTTLENECK" if s == "stage1" else "TRANSFORMER_BLOCK"
            if extra[s]["block"] != want:
                raise ValueError(f"extra[{s!r}]['block'] is {extra[s]['block']!r}; the official HRT only works "
                                 f"with {want!r} there")
        for prev, cur in (("stage2", "stage3"), ("stage3", "stage4")):
            if extra[cur]["num_branches"] < extra[prev]["num_branches"]:
                raise ValueError(f"{cur} has fewer branches than {prev}")

    def _make_transition_layer(self, pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        layers: List[Optional[nn.Module]] = []
        for i in range(len(cur)):
            if i < len(pre):
                if cur[i] != pre[i]:
                    layers.append(nn.Sequential(
                        nn.Conv2d(pre[i], cur[i], 3, padding=1, bias=False),
                        build_norm(self.norm_cfg, cur[i]),
                        nn.ReLU(inplace=True),
                    ))
                else:
                    layers.append(None)
            else:
                steps = []
                for j in range(i + 1 - len(pre)):
                    out_ch = cur[i] if j == i - len(pre) else pre[-1]
                    steps.append(nn.Sequential(
                        nn.Conv2d(pre[-1], out_ch, 3, stride=2, padding=1, bias=False),
                        build_norm(self.norm_cfg, out_ch),
                        nn.ReLU(inplace=True),
                    ))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def _make_layer(self, inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        downsample = None
        if inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, bias=False),
                build_norm(self.norm_cfg, planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(inplanes, planes, downsample=downsample, norm_cfg=self.norm_cfg)]
        layers += [Bottleneck(planes * Bottleneck.expansion, planes, norm_cfg=self.norm_cfg) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _make_stage(self, cfg: dict, in_channels: List[int], multiscale_output: bool,
                    drop_paths: Sequence[float]) -> nn.Sequential:
        n = cfg["num_blocks"][0]
        modules = []
        for i in range(cfg["num_modules"]):
            modules.append(HighResolutionTransformerModule(
                cfg["num_branches"], cfg["num_blocks"], in_channels, cfg["num_channels"],
                multiscale_output or i != cfg["num_modules"] - 1, self.norm_cfg,
                cfg["num_heads"], cfg["num_window_sizes"], cfg["num_mlp_ratios"], drop_paths[n * i:n * (i + 1)],
            ))
        return nn.Sequential(*modules)

    def init_weights(self) -> None:
        """Random init as the official ``init_weights(pretrained=None)``: convs N(0, 0.001), BN weight 1 bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                    nn.init.zeros_(m.bn3.bias)

    @staticmethod
    def _transit(transition: nn.ModuleList, y: List[Tensor], num_branches: int) -> List[Tensor]:
        out = []
        for i in range(num_branches):
            if transition[i] is None:
                out.append(y[i])
            else:
                out.append(transition[i](y[-1]))  # official: every new/changed branch reads the last map
        return out

    def forward(self, x: Tensor) -> List[Tensor]:
        """Image batch (N, C, H, W) -> list of multi-resolution feature maps."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        y = [self.layer1(x)]
        y = self.stage2(self._transit(self.transition1, y, self.stage2_cfg["num_branches"]))
        y = self.stage3(self._transit(self.transition2, y, self.stage3_cfg["num_branches"]))
        y = self.stage4(self._transit(self.transition3, y, self.stage4_cfg["num_branches"]))
        return y

    def train(self, mode: bool = True) -> "HRT":
        """Set train mode, keeping BN layers in eval mode when ``norm_eval`` is set."""
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
