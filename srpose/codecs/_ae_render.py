"""Ground-truth maps of the associative-embedding codec: joint heatmaps and tag maps (mmpose ``HeatmapGenerator``)
for the oracle backend and target encoding."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["render_heatmaps", "render_tag_maps"]


def _gaussian(sigma: float) -> np.ndarray:
    size = int(6 * sigma + 3)
    x = np.arange(0, size, 1, np.float32)
    y = x[:, None]
    x0 = y0 = 3 * sigma + 1
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))


def _paste_windows(joints: np.ndarray, size: Sequence[int], sigma: float):  # noqa: ANN202 - generator
    w, h = int(size[0]), int(size[1])
    g = _gaussian(sigma)
    for p, person in enumerate(joints):
        for k, pt in enumerate(person):
            if pt[2] <= 0:
                continue
            x, y = int(pt[0]), int(pt[1])
            if x < 0 or y < 0 or x >= w or y >= h:
                continue
            ul = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
            br = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
            c, d = max(0, -ul[0]), min(br[0], w) - ul[0]
            a, b = max(0, -ul[1]), min(br[1], h) - ul[1]
            cc, dd = max(0, ul[0]), min(br[0], w)
            aa, bb = max(0, ul[1]), min(br[1], h)
            yield p, k, (slice(aa, bb), slice(cc, dd)), g[a:b, c:d]


def render_heatmaps(joints: np.ndarray, size: Sequence[int], sigma: float) -> np.ndarray:
    """K x h x w Gaussian heatmaps of P x K x 3 joints given in heatmap pixels (mmpose ``HeatmapGenerator``, for
    rectangular maps); ``size`` = (w, h)."""
    joints = np.asarray(joints, dtype=np.float32).reshape(-1, np.shape(joints)[-2], 3)
    hms = np.zeros((joints.shape[1], int(size[1]), int(size[0])), dtype=np.float32)
    for _, k, win, g in _paste_windows(joints, size, sigma):
        hms[k][win] = np.maximum(hms[k][win], g)
    return hms


def render_tag_maps(joints: np.ndarray, size: Sequence[int], sigma: float, tags: Sequence[float],
                    background: float = -100.0) -> np.ndarray:
    """K x h x w tag maps: inside each joint's Gaussian window, the tag of the person whose Gaussian is highest
    there; ``background`` elsewhere."""
    joints = np.asarray(joints, dtype=np.float32).reshape(-1, np.shape(joints)[-2], 3)
    k = joints.shape[1]
    best = np.zeros((k, int(size[1]), int(size[0])), dtype=np.float32)
    out = np.full_like(best, background)
    for p, j, win, g in _paste_windows(joints, size, sigma):
        higher = g > best[j][win]
        out[j][win][higher] = tags[p]
        best[j][win] = np.maximum(best[j][win], g)
    return out
