"""numpy heatmap decoding (no torch): arg-max, SRPose cells, the quarter-pixel shift, DARK, back-projection.

The exact semantics (tie-breaking, non-positive maps, cell grids) are documented in :mod:`srpose.codecs`; the
official decoders they reproduce are restated in ``tests/_decode_ref.py``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import numpy as np

__all__ = ["gaussian_kernel_1d", "heatmap_to_image_np", "decode_srpose_np", "decode_simple_np", "check_heatmaps",
           "check_kernel", "cell_grid", "as_array_n2"]


def gaussian_kernel_1d(size: int) -> np.ndarray:
    """OpenCV's 1-D Gaussian kernel for ``size`` with sigma 0 (``cv2.getGaussianKernel(size, 0, CV_32F)``)."""
    check_kernel(size)
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



def heatmap_to_image_np(coords: np.ndarray, center: Any, scale: Any, heatmap_size: Sequence[int]) -> np.ndarray:
    """N x K x 2 heatmap-pixel coordinates -> image pixels (mmpose ``transform_preds``, no UDP), dtype of
    ``coords``; ``center`` / ``scale`` N x 2 (scale in 200 px), ``heatmap_size`` (W, H)."""
    n = coords.shape[0]
    c = as_array_n2(center, n, "center", dtype=None)
    s = as_array_n2(scale, n, "scale", dtype=None) * 200.0
    sx = (s[:, 0] / int(heatmap_size[0]))[:, None]
    sy = (s[:, 1] / int(heatmap_size[1]))[:, None]
    x = coords[..., 0] * sx + c[:, 0:1] - s[:, 0:1] * 0.5
    y = coords[..., 1] * sy + c[:, 1:2] - s[:, 1:2] * 0.5
    return np.stack([x, y], axis=-1).astype(coords.dtype, copy=False)


def check_heatmaps(heatmaps: Any) -> Tuple[int, int, int, int]:
    """(N, K, H, W) of floating, non-empty N x K x H x W heatmaps (numpy or torch); ValueError / TypeError else."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be N x K x H x W, got shape {tuple(heatmaps.shape)}")
    floating = heatmaps.is_floating_point() if hasattr(heatmaps, "is_floating_point") else \
        np.issubdtype(heatmaps.dtype, np.floating)
    if not floating:
        raise TypeError(f"heatmaps must be floating point, got dtype {heatmaps.dtype}: cast them to float32")
    n, k, h, w = (int(v) for v in heatmaps.shape)
    if n == 0 or k == 0 or h == 0 or w == 0:
        raise ValueError(f"heatmaps must not be empty, got shape {tuple(heatmaps.shape)}")
    return n, k, h, w


def check_kernel(size: int) -> None:
    """ValueError unless ``size`` is a positive odd integer (the DARK modulation kernel)."""
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 != 1:
        raise ValueError(f"modulate_kernel={size!r} must be a positive odd integer (11 for sigma 2, 17 for sigma 3)")


def cell_grid(h: int, w: int, cell: int) -> Tuple[int, int]:
    """Whole ``cell`` x ``cell`` cells (rows, columns) of an H x W map; ValueError when there is none."""
    if not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ValueError(f"cell={cell!r} must be a positive integer (SRPose uses 16)")
    hc, wc = h // cell, w // cell
    if hc == 0 or wc == 0:
        raise ValueError(f"heatmaps of {h} x {w} (H x W) hold no whole {cell} x {cell} cell: use a smaller cell "
                         "or the simple decoder")
    return hc, wc


def as_array_n2(value: Any, n: int, name: str, dtype: Any = np.float32) -> np.ndarray:
    """``value`` (array, list or CPU tensor) as an N x 2 numpy array; ValueError naming ``name`` otherwise."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must be N x 2 = ({n}, 2) to match the heatmaps, got shape {arr.shape}")
    return arr


def decode_srpose_np(heatmaps: np.ndarray, cell: int, post: bool) -> Tuple[np.ndarray, np.ndarray]:
    """SRPose cell decoder: (xy N x K x 2, score N x K x 1) in heatmap pixels."""
    n, k, h, w = heatmaps.shape
    hc, wc = cell_grid(h, w, cell)
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


def decode_simple_np(heatmaps: np.ndarray, mode: str | None, kernel: int) -> Tuple[np.ndarray, np.ndarray]:
    """mmpose simple decoder (``mode`` None, "default" or "unbiased"): (xy N x K x 2, score N x K x 1)."""
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
