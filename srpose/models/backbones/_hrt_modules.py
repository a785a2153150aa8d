"""Building blocks of the HRFormer (HRT) backbone, named like the official SRPose/HRFormer code.

Attribute names follow the official modules so that official checkpoints load with ``strict=True``:
``Bottleneck`` uses ``conv1/bn1/...`` (mmcv's ``build_norm_layer`` names BN layers ``bn<postfix>``),
the transformer block uses ``attn.attn.{q,k,v,out}_proj``, ``norm1``/``norm2`` (LayerNorm) and
``mlp.{fc1,norm1,dw3x3,norm2,fc2,norm3}``.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BN_TYPES = ("BN", "BN2d", "SyncBN")


def build_norm(norm_cfg: Optional[dict], num_features: int) -> nn.BatchNorm2d:
    """Create the 2D batch norm described by an mmcv-style ``norm_cfg`` (BN and SyncBN both map to BatchNorm2d)."""
    cfg = dict(norm_cfg) if norm_cfg is not None else dict(type="BN", requires_grad=True)
    norm_type = cfg.pop("type", "BN")
    if norm_type not in _BN_TYPES:
        raise ValueError(
            f"norm_cfg type {norm_type!r} is not supported; use one of {_BN_TYPES} "
            "(SyncBN is built as a plain nn.BatchNorm2d)"
        )
    requires_grad = cfg.pop("requires_grad", True)
    unknown = set(cfg) - {"eps", "momentum"}
    if unknown:
        raise ValueError(
            f"norm_cfg has unsupported keys {sorted(unknown)}; only eps, momentum, requires_grad are allowed"
        )
    layer = nn.BatchNorm2d(num_features, **cfg)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


def spatial_size(x: Tensor) -> Tuple[int, int]:
    """(H, W) of an N..HW tensor as plain ints, so ONNX tracing bakes them in as constants.

    The export input size is fixed, so only the batch axis stays dynamic; the TracerWarning about
    converting sizes to Python ints is expected here and silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[-2]), int(x.shape[-1])


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, expansion 4) used by HRT's stage 1."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        norm_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = build_norm(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = build_norm(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = build_norm(norm_cfg, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual bottleneck forward."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DropPath(nn.Module):
    """Stochastic depth per sample; identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        """Randomly zero whole samples of the residual branch while training."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))
        return x / keep * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class WindowMHA(nn.Module):
    """Multi-head attention over tokens of one window (official ``MHA_``), batch-first.

    ``relative_position_bias_table`` and ``relative_position_index`` exist as in the official code (and its
    checkpoints) but, exactly like the official forward, the bias is NOT added to the attention logits.
    ``out_proj`` is applied functionally, like the official code, so module-hook complexity counters skip it.
    """

    def __init__(self, embed_dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = float(self.head_dim) ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        ws = window_size
        self.window_tokens = ws * ws
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) * (2 * ws - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention of ``x`` (num_windows, tokens, C) -> same shape."""
        L, C, nh, hd = self.window_tokens, self.embed_dim, self.num_heads, self.head_dim
        q = (self.q_proj(x) * self.scaling).reshape(-1, L, nh, hd).transpose(1, 2)
        k = self.k_proj(x).reshape(-1, L, nh, hd).transpose(1, 2)
        v = self.v_proj(x).reshape(-1, L, nh, hd).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, L, C)
        # Functional, as the official ``multi_head_attention_forward`` (``linear(x, out_proj_weight, ...)``): the
        # output is the same, and mmcv-style counters, which hook module calls, see what they see on the official HRT.
        return F.linear(out, self.out_proj.weight, self.out_proj.bias)


class InterlacedPoolAttention(nn.Module):
    """Official ISA attention: zero-pad the map to a multiple of the window, attend within windows, crop back.

    The official permutation ``n (qh ph) (qw pw) c -> (ph pw) (n qh qw) c`` groups each contiguous
    ``window x window`` patch into one attention sequence; padding tokens take part as keys (no mask).
    """

    def __init__(self, embed_dim: int, num_heads: int, window_size: int = 7) -> None:
        super().__init__()
        self.dim = embed_dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn = WindowMHA(embed_dim, num_heads, window_size)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """Attention over tokens ``x`` (B, H*W, C) -> (B, H*W, C)."""
        C, ws = self.dim, self.window_size
        Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
        pad_h, pad_w = Hp - H, Wp - W
        top, left = pad_h // 2, pad_w // 2
        x = x.reshape(-1, H, W, C)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, (0, 0, left, pad_w - left, top, pad_h - top))
        qh, qw = Hp // ws, Wp // ws
        x = x.reshape(-1, qh, ws, qw, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
        x = self.attn(x)
        x = x.reshape(-1, qh, qw, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C)
        if pad_h > 0 or pad_w > 0:
            x = x[:, top : top + H, left : left + W, :]
        return x.reshape(-1, H * W, C)


class MlpDWBN(nn.Module):
    """HRFormer FFN: 1x1 conv -> BN -> GELU -> depthwise 3x3 -> BN -> GELU -> 1x1 conv -> BN -> GELU."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, norm_cfg: Optional[dict]) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act1 = nn.GELU()
        self.norm1 = build_norm(norm_cfg, hidden_features)
        self.dw3x3 = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
        self.act2 = nn.GELU()
        self.norm2 = build_norm(norm_cfg, hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.act3 = nn.GELU()
        self.norm3 = build_norm(norm_cfg, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """FFN on an NCHW map."""
        x = self.act1(self.norm1(self.fc1(x)))
        x = self.act2(self.norm2(self.dw3x3(x)))
        return self.act3(self.norm3(self.fc2(x)))


class GeneralTransformerBlock(nn.Module):
    """HRFormer block: x + attn(LN(x)), then x + FFN(LN(x)); NCHW in and out."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if inplanes != planes:
            raise ValueError(f"GeneralTransformerBlock needs inplanes == planes, got {inplanes} and {planes}")
        self.dim = inplanes
        self.out_dim = planes
        self.attn = InterlacedPoolAttention(inplanes, num_heads=num_heads, window_size=window_size)
        self.norm1 = nn.LayerNorm(inplanes, eps=1e-6)
        self.norm2 = nn.LayerNorm(planes, eps=1e-6)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = MlpDWBN(inplanes, int(inplanes * mlp_ratio), planes, norm_cfg)

    def forward(self, x: Tensor) -> Tensor:
        """Transformer block on an NCHW map of fixed spatial size."""
        C, (H, W) = self.dim, spatial_size(x)
        x = x.reshape(-1, C, H * W).transpose(1, 2)
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        y = self.norm2(x).transpose(1, 2).reshape(-1, C, H, W)
        y = self.mlp(y).reshape(-1, C, H * W).transpose(1, 2)
        x = x + self.drop_path(y)
        return x.transpose(1, 2).reshape(-1, C, H, W)
