"""TransPose-R backbone (Yang et al., "TransPose: Keypoint Localization via Transformer", ICCV 2021).

ResNet-S (ResNet-50 stem, ``layer1``, ``layer2``; output stride 8, 512 channels) + 1x1 ``reduce`` conv to
``d_model`` + a post-norm Transformer encoder (``global_encoder``) with a fixed 2D sine position embedding added to
queries and keys of every layer. The deconv head of the original model is a separate ``keypoint_head``
(``TopDownSimpleHead`` with one 4x4 deconv layer and a 1x1 final conv).

Parameter names follow the public TransPose code (``lib/models/transpose_r.py``), so an official checkpoint loads
after ``convert_transpose_checkpoint`` (which only adds the ``backbone.``/``keypoint_head.`` prefixes).

The attention is written with plain ops (matmul/softmax) so it exports to ONNX with a dynamic batch axis. As in
``nn.MultiheadAttention``, the input and output projections are applied functionally, so mmcv-style MAC counting
(``srpose.complexity.count_macs``) counts only ``linear1``/``linear2`` of each encoder layer, not the projections
nor the attention matmuls.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srpose.models.backbones._blocks import Bottleneck, load_pretrained, make_downsample, warn_ignored

__all__ = ["TransPoseR", "convert_transpose_checkpoint", "sine_position_embedding"]

_POS_EMBEDDINGS = ("sine", "learnable", "none")
# out_indices: 0 = layer1 (stride 4, 256 ch), 1 = layer2 (stride 8, 512 ch), 2 = encoder output (stride 8, d_model)
_NUM_OUTPUTS = 3
_STRIDE = 8


def sine_position_embedding(h: int, w: int, d_model: int, temperature: float = 10000.0,
                            scale: float = 2 * math.pi) -> Tensor:
    """The DETR/TransPose normalised 2D sine embedding of an ``h`` x ``w`` grid, shape ``(h * w, 1, d_model)``.

    Channels ``[0, d_model/2)`` encode y, ``[d_model/2, d_model)`` encode x, each as interleaved sin/cos.
    Tokens are ordered row-major (y outer, x inner), as ``flatten(2)`` of an N x C x H x W map.
    """
    if d_model % 4 != 0:
        raise ValueError(f"d_model must be a multiple of 4 for the sine position embedding, got {d_model}")
    half = d_model // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32)
    x = torch.arange(1, w + 1, dtype=torch.float32)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    idx = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)

    def encode(v: Tensor) -> Tensor:  # (n,) -> (n, half), sin on even, cos on odd channels
        a = v[:, None] / dim_t
        return torch.stack((a[:, 0::2].sin(), a[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(h, w, half)
    pos_x = encode(x)[None, :, :].expand(h, w, half)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, 1, d_model).contiguous()


class _SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, on batch-first tokens.

    Queries and keys get the position embedding, values do not (TransPose/DETR).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"d_model {embed_dim} must be divisible by nhead {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, pos: Optional[Tensor], length: int) -> Tensor:
        """``x``: N x ``length`` x E tokens; ``pos``: 1 x L x E or None. Returns N x L x E."""
        e, h, d = self.embed_dim, self.num_heads, self.head_dim
        qk_in = x if pos is None else x + pos
        qk = F.linear(qk_in, self.in_proj_weight[: 2 * e], self.in_proj_bias[: 2 * e])
        v = F.linear(x, self.in_proj_weight[2 * e:], self.in_proj_bias[2 * e:])
        # N x L x 2E -> 2 x N x h x L x d (the batch stays a -1 so the ONNX graph keeps it dynamic)
        qk = qk.reshape(-1, length, 2, h, d).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        v = v.reshape(-1, length, h, d).transpose(1, 2)
        attn = torch.matmul(q * (d ** -0.5), k.transpose(-2, -1)).softmax(dim=-1)
        attn = F.dropout(attn, self.dropout, self.training)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(-1, length, e)
        return F.linear(out, self.out_proj.weight, self.out_proj.bias)


class _EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (DETR ``forward_post``) with ReLU feed-forward."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Optional[Tensor], length: int) -> Tensor:
        """N x L x E -> N x L x E (``length`` = L, a Python int)."""
        x = self.norm1(x + self.dropout1(self.self_attn(x, pos, length)))
        y = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(y))


class _Encoder(nn.Module):
    """Stack of encoder layers (``layers.{i}``); the position embedding is added in every layer."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [_EncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TransPose's init: Xavier-uniform for every weight matrix (biases keep their defaults)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: Tensor, pos: Optional[Tensor], length: int) -> Tensor:
        """N x L x E -> N x L x E (``length`` = L, a Python int)."""
        for layer in self.layers:
            x = layer(x, pos, length)
        return x


class TransPoseR(nn.Module):
    """TransPose-R backbone: ResNet-S + ``reduce`` + Transformer encoder (official parameter names).

    Args:
        layers: Bottleneck counts of ``layer1`` and ``layer2`` ((3, 4) = ResNet-50's first two stages).
        d_model, dim_feedforward, nhead, num_encoder_layers: encoder size (TransPose-R-A4: 256, 1024, 8, 4).
        pos_embedding: ``'sine'`` (fixed, stored as a non-trainable parameter like the original), ``'learnable'``
            or ``'none'``.
        image_size: input (width, height); the position embedding is built for it and other sizes are rejected.
        out_indices: which features to return: 0 = ``layer1`` (stride 4, 256 ch), 1 = ``layer2`` (stride 8,
            512 ch), 2 = encoder output (stride 8, ``d_model`` ch). One index gives a tensor, several give a list
            ordered finest to coarsest (the encoder output last).
        dropout: dropout of the encoder (attention weights, feed-forward and residual branches), 0.1 as trained.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4),
        d_model: int = 256,
        dim_feedforward: int = 1024,
        nhead: int = 8,
        num_encoder_layers: int = 4,
        pos_embedding: str = "sine",
        image_size: Sequence[int] = (192, 256),
        out_indices: Union[int, Sequence[int]] = (2,),
        dropout: float = 0.1,
        **ignored: object,
    ) -> None:
        super().__init__()
        warn_ignored("TransPoseR", ignored)
        layers = tuple(int(n) for n in layers)
        if len(layers) != 2 or min(layers) < 1:
            raise ValueError(f"layers must be two positive block counts (layer1, layer2), got {layers}")
        if pos_embedding not in _POS_EMBEDDINGS:
            raise ValueError(f"pos_embedding must be one of {_POS_EMBEDDINGS}, got {pos_embedding!r}")
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or any(s <= 0 or s % _STRIDE for s in image_size):
            raise ValueError(f"image_size must be (width, height), both positive multiples of {_STRIDE}, "
                             f"got {image_size}")
        idx = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        if not idx or any(i not in range(_NUM_OUTPUTS) for i in idx) or len(set(idx)) != len(idx):
            raise ValueError(f"out_indices must be distinct values in 0..{_NUM_OUTPUTS - 1} (0 = layer1, "
                             f"1 = layer2, 2 = encoder output), got {out_indices!r}")
        self.out_indices = tuple(sorted(idx))
        self.image_size = image_size
        self.d_model = d_model
        self.pe_w, self.pe_h = image_size[0] // _STRIDE, image_size[1] // _STRIDE
        self.pos_embedding_type = pos_embedding

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 256, layers[0], stride=1)
        self.layer2 = self._make_layer(256, 512, layers[1], stride=2)
        self.reduce = nn.Conv2d(512, d_model, 1, bias=False)

        self.pos_embedding: Optional[nn.Parameter]
        length = self.pe_h * self.pe_w
        if pos_embedding == "sine":
            pe = sine_position_embedding(self.pe_h, self.pe_w, d_model)
            self.pos_embedding = nn.Parameter(pe, requires_grad=False)
        elif pos_embedding == "learnable":
            self.pos_embedding = nn.Parameter(torch.randn(length, 1, d_model))
        else:
            self.register_parameter("pos_embedding", None)
        self.global_encoder = _Encoder(num_encoder_layers, d_model, nhead, dim_feedforward, dropout)

    @staticmethod
    def _make_layer(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = make_downsample(in_channels, out_channels, stride)
        mods = [Bottleneck(in_channels, out_channels, stride=stride, downsample=downsample)]
        mods += [Bottleneck(out_channels, out_channels) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def init_weights(self, pretrained: Optional[str] = None) -> None:
        """Load ``pretrained`` (e.g. ImageNet ResNet-50) non-strictly, or (None) TransPose's from-scratch init:
        conv weights N(0, 0.001), BN 1/0. The encoder keeps its Xavier init and the sine embedding is fixed."""
        if pretrained is not None:
            load_pretrained(self, pretrained)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TransPoseR expects an N x 3 x H x W image batch, got shape {tuple(x.shape)}")
        w, h = self.image_size
        if (int(x.shape[2]), int(x.shape[3])) != (h, w):
            raise ValueError(
                f"TransPoseR was built for {h} x {w} (H x W) inputs (image_size={self.image_size}, width first) "
                f"and its position embedding only fits that size, but got {int(x.shape[2])} x {int(x.shape[3])}; "
                f"resize the input or build the backbone with image_size=({int(x.shape[3])}, {int(x.shape[2])})")

    def forward(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        """Features of ``out_indices`` (a tensor if one, else a list ordered finest to coarsest)."""
        if torch.jit.is_tracing():  # the checked sizes are static in a trace; silence its TracerWarnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                self._check_input(x)
        else:
            self._check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        feats: Dict[int, Tensor] = {0: c2, 1: c3}
        if 2 in self.out_indices:
            # static sizes (the input size is checked) keep Shape/Gather ops out of the exported graph
            c, h, w = self.d_model, self.pe_h, self.pe_w
            tokens = self.reduce(c3).flatten(2).transpose(1, 2)  # N x HW x C, row-major tokens
            pos = None if self.pos_embedding is None else self.pos_embedding.transpose(0, 1)
            tokens = self.global_encoder(tokens, pos, h * w)
            feats[2] = tokens.transpose(1, 2).reshape(-1, c, h, w)
        outs = [feats[i] for i in self.out_indices]
        return outs[0] if len(outs) == 1 else outs


_HEAD_PREFIXES = ("deconv_layers.", "final_layer.")


def convert_transpose_checkpoint(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Map an official TransPose-R checkpoint's keys to this project's: ``deconv_layers.*``/``final_layer.*`` ->
    ``keypoint_head.*``, everything else -> ``backbone.*``. A ``module.`` (DataParallel) prefix is stripped;
    keys already starting with ``backbone.``/``keypoint_head.`` are kept, so conversion is idempotent."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, got {type(state_dict).__name__}")
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if not k.startswith(("backbone.", "keypoint_head.")):
            k = ("keypoint_head." if k.startswith(_HEAD_PREFIXES) else "backbone.") + k
        if k in out:
            raise ValueError(f"checkpoint key {key!r} maps to {k!r}, which another key already produced")
        out[k] = value
    return out

