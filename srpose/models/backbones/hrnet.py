"""HRNet backbone with mmpose 0.x module names, in plain PyTorch.

``extra['stage4']['multiscale_output']`` (default False) decides whether the last stage-4 module fuses and returns
all four branches or only branch 0; with False the fuse layers producing branches 1-3 do not exist (HRNet-W32:
28.54M parameters, versus 29.30M with True).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ._blocks import (
    BasicBlock,
    BlockType,
    Bottleneck,
    build_bn,
    check_conv_cfg,
    constant_init_,
    get_expansion,
    is_norm,
    load_pretrained,
    make_downsample,
    normal_init_,
    warn_ignored,
)

__all__ = ["HRNet", "HRModule"]

_BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}
_STAGE_KEYS = ("num_modules", "num_branches", "block", "num_blocks", "num_channels")


def _conv_bn(in_ch: int, out_ch: int, k: int, stride: int, norm_cfg: Optional[dict], relu: bool) -> nn.Sequential:
    layers: List[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, bias=False),
        build_bn(norm_cfg, out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """Parallel residual branches followed by multi-resolution fusion (only into branch 0 if not multiscale)."""

    def __init__(
        self,
        num_branches: int,
        block: BlockType,
        num_blocks: Sequence[int],
        in_channels: Sequence[int],
        num_channels: Sequence[int],
        multiscale_output: bool = False,
        with_cp: bool = False,
        norm_cfg: Optional[dict] = None,
        upsample_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        for name, seq in (("num_blocks", num_blocks), ("num_channels", num_channels), ("in_channels", in_channels)):
            if len(seq) != num_branches:
                raise ValueError(f"num_branches is {num_branches} but {name} has {len(seq)} entries: {list(seq)}")
        upsample_cfg = dict(upsample_cfg or {"mode": "nearest", "align_corners": None})
        self.num_branches = num_branches
        self.multiscale_output = multiscale_output
        self.upsample_cfg = upsample_cfg
        expansion = get_expansion(block)
        branches = []
        channels = list(in_channels)
        for b in range(num_branches):
            out_ch = num_channels[b] * expansion
            downsample = make_downsample(channels[b], out_ch, norm_cfg=norm_cfg) if channels[b] != out_ch else None
            layers = [block(channels[b], out_ch, downsample=downsample, with_cp=with_cp, norm_cfg=norm_cfg)]
            layers += [block(out_ch, out_ch, with_cp=with_cp, norm_cfg=norm_cfg) for _ in range(1, num_blocks[b])]
            branches.append(nn.Sequential(*layers))
            channels[b] = out_ch
        self.in_channels = channels  # branch output channels, as mmpose leaves them
        self.branches = nn.ModuleList(branches)
        self.fuse_layers = self._make_fuse_layers(norm_cfg)
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self, norm_cfg: Optional[dict]) -> Optional[nn.ModuleList]:
        if self.num_branches == 1:
            return None
        ch = self.in_channels
        rows = []
        for i in range(self.num_branches if self.multiscale_output else 1):
            row: List[Optional[nn.Module]] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution: 1x1 conv + BN, then upsample
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, bias=False),
                        build_bn(norm_cfg, ch[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode=self.upsample_cfg["mode"],
                                    align_corners=self.upsample_cfg.get("align_corners")),
                    ))
                elif j == i:
                    row.append(None)
                else:  # higher resolution: (i - j) stride-2 3x3 convs, ReLU on all but the last
                    steps = [_conv_bn(ch[j], ch[j], 3, 2, norm_cfg, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(ch[j], ch[i], 3, 2, norm_cfg, relu=False))
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        return nn.ModuleList(rows)

    def forward(self, x: List[Tensor]) -> List[Tensor]:
        """Per-branch features in, fused per-branch features out (one tensor if not multiscale)."""
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(t) for branch, t in zip(self.branches, x)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            terms = [x[j] if j == i else row[j](x[j]) for j in range(self.num_branches)]
            y = terms[0]
            for t in terms[1:]:  # summed in branch order, as mmpose does
                y = y + t
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet as in mmpose 0.x; ``forward`` returns a list of tensors (one per kept output branch)."""

    blocks_dict = _BLOCKS

    def __init__(
        self,
        extra: dict,
        in_channels: int = 3,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        norm_eval: bool = False,
        with_cp: bool = False,
        zero_init_residual: bool = False,
        frozen_stages: int = -1,
        **ignored: object,
    ) -> None:
        super().__init__()
        warn_ignored("HRNet", ignored)
        check_conv_cfg(conv_cfg)
        build_bn(norm_cfg, 1)  # validate norm_cfg early with a clear error
        for s in ("stage1", "stage2", "stage3", "stage4"):
            if s not in extra:
                raise ValueError(f"HRNet extra is missing {s!r}; it needs stage1..stage4 dicts")
            missing = [k for k in _STAGE_KEYS if k not in extra[s]]
            if missing:
                raise ValueError(f"HRNet extra[{s!r}] is missing keys {missing}")
            if extra[s]["block"] not in _BLOCKS:
                raise ValueError(f"HRNet extra[{s!r}]['block'] is {extra[s]['block']!r}; use one of {list(_BLOCKS)}")
        self.extra = extra
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.frozen_stages = frozen_stages
        self.upsample_cfg = dict(extra.get("upsample", {"mode": "nearest", "align_corners": None}))

        # stem: two stride-2 3x3 convs
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = build_bn(norm_cfg, 64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = build_bn(norm_cfg, 64)
        self.relu = nn.ReLU(inplace=True)

        # stage 1: a plain residual layer
        self.stage1_cfg = extra["stage1"]
        block = _BLOCKS[self.stage1_cfg["block"]]
        stage1_out = self.stage1_cfg["num_channels"][0] * get_expansion(block)
        self.layer1 = self._make_layer(block, 64, stage1_out, self.stage1_cfg["num_blocks"][0])

        pre = [stage1_out]
        for n in (2, 3, 4):
            cfg = extra[f"stage{n}"]
            setattr(self, f"stage{n}_cfg", cfg)
            block = _BLOCKS[cfg["block"]]
            cur = [c * get_expansion(block) for c in cfg["num_channels"]]
            self.add_module(f"transition{n - 1}", self._make_transition_layer(pre, cur))
            multiscale = cfg.get("multiscale_output", False) if n == 4 else True
            stage, pre = self._make_stage(cfg, cur, multiscale)
            self.add_module(f"stage{n}", stage)
        self.out_channels = pre if extra["stage4"].get("multiscale_output", False) else pre[:1]
        self._freeze_stages()

    @property
    def norm1(self) -> nn.BatchNorm2d:
        """First stem norm layer (mmpose alias of ``bn1``)."""
        return self.bn1

    @property
    def norm2(self) -> nn.BatchNorm2d:
        """Second stem norm layer (mmpose alias of ``bn2``)."""
        return self.bn2

    def _make_transition_layer(self, pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        layers: List[Optional[nn.Module]] = []
        for i in range(len(cur)):
            if i < len(pre):
                layers.append(_conv_bn(pre[i], cur[i], 3, 1, self.norm_cfg, relu=True) if cur[i] != pre[i] else None)
            else:  # new, lower-resolution branch from the last existing one
                steps = []
                for k in range(i + 1 - len(pre)):
                    out_ch = cur[i] if k == i - len(pre) else pre[-1]
                    steps.append(_conv_bn(pre[-1], out_ch, 3, 2, self.norm_cfg, relu=True))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def _make_layer(self, block: BlockType, in_ch: int, out_ch: int, num_blocks: int) -> nn.Sequential:
        downsample = make_downsample(in_ch, out_ch, norm_cfg=self.norm_cfg) if in_ch != out_ch else None
        layers = [block(in_ch, out_ch, downsample=downsample, with_cp=self.with_cp, norm_cfg=self.norm_cfg)]
        layers += [block(out_ch, out_ch, with_cp=self.with_cp, norm_cfg=self.norm_cfg) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def _make_stage(
        self, cfg: dict, in_channels: List[int], multiscale_output: bool
    ) -> Tuple[nn.Sequential, List[int]]:
        modules = []
        for i in range(cfg["num_modules"]):
            # only the last module of a stage may drop the low-resolution outputs
            keep_all = multiscale_output or i != cfg["num_modules"] - 1
            module = HRModule(
                cfg["num_branches"], _BLOCKS[cfg["block"]], cfg["num_blocks"], in_channels, cfg["num_channels"],
                keep_all, with_cp=self.with_cp, norm_cfg=self.norm_cfg, upsample_cfg=self.upsample_cfg,
            )
            modules.append(module)
            in_channels = module.in_channels
        return nn.Sequential(*modules), list(in_channels)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            for m in (self.conv1, self.bn1, self.conv2, self.bn2):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            mods = [self.layer1 if i == 1 else getattr(self, f"stage{i}")]
            if i < 4:
                mods.append(getattr(self, f"transition{i}"))
            for m in mods:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def init_weights(self, pretrained: Optional[str] = None) -> None:
        """Load ``pretrained`` non-strictly, or (None) convs ~ N(0, 0.001), BN = 1/0, as mmpose 0.x does."""
        if pretrained is not None:
            load_pretrained(self, pretrained)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                normal_init_(m, std=0.001)
            elif is_norm(m):
                constant_init_(m, 1)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    constant_init_(m.last_norm, 0)

    def forward(self, x: Tensor) -> List[Tensor]:
        """Stage-4 outputs, highest resolution first (one tensor unless ``multiscale_output``)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        y_list = [self.layer1(x)]
        for n in (2, 3, 4):
            transition = getattr(self, f"transition{n - 1}")
            x_list = []
            for i in range(self.extra[f"stage{n}"]["num_branches"]):
                if transition[i] is not None:
                    # mmpose feeds every transition the last (lowest-resolution) previous output
                    x_list.append(transition[i](y_list[-1]))
                else:
                    x_list.append(y_list[i])
            y_list = getattr(self, f"stage{n}")(x_list)
        return y_list

    def train(self, mode: bool = True) -> "HRNet":
        """Set train mode, keeping frozen stages (and all BN if ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self
