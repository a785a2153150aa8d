"""torch heatmap decoding and the exportable graph pieces: SRPose cells, arg-max, quarter-pixel shift, DARK, the
in-graph flip merge and the decoder modules (scoped ``/flip_merge/...`` and ``/decode/...`` in exported graphs).

Only ops TensorRT handles natively (Concat, Reshape, Gather with constant indices, ArgMax, ReduceMax, Where,
arithmetic); no loops, no data-dependent shapes.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._heatmap_np import cell_grid, gaussian_kernel_1d

__all__ = ["decode_srpose_torch", "decode_simple_torch", "heatmap_to_image_torch", "as_tensor_n2", "clamp_index",
           "FlipMerge",
           "SimpleDecode", "SRPoseDecode"]


def decode_srpose_torch(heatmaps: torch.Tensor, cell: int = 16, post: bool = True) -> torch.Tensor:
    """SRPose cell decoder in torch ops: N x K x H x W heatmaps -> N x K x 3 (x, y, score) in heatmap pixels.

    Has no data-dependent Python control flow, so it traces into an ONNX graph (opset >= 11) and runs on any
    device. Output is float32.
    """
    with warnings.catch_warnings():  # under ONNX tracing: H and W become constants, the batch stays symbolic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        h, w = int(heatmaps.shape[2]), int(heatmaps.shape[3])
    hc, wc = cell_grid(h, w, cell)
    maps = heatmaps.reshape(-1, h, w)  # M x H x W
    # one pass: per-row maxima over whole cells, then the first row holding the maximum
    rowmax = maps[:, : hc * cell, : wc * cell].amax(dim=2)  # M x (Hc*cell)
    r0 = rowmax.argmax(dim=1, keepdim=True)  # M x 1
    score = rowmax.gather(1, r0)  # M x 1
    positive = score > 0
    # the winning cell row (official: cell (-1, -1) when the maximum is not positive), 1/Hc of the data
    cy = torch.where(positive, torch.div(r0, cell, rounding_mode="trunc"), torch.full_like(r0, hc - 1))
    offs = torch.arange(cell, device=heatmaps.device)
    first = torch.arange(maps.shape[0], device=heatmaps.device).unsqueeze(1)  # M x 1
    bands = maps.reshape(-1, w).index_select(0, (first * h + cy * cell + offs).reshape(-1))  # (M*cell) x W
    if wc * cell != w:  # static shapes only
        bands = bands[:, : wc * cell].contiguous()
    cellmax = bands.reshape(-1, cell, wc * cell).amax(dim=1).reshape(-1, wc, cell).amax(dim=2)  # M x Wc
    cx = torch.where(positive, cellmax.argmax(dim=1, keepdim=True), torch.full_like(r0, wc - 1))
    # the winning cell's rows, then its first maximum in raster order
    cells = bands.reshape(-1, cell).index_select(0, ((first * cell + offs) * wc + cx).reshape(-1))
    inner = cells.reshape(-1, cell * cell).argmax(dim=1, keepdim=True)
    iy = torch.div(inner, cell, rounding_mode="trunc")  # non-negative indices: trunc is floor (and no ONNX Mod)
    px = cx * cell + (inner - iy * cell)
    py = cy * cell + iy
    x, y = _quarter_shift_torch(maps.reshape(-1, h * w), px, py, h, w, post)
    out = torch.cat([x, y, score.to(torch.float32)], dim=1)
    return out.reshape(heatmaps.shape[0], heatmaps.shape[1], 3)



def clamp_index(t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``t.clamp(lo, hi)`` for integer index tensors as Max/Min, which TensorRT's ONNX parser supports for INT32 /
    INT64 (its operator matrix lists Clip for floating types only)."""
    return torch.minimum(torch.maximum(t, t.new_tensor(lo)), t.new_tensor(hi))


def heatmap_to_image_torch(coords: torch.Tensor, center: Any, scale: Any, heatmap_size: Sequence[int]) -> torch.Tensor:
    """:func:`~srpose.codecs._heatmap_np.heatmap_to_image_np` for tensors (same device and dtype as ``coords``)."""
    n = coords.shape[0]
    c = as_tensor_n2(center, n, "center", coords.device).to(coords.dtype)
    s = as_tensor_n2(scale, n, "scale", coords.device).to(coords.dtype) * 200.0
    sx = (s[:, 0] / int(heatmap_size[0]))[:, None]
    sy = (s[:, 1] / int(heatmap_size[1]))[:, None]
    x = coords[..., 0] * sx + c[:, 0:1] - s[:, 0:1] * 0.5
    y = coords[..., 1] * sy + c[:, 1:2] - s[:, 1:2] * 0.5
    return torch.stack([x, y], dim=-1).to(coords.dtype)


def as_tensor_n2(value: Any, n: int, name: str, device: torch.device) -> torch.Tensor:
    """``value`` as an N x 2 float32 tensor on ``device``; ValueError naming ``name`` otherwise."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if tuple(t.shape) != (n, 2):
        raise ValueError(f"{name} must be N x 2 = ({n}, 2) to match the heatmaps, got shape {tuple(t.shape)}")
    return t


def _quarter_shift_torch(flat: torch.Tensor, px: torch.Tensor, py: torch.Tensor, h: int, w: int,
                         post: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """M x 1 float32 x, y moved a quarter pixel towards the higher neighbour strictly inside the map."""
    x = px.to(torch.float32)
    y = py.to(torch.float32)
    if not post:
        return x, y
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    idx = clamp_index(py, 1, h - 2) * w + clamp_index(px, 1, w - 2)
    nb = flat.gather(1, torch.cat([idx + 1, idx - 1, idx + w, idx - w], dim=1))
    sx = torch.sign(nb[:, 0:1] - nb[:, 1:2]).to(torch.float32) * 0.25
    sy = torch.sign(nb[:, 2:3] - nb[:, 3:4]).to(torch.float32) * 0.25
    zero = torch.zeros_like(x)
    return x + torch.where(ok, sx, zero), y + torch.where(ok, sy, zero)


def decode_simple_torch(heatmaps: torch.Tensor, mode: str | None, kernel: int) -> torch.Tensor:
    """mmpose simple decoder in torch ops: N x K x H x W -> N x K x 3 (x, y, score) in heatmap pixels."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(-1, h * w)
    idx = flat.argmax(dim=1, keepdim=True)
    score = flat.gather(1, idx)
    positive = score > 0
    minus1 = torch.full_like(idx, -1)
    px = torch.where(positive, idx % w, minus1)
    py = torch.where(positive, torch.div(idx, w, rounding_mode="floor"), minus1)
    if mode == "unbiased":
        x, y = _dark_torch(heatmaps.reshape(-1, 1, h, w), px, py, kernel)
    else:
        x, y = _quarter_shift_torch(flat, px, py, h, w, mode == "default")
    return torch.cat([x, y, score.to(torch.float32)], dim=1).reshape(n, k, 3)


def _dark_torch(maps: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
                kernel: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """DARK on M x 1 x H x W maps at M x 1 integer locations: Gaussian modulation, one Newton step."""
    _, _, h, w = maps.shape
    g = torch.as_tensor(gaussian_kernel_1d(kernel), device=maps.device, dtype=torch.float32)
    b = (kernel - 1) // 2
    fm = maps.to(torch.float32).reshape(1, -1, h, w)  # maps as channels: one depthwise separable blur
    m = fm.shape[1]
    blurred = F.conv2d(fm, g.view(1, 1, 1, -1).expand(m, 1, 1, kernel), padding=(0, b), groups=m)
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1).expand(m, 1, kernel, 1), padding=(b, 0), groups=m)
    blurred = blurred.reshape(m, h * w)
    factor = fm.reshape(m, h * w).amax(dim=1, keepdim=True) / blurred.amax(dim=1, keepdim=True)
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    base = py.clamp(2, h - 3) * w + px.clamp(2, w - 3)
    steps = [0, 1, -1, w, -w, 2, -2, 2 * w, -2 * w, w + 1, -w + 1, w - 1, -w - 1]
    # the log-map, evaluated only where the Taylor step reads it
    v = torch.log((blurred.gather(1, base + torch.as_tensor(steps, device=maps.device)) * factor).clamp_min(1e-10))
    c, rt, lt, dn, up, rt2, lt2, dn2, up2, dr, ur, dl, ul = v.unbind(dim=1)
    dx = 0.5 * (rt - lt)
    dy = 0.5 * (dn - up)
    dxx = 0.25 * (rt2 - 2 * c + lt2)
    dxy = 0.25 * (dr - ur - dl + ul)
    dyy = 0.25 * (dn2 - 2 * c + up2)
    det = dxx * dyy - dxy * dxy
    good = ok[:, 0] & (det != 0)
    det = torch.where(good, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / det
    oy = -(dxx * dy - dxy * dx) / det
    zero = torch.zeros_like(ox)
    x = px.to(torch.float32)[:, 0] + torch.where(good, ox, zero)
    y = py.to(torch.float32)[:, 0] + torch.where(good, oy, zero)
    return x[:, None], y[:, None]


# ------------------------------------------------------------------------------------------ graph modules
class FlipMerge(nn.Module):
    """Second half of a doubled batch is the mirrored input: flip its heatmaps back (swap paired channels, mirror,
    optionally shift one pixel right as mmpose's ``shift_heatmap``) and average with the first half."""

    def __init__(self, num_joints: int, heatmap_hw: tuple[int, int], flip_pairs: Sequence[Sequence[int]],
                 shift: bool):
        super().__init__()
        self.k, (self.h, self.w) = int(num_joints), (int(heatmap_hw[0]), int(heatmap_hw[1]))
        perm = list(range(self.k))
        for left, right in flip_pairs:
            if not (0 <= left < self.k and 0 <= right < self.k):
                raise ValueError(f"flip pair ({left}, {right}) is out of range for {self.k} joints")
            perm[left], perm[right] = right, left
        # mirrored column j is column W-1-j; the shift then takes column max(j-1, 0): one gather does both
        cols = [self.w - 1 - max(j - 1, 0) for j in range(self.w)] if shift else list(range(self.w - 1, -1, -1))
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.int64), persistent=False)
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.int64), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(2, -1, self.k, self.h, self.w)
        back = y[1].index_select(1, self.perm).index_select(3, self.cols)
        return (y[0] + back) * 0.5


class SimpleDecode(nn.Module):
    """mmpose 0.x simple decoder (global arg-max, location -1 where the maximum is not positive, optional
    quarter-pixel shift) in exportable torch ops: N x K x H x W -> N x K x 3 (x, y, score) in heatmap pixels."""

    def __init__(self, heatmap_hw: tuple[int, int], post: bool):
        super().__init__()
        self.h, self.w = int(heatmap_hw[0]), int(heatmap_hw[1])
        self.post = bool(post)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        h, w = self.h, self.w
        k = heatmaps.shape[1]
        flat = heatmaps.reshape(-1, h * w)
        idx = flat.argmax(dim=1, keepdim=True)
        score = flat.gather(1, idx)
        positive = score > 0
        iy = torch.div(idx, w, rounding_mode="trunc")  # non-negative: trunc is floor, and no ONNX Mod
        ix = idx - iy * w
        minus1 = torch.full_like(idx, -1)
        px = torch.where(positive, ix, minus1)
        py = torch.where(positive, iy, minus1)
        x = px.to(torch.float32)
        y = py.to(torch.float32)
        if self.post:
            ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
            c = clamp_index(py, 1, h - 2) * w + clamp_index(px, 1, w - 2)
            nb = flat.gather(1, torch.cat([c + 1, c - 1, c + w, c - w], dim=1))
            zero = torch.zeros_like(x)
            x = x + torch.where(ok, torch.sign(nb[:, 0:1] - nb[:, 1:2]).to(torch.float32) * 0.25, zero)
            y = y + torch.where(ok, torch.sign(nb[:, 2:3] - nb[:, 3:4]).to(torch.float32) * 0.25, zero)
        return torch.cat([x, y, score.to(torch.float32)], dim=1).reshape(-1, k, 3)


class SRPoseDecode(nn.Module):
    """SRPose cell decoder (:func:`decode_srpose_torch`) as a module, so its nodes are scoped
    ``/decode/...`` in the graph."""

    def __init__(self, post: bool, cell: int = 16):
        super().__init__()
        self.post, self.cell = bool(post), int(cell)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        return decode_srpose_torch(heatmaps, cell=self.cell, post=self.post)
