"""Heatmap decoding shared by every backend: SRPose cell decoder and mmpose simple / DARK decoder.

Both decoders reproduce the official code's results (see ``srpose/_decode_ref.py`` for the oracles):

- ``kind="srpose"`` is SRPose's ``TopDownHigher`` decoder: the maximum over whole ``cell`` x ``cell`` cells
  (rows / columns beyond the last whole cell are ignored, as ``max_pool2d`` does), ties going to the first cell
  in raster order and then to the first pixel of that cell in raster order; for a map whose maximum is not
  positive the official code indexes cell ``(-1, -1)``, i.e. it returns the arg-max of the bottom-right cell.
  The score is the maximum.
- ``kind="simple"`` is mmpose 0.x ``keypoints_from_heatmaps`` (``use_udp=False``): global arg-max (first in
  raster order), location ``(-1, -1)`` where the maximum is not positive, then ``post_process`` ``"default"``
  (quarter-pixel shift) or ``"unbiased"`` (DARK: Gaussian modulation and one Taylor step).

The quarter-pixel shift moves x (y) by 0.25 towards the higher horizontal (vertical) neighbour, only for
``1 < x < W - 1`` and ``1 < y < H - 1``. Image coordinates follow mmpose's ``transform_preds`` (no UDP).

numpy input gives numpy output; torch input gives torch output on the same device, using torch ops only.
"""
from __future__ import annotations

import math
import warnings
from typing import Literal, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

Array = Union[np.ndarray, torch.Tensor]
Kind = Literal["srpose", "simple"]
PostProcess = Literal["default", "unbiased"]

__all__ = ["decode_heatmaps", "decode_srpose_torch", "heatmap_to_image", "gaussian_kernel_1d"]

_KINDS = ("srpose", "simple")
_POST_PROCESS = ("default", "unbiased", None)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------
def decode_heatmaps(heatmaps: Array, center: Array, scale: Array, *, kind: Kind = "srpose", post: bool = True,
                    post_process: PostProcess | None = "default", modulate_kernel: int = 11,
                    cell: int = 16) -> Tuple[Array, Array]:
    """Decode N x K x H x W heatmaps to image keypoints (N x K x 2) and scores (N x K x 1), float32.

    ``center`` / ``scale`` are N x 2 (mmpose units: scale in 200 px); they are cast to float32 as mmpose does.
    ``post=False`` (or ``post_process=None``) skips the sub-pixel refinement. ``kind="srpose"`` supports only
    the official quarter-pixel shift (``post_process="default"``); ``"unbiased"`` (DARK, kernel
    ``modulate_kernel``) is a ``kind="simple"`` option. Returns numpy arrays for numpy heatmaps and tensors on
    the heatmaps' device for torch heatmaps.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not supported: use one of {_KINDS}")
    if post_process not in _POST_PROCESS:
        raise ValueError(f"post_process={post_process!r} is not supported: use 'default', 'unbiased' or None")
    if post_process is None:
        post = False
    if kind == "srpose" and post and post_process == "unbiased":
        raise ValueError("kind='srpose' refines only with the official quarter-pixel shift: use "
                         "post_process='default', or kind='simple' for post_process='unbiased' (DARK)")
    if post and post_process == "unbiased":
        _check_kernel(modulate_kernel)
    mode = post_process if post else None

    if isinstance(heatmaps, torch.Tensor):
        n, _, h, w = _check_heatmaps(heatmaps)
        center_t = _as_tensor_n2(center, n, "center", heatmaps.device)
        scale_t = _as_tensor_n2(scale, n, "scale", heatmaps.device)
        if kind == "srpose":
            out = decode_srpose_torch(heatmaps, cell=cell, post=post)
        else:
            out = _decode_simple_torch(heatmaps, mode, modulate_kernel)
        coords = heatmap_to_image(out[..., :2], center_t, scale_t, (w, h))
        return coords, out[..., 2:3]

    if not isinstance(heatmaps, np.ndarray):
        raise TypeError(f"heatmaps must be a numpy array or a torch tensor, got {type(heatmaps).__name__}")
    n, _, h, w = _check_heatmaps(heatmaps)
    center_a = _as_array_n2(center, n, "center")
    scale_a = _as_array_n2(scale, n, "scale")
    if kind == "srpose":
        xy, score = _decode_srpose_np(heatmaps, cell, post)
    else:
        xy, score = _decode_simple_np(heatmaps, mode, modulate_kernel)
    return heatmap_to_image(xy, center_a, scale_a, (w, h)), score


def decode_srpose_torch(heatmaps: torch.Tensor, cell: int = 16, post: bool = True) -> torch.Tensor:
    """SRPose cell decoder in torch ops: N x K x H x W heatmaps -> N x K x 3 (x, y, score) in heatmap pixels.

    Has no data-dependent Python control flow, so it traces into an ONNX graph (opset >= 11) and runs on any
    device. Output is float32.
    """
    with warnings.catch_warnings():  # under ONNX tracing: H and W become constants, the batch stays symbolic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        h, w = int(heatmaps.shape[2]), int(heatmaps.shape[3])
    hc, wc = _cell_grid(h, w, cell)
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


def heatmap_to_image(coords: Array, center: Array, scale: Array, heatmap_size: Sequence[int]) -> Array:
    """Map N x K x 2 heatmap-pixel coordinates to the image (mmpose ``transform_preds``, no UDP), vectorised.

    ``center`` / ``scale`` are N x 2 (scale in units of 200 px), ``heatmap_size`` is (W, H). The result has the
    dtype of ``coords`` (and its type: numpy or torch on the same device).
    """
    if len(heatmap_size) != 2:
        raise ValueError(f"heatmap_size must be (W, H), got {heatmap_size!r}")
    hw_w, hw_h = int(heatmap_size[0]), int(heatmap_size[1])
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be N x K x 2, got shape {tuple(coords.shape)}")
    n = coords.shape[0]
    if isinstance(coords, torch.Tensor):
        c = _as_tensor_n2(center, n, "center", coords.device).to(coords.dtype)
        s = _as_tensor_n2(scale, n, "scale", coords.device).to(coords.dtype) * 200.0
    else:
        c = _as_array_n2(center, n, "center", dtype=None)
        s = _as_array_n2(scale, n, "scale", dtype=None) * 200.0
    sx = (s[:, 0] / hw_w)[:, None]
    sy = (s[:, 1] / hw_h)[:, None]
    x = coords[..., 0] * sx + c[:, 0:1] - s[:, 0:1] * 0.5
    y = coords[..., 1] * sy + c[:, 1:2] - s[:, 1:2] * 0.5
    if isinstance(coords, torch.Tensor):
        return torch.stack([x, y], dim=-1).to(coords.dtype)
    return np.stack([x, y], axis=-1).astype(coords.dtype, copy=False)


def gaussian_kernel_1d(size: int) -> np.ndarray:
    """OpenCV's 1-D Gaussian kernel for ``size`` with sigma 0 (``cv2.getGaussianKernel(size, 0, CV_32F)``)."""
    _check_kernel(size)
    # OpenCV's fixed tables for small sizes with sigma <= 0
    fixed = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
             7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
             9: [v / 256 for v in (4, 13, 30, 51, 60, 51, 30, 13, 4)]}
    if size in fixed:
        return np.asarray(fixed[size], dtype=np.float32)
    sigma = ((size - 1) * 0.5 - 1) * 0.3 + 0.8
    scale2x = -0.5 / (sigma * sigma)
    vals = [math.exp(scale2x * (i - (size - 1) * 0.5) ** 2) for i in range(size)]
    total = sum(vals)
    return np.asarray([v / total for v in vals], dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------------
def _check_heatmaps(heatmaps: Array) -> Tuple[int, int, int, int]:
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be N x K x H x W, got shape {tuple(heatmaps.shape)}")
    floating = heatmaps.is_floating_point() if isinstance(heatmaps, torch.Tensor) else \
        np.issubdtype(heatmaps.dtype, np.floating)
    if not floating:
        raise TypeError(f"heatmaps must be floating point, got dtype {heatmaps.dtype}: cast them to float32")
    n, k, h, w = (int(v) for v in heatmaps.shape)
    if n == 0 or k == 0 or h == 0 or w == 0:
        raise ValueError(f"heatmaps must not be empty, got shape {tuple(heatmaps.shape)}")
    return n, k, h, w


def _check_kernel(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 != 1:
        raise ValueError(f"modulate_kernel={size!r} must be a positive odd integer (11 for sigma 2, 17 for sigma 3)")


def _cell_grid(h: int, w: int, cell: int) -> Tuple[int, int]:
    if not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ValueError(f"cell={cell!r} must be a positive integer (SRPose uses 16)")
    hc, wc = h // cell, w // cell
    if hc == 0 or wc == 0:
        raise ValueError(f"heatmaps of {h} x {w} (H x W) hold no whole {cell} x {cell} cell: use a smaller cell "
                         "or kind='simple'")
    return hc, wc


def _as_array_n2(value: Array, n: int, name: str, dtype=np.float32) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must be N x 2 = ({n}, 2) to match the heatmaps, got shape {arr.shape}")
    return arr


def _as_tensor_n2(value: Array, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if tuple(t.shape) != (n, 2):
        raise ValueError(f"{name} must be N x 2 = ({n}, 2) to match the heatmaps, got shape {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------------------------------------------
# numpy decoders
# --------------------------------------------------------------------------------------------------------------
def _decode_srpose_np(heatmaps: np.ndarray, cell: int, post: bool) -> Tuple[np.ndarray, np.ndarray]:
    n, k, h, w = heatmaps.shape
    hc, wc = _cell_grid(h, w, cell)
    m = n * k
    maps = heatmaps.reshape(m, h, w)
    rows = maps[:, : hc * cell]  # view: whole-cell rows
    ar = np.arange(m)
    # one pass: the first maximum in raster order, (c0, r0); r0 is the first row holding the maximum
    if w % cell == 0:
        flat = rows.reshape(m, -1)
        idx = flat.argmax(axis=1)
        score = flat[ar, idx]
        r0, c0 = idx // w, idx % w
    else:
        rowmax = rows[:, :, : wc * cell].max(axis=2)
        r0 = rowmax.argmax(axis=1)
        score = rowmax[ar, r0]
        c0 = maps[ar, r0, : wc * cell].argmax(axis=1)
    positive = score > 0
    px, py = _first_in_cell_order_np(maps, score, positive, r0, c0, cell, wc)
    neg = np.flatnonzero(~positive)
    if neg.size:  # official: cell (-1, -1), i.e. the first maximum of the bottom-right whole cell
        last = maps[neg, (hc - 1) * cell: hc * cell, (wc - 1) * cell: wc * cell].reshape(neg.size, -1).argmax(axis=1)
        px[neg] = (wc - 1) * cell + last % cell
        py[neg] = (hc - 1) * cell + last // cell
    xy = _quarter_shift_np(maps, px, py, post)
    return xy.reshape(n, k, 2), score.astype(np.float32).reshape(n, k, 1)


def _first_in_cell_order_np(maps: np.ndarray, score: np.ndarray, positive: np.ndarray, r0: np.ndarray,
                            c0: np.ndarray, cell: int, wc: int) -> Tuple[np.ndarray, np.ndarray]:
    """Turn the first maximum in raster order into the first in cell order (first cell, then first pixel).

    Only a maximum in a row below r0 of the same cell row, left of c0's cell, can come first in cell order, so
    only those rows (half a cell row per map on average, 1/32 of the data) are read.
    """
    m = maps.shape[0]
    px, py = c0.copy(), r0.copy()
    count = np.where(positive, (r0 // cell) * cell + (cell - 1) - r0, 0)  # rows after r0 in its cell row
    owner = np.repeat(np.arange(m), count)
    if owner.size == 0:
        return px, py
    rowno = r0[owner] + 1 + (np.arange(owner.size) - (np.cumsum(count) - count)[owner])
    rows = maps[owner, rowno, : wc * cell]
    col = rows.argmax(axis=1)  # the leftmost maximum of each row
    ccell = col // cell
    cand = (rows[np.arange(owner.size), col] == score[owner]) & (ccell < (c0 // cell)[owner])
    if cand.any():
        best = c0 // cell
        np.minimum.at(best, owner[cand], ccell[cand])
        sel = np.flatnonzero(cand & (ccell == best[owner]))  # rows holding the maximum in the winning cell
        first = sel[np.flatnonzero(np.diff(owner[sel], prepend=-1))]  # the first such row of every map
        px[owner[first]] = col[first]
        py[owner[first]] = rowno[first]
    return px, py


def _argmax_np(maps: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    m, h, w = maps.shape
    flat = maps.reshape(m, -1)
    idx = flat.argmax(axis=1)
    score = flat[np.arange(m), idx]
    positive = score > 0
    px = np.where(positive, idx % w, -1)
    py = np.where(positive, idx // w, -1)
    return px, py, score


def _decode_simple_np(heatmaps: np.ndarray, mode: str | None, kernel: int) -> Tuple[np.ndarray, np.ndarray]:
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w)
    px, py, score = _argmax_np(maps)
    if mode == "unbiased":
        xy = _dark_np(maps, px, py, kernel)
    else:
        xy = _quarter_shift_np(maps, px, py, mode == "default")
    return xy.reshape(n, k, 2), score.astype(np.float32).reshape(n, k, 1)


def _quarter_shift_np(maps: np.ndarray, px: np.ndarray, py: np.ndarray, post: bool) -> np.ndarray:
    """M x 2 float32 locations, moved a quarter pixel towards the higher neighbour strictly inside the map."""
    x = px.astype(np.float32)
    y = py.astype(np.float32)
    if post:
        _, h, w = maps.shape
        ar = np.arange(maps.shape[0])
        ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
        xc = np.clip(px, 1, w - 2)
        yc = np.clip(py, 1, h - 2)
        dx = maps[ar, yc, xc + 1] - maps[ar, yc, xc - 1]
        dy = maps[ar, yc + 1, xc] - maps[ar, yc - 1, xc]
        x = x + np.where(ok, np.sign(dx) * 0.25, 0).astype(np.float32)
        y = y + np.where(ok, np.sign(dy) * 0.25, 0).astype(np.float32)
    return np.stack([x, y], axis=1)


def _blur_np(maps: np.ndarray, kernel: int) -> Tuple[np.ndarray, np.ndarray]:
    """DARK modulation of M x H x W maps: zero-padded cv2 blur and the factor restoring each map's maximum."""
    import cv2

    m, h, w = maps.shape
    b = (kernel - 1) // 2
    # stack the zero-padded maps vertically: the padding isolates them, so one cv2 call blurs them all
    padded = np.zeros((m, h + 2 * b, w + 2 * b), dtype=np.float32)
    padded[:, b: b + h, b: b + w] = maps
    blurred = cv2.GaussianBlur(padded.reshape(m * (h + 2 * b), w + 2 * b), (kernel, kernel), 0)
    blurred = blurred.reshape(m, h + 2 * b, w + 2 * b)[:, b: b + h, b: b + w].astype(maps.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = maps.max(axis=(1, 2)) / blurred.max(axis=(1, 2))
    return blurred, factor


def _dark_np(maps: np.ndarray, px: np.ndarray, py: np.ndarray, kernel: int) -> np.ndarray:
    """DARK: one Newton step on the modulated log-heatmap at integer locations well inside the map."""
    xy = np.stack([px, py], axis=1).astype(np.float32)
    _, h, w = maps.shape
    sel = np.flatnonzero((px > 1) & (px < w - 2) & (py > 1) & (py < h - 2))
    if sel.size == 0:
        return xy
    blurred, factor = _blur_np(maps, kernel)
    x, y, f = px[sel], py[sel], factor[sel]

    def at(dx: int, dy: int) -> np.ndarray:  # the log-map, evaluated only where the Taylor step reads it
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.maximum(blurred[sel, y + dy, x + dx] * f, 1e-10))

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    good = dxx * dyy - dxy ** 2 != 0
    if not good.any():
        return xy
    sel, dx, dy, dxx, dxy, dyy = sel[good], dx[good], dy[good], dxx[good], dxy[good], dyy[good]
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)  # V x 2 x 2
    derivative = np.stack([dx, dy], -1)[..., None]  # V x 2 x 1
    offset = (-np.linalg.inv(hessian) @ derivative)[..., 0]
    xy[sel] += offset.astype(np.float32)
    return xy


# --------------------------------------------------------------------------------------------------------------
# torch decoders
# --------------------------------------------------------------------------------------------------------------
def _quarter_shift_torch(flat: torch.Tensor, px: torch.Tensor, py: torch.Tensor, h: int, w: int,
                         post: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """M x 1 float32 x, y moved a quarter pixel towards the higher neighbour strictly inside the map."""
    x = px.to(torch.float32)
    y = py.to(torch.float32)
    if not post:
        return x, y
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    idx = py.clamp(1, h - 2) * w + px.clamp(1, w - 2)
    nb = flat.gather(1, torch.cat([idx + 1, idx - 1, idx + w, idx - w], dim=1))
    sx = torch.sign(nb[:, 0:1] - nb[:, 1:2]).to(torch.float32) * 0.25
    sy = torch.sign(nb[:, 2:3] - nb[:, 3:4]).to(torch.float32) * 0.25
    zero = torch.zeros_like(x)
    return x + torch.where(ok, sx, zero), y + torch.where(ok, sy, zero)


def _decode_simple_torch(heatmaps: torch.Tensor, mode: str | None, kernel: int) -> torch.Tensor:
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
