"""Residual blocks and small helpers shared by the CNN backbones (mmpose 0.x parameter names).

``BasicBlock`` and ``Bottleneck`` register their layers as ``conv1``/``bn1``/``conv2``/``bn2``(/``conv3``/``bn3``)
and ``downsample`` (``downsample.0`` conv, ``downsample.1`` BN; with ``avg_down`` the pool is ``downsample.0``), exactly
like mmpose's ``resnet.py`` built through mmcv's ``build_conv_layer``/``build_norm_layer``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Tuple, Type, Union

import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvBNReLU",
    "build_bn",
    "check_conv_cfg",
    "get_expansion",
    "make_downsample",
    "kaiming_init_",
    "normal_init_",
    "constant_init_",
    "is_norm",
    "load_pretrained",
    "warn_ignored",
]

_LOG = logging.getLogger(__name__)
_BN_TYPES = ("BN", "BN2d", "SyncBN")
_CONV_TYPES = ("Conv", "Conv2d")


# mmpose-only constructor arguments that have no effect in this reimplementation.
_SILENTLY_IGNORED = frozenset({"pretrained", "init_cfg"})


def warn_ignored(owner: str, kwargs: dict) -> None:
    """Warn about constructor arguments that are accepted but have no effect (except known mmpose-only ones)."""
    unknown = sorted(set(kwargs) - _SILENTLY_IGNORED)
    if unknown:
        warnings.warn(f"{owner} ignores unsupported arguments {unknown}", stacklevel=3)


def build_bn(norm_cfg: Optional[dict], num_features: int) -> nn.BatchNorm2d:
    """A ``nn.BatchNorm2d`` described by an mmcv-style ``norm_cfg`` (BN and SyncBN both give BatchNorm2d)."""
    cfg = dict(norm_cfg) if norm_cfg is not None else {"type": "BN"}
    norm_type = cfg.pop("type", "BN")
    if norm_type not in _BN_TYPES:
        raise ValueError(
            f"norm_cfg type {norm_type!r} is not supported; use one of {_BN_TYPES} "
            "(SyncBN is built as a plain nn.BatchNorm2d)"
        )
    requires_grad = bool(cfg.pop("requires_grad", True))
    unknown = sorted(set(cfg) - {"eps", "momentum"})
    if unknown:
        raise ValueError(
            f"norm_cfg has unsupported keys {unknown}; only type, eps, momentum, requires_grad are allowed"
        )
    layer = nn.BatchNorm2d(num_features, **cfg)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


def check_conv_cfg(conv_cfg: Optional[dict]) -> None:
    """Reject conv configs other than mmcv's default plain ``Conv2d``."""
    if conv_cfg is None:
        return
    conv_type = dict(conv_cfg).get("type", "Conv2d")
    if conv_type not in _CONV_TYPES or len(conv_cfg) > 1:
        raise ValueError(f"conv_cfg {conv_cfg!r} is not supported; use None or dict(type='Conv2d')")


def _conv(in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=padding, dilation=dilation, bias=False)


class _ResBlock(nn.Module):
    """Common forward tail: residual add, optional gradient checkpointing, final ReLU."""

    downsample: Optional[nn.Module]
    with_cp: bool

    def _residual(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Residual block output ``relu(f(x) + shortcut(x))``."""

        def inner(t: Tensor) -> Tensor:
            out = self._residual(t)
            identity = self.downsample(t) if self.downsample is not None else t
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(inner, x, use_reentrant=False)
        else:
            out = inner(x)
        return self.relu(out)


class BasicBlock(_ResBlock):
    """ResNet basic block (3x3 -> 3x3); ``expansion`` must be 1."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: int = 1,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        style: str = "pytorch",
        with_cp: bool = False,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if expansion != 1:
            raise ValueError(f"BasicBlock expansion must be 1, got {expansion}")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        check_conv_cfg(conv_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mid_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.with_cp = with_cp
        self.conv1 = _conv(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation)
        self.bn1 = build_bn(norm_cfg, out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3, padding=1)
        self.bn2 = build_bn(norm_cfg, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.BatchNorm2d:
        """First norm layer (mmpose alias of ``bn1``)."""
        return self.bn1

    @property
    def norm2(self) -> nn.BatchNorm2d:
        """Second (last) norm layer (mmpose alias of ``bn2``)."""
        return self.bn2

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The norm layer zeroed by ``zero_init_residual``."""
        return self.bn2

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_ResBlock):
    """ResNet bottleneck block (1x1 -> 3x3 -> 1x1); ``mid_channels = out_channels // expansion``."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: int = 4,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        style: str = "pytorch",
        with_cp: bool = False,
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        if expansion <= 0 or out_channels % expansion != 0:
            raise ValueError(f"out_channels {out_channels} must be a multiple of expansion {expansion}")
        check_conv_cfg(conv_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expansion = expansion
        self.mid_channels = mid = out_channels // expansion
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        # 'pytorch' puts the stride on the 3x3 conv, 'caffe' on the first 1x1 conv.
        s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = _conv(in_channels, mid, 1, s1)
        self.bn1 = build_bn(norm_cfg, mid)
        self.conv2 = _conv(mid, mid, 3, s2, padding=dilation, dilation=dilation)
        self.bn2 = build_bn(norm_cfg, mid)
        self.conv3 = _conv(mid, out_channels, 1)
        self.bn3 = build_bn(norm_cfg, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.BatchNorm2d:
        """First norm layer (mmpose alias of ``bn1``)."""
        return self.bn1

    @property
    def norm2(self) -> nn.BatchNorm2d:
        """Second norm layer (mmpose alias of ``bn2``)."""
        return self.bn2

    @property
    def norm3(self) -> nn.BatchNorm2d:
        """Third (last) norm layer (mmpose alias of ``bn3``)."""
        return self.bn3

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The norm layer zeroed by ``zero_init_residual``."""
        return self.bn3

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


BlockType = Union[Type[BasicBlock], Type[Bottleneck]]


def get_expansion(block: type, expansion: Optional[int] = None) -> int:
    """The block's channel expansion: ``expansion`` if given, else the block class's own."""
    if expansion is not None:
        if not isinstance(expansion, int) or expansion <= 0:
            raise ValueError(f"expansion must be a positive int or None, got {expansion!r}")
        return expansion
    if hasattr(block, "expansion"):
        return int(block.expansion)
    raise TypeError(f"expansion is not specified for {block.__name__}")


def make_downsample(
    in_channels: int, out_channels: int, stride: int = 1, avg_down: bool = False, norm_cfg: Optional[dict] = None
) -> nn.Sequential:
    """Shortcut projection: [AvgPool (``avg_down`` and stride > 1)] + 1x1 conv + BN."""
    layers: list = []
    conv_stride = stride
    if avg_down and stride != 1:
        conv_stride = 1
        layers.append(nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False))
    layers += [_conv(in_channels, out_channels, 1, conv_stride), build_bn(norm_cfg, out_channels)]
    return nn.Sequential(*layers)


class ConvBNReLU(nn.Module):
    """mmcv ``ConvModule`` subset (conv without bias, BN, ReLU) with the same ``conv``/``bn`` names."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
        norm_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels, kernel_size, stride, padding)
        self.bn = build_bn(norm_cfg, out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """conv -> BN -> ReLU."""
        return self.activate(self.bn(self.conv(x)))


def kaiming_init_(m: nn.Module) -> None:
    """mmcv ``kaiming_init`` defaults: normal, fan_out, relu gain; bias 0."""
    nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out", nonlinearity="relu")
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, 0)


def normal_init_(m: nn.Module, std: float = 1.0, mean: float = 0.0) -> None:
    """mmcv ``normal_init``: weight ~ N(mean, std); bias 0."""
    nn.init.normal_(m.weight, mean, std)
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, 0)


def constant_init_(m: nn.Module, val: float) -> None:
    """mmcv ``constant_init``: weight = val; bias 0."""
    if getattr(m, "weight", None) is not None:
        nn.init.constant_(m.weight, val)
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, 0)


def load_pretrained(module: nn.Module, path: Union[str, Path]) -> Tuple[list, list]:
    """Load a checkpoint non-strictly (like mmcv ``load_checkpoint(strict=False)``); return (missing, unexpected).

    Accepts a bare state dict or one nested under ``state_dict``/``model``; a ``module.`` prefix is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {str(path)!r} does not exist; pass an existing file or None")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model"):
            if key in ckpt and isinstance(ckpt[key], dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(ckpt).__name__})")
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt.items()}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        _LOG.warning("loaded %s: %d missing keys, %d unexpected keys", path, len(result.missing_keys),
                     len(result.unexpected_keys))
    return list(result.missing_keys), list(result.unexpected_keys)


def is_norm(m: nn.Module) -> bool:
    """Whether ``m`` is a batch/group norm layer (what mmpose's init and ``norm_eval`` act on)."""
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))
