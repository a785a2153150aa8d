"""Plain re-statements of the official decoders, kept only as test oracles and benchmark baselines.

Each function follows the official control flow step by step (per-person, per-joint Python loops included), so
that :mod:`srpose.decode` can be checked against it:

- ``srpose_decode``: SRPose ``TopDownHigher.forward_test`` tail + ``TopDownHigher.keypoints_from_heatmaps``
  (``mmpose/models/detectors/top_down_higher.py`` in the SRPose repository).
- ``keypoints_from_heatmaps``: mmpose 0.x ``mmpose/core/evaluation/top_down_eval.py`` for the
  ``post_process`` values None, ``'default'`` and ``'unbiased'`` (DARK), ``use_udp=False``.
- ``get_max_preds``, ``taylor``, ``gaussian_blur``, ``transform_preds``: the helpers those call.

Not for production use: slow by design.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max location (x, y) and value of every N x K map; location -1 where the value is not positive."""
    assert isinstance(heatmaps, np.ndarray) and heatmaps.ndim == 4
    n, k, _, w = heatmaps.shape
    flat = heatmaps.reshape((n, k, -1))
    idx = np.argmax(flat, 2).reshape((n, k, 1))
    maxvals = np.amax(flat, 2).reshape((n, k, 1))
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = preds[:, :, 1] // w
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1)
    return preds, maxvals


def transform_preds(coords: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size) -> np.ndarray:
    """Map K x 2 heatmap coordinates of one person to the image (mmpose ``transform_preds``, no UDP)."""
    assert coords.shape[1] == 2 and len(center) == 2 and len(scale) == 2 and len(output_size) == 2
    scale = scale * 200.0
    scale_x = scale[0] / output_size[0]
    scale_y = scale[1] / output_size[1]
    target = np.ones_like(coords)
    target[:, 0] = coords[:, 0] * scale_x + center[0] - scale[0] * 0.5
    target[:, 1] = coords[:, 1] * scale_y + center[1] - scale[1] * 0.5
    return target


def taylor(heatmap: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """One Newton step of DARK on a log-heatmap at an integer location (updates ``coord`` in place)."""
    h, w = heatmap.shape[:2]
    px, py = int(coord[0]), int(coord[1])
    if 1 < px < w - 2 and 1 < py < h - 2:
        dx = 0.5 * (heatmap[py][px + 1] - heatmap[py][px - 1])
        dy = 0.5 * (heatmap[py + 1][px] - heatmap[py - 1][px])
        dxx = 0.25 * (heatmap[py][px + 2] - 2 * heatmap[py][px] + heatmap[py][px - 2])
        dxy = 0.25 * (heatmap[py + 1][px + 1] - heatmap[py - 1][px + 1] - heatmap[py + 1][px - 1]
                      + heatmap[py - 1][px - 1])
        dyy = 0.25 * (heatmap[py + 2][px] - 2 * heatmap[py][px] + heatmap[py - 2][px])
        derivative = np.array([[dx], [dy]])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy ** 2 != 0:
            hessianinv = np.linalg.inv(hessian)
            offset = -hessianinv @ derivative
            offset = np.squeeze(np.array(offset.T), axis=0)
            coord += offset
    return coord


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK modulation: zero-padded cv2 Gaussian blur of each map, rescaled to keep its maximum (in place)."""
    import cv2

    assert kernel % 2 == 1
    border = (kernel - 1) // 2
    n, k, h, w = heatmaps.shape
    for i in range(n):
        for j in range(k):
            origin_max = np.max(heatmaps[i, j])
            dr = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
            dr[border:-border, border:-border] = heatmaps[i, j].copy()
            dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
            heatmaps[i, j] = dr[border:-border, border:-border].copy()
            heatmaps[i, j] *= origin_max / np.max(heatmaps[i, j])
    return heatmaps


def keypoints_from_heatmaps(heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
                            post_process: str | None = "default", kernel: int = 11,
                            transform: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """mmpose 0.x simple decoder: arg-max, then quarter shift / DARK / nothing, then map to the image.

    ``transform=False`` returns heatmap-pixel coordinates (the step before ``transform_preds``).
    """
    heatmaps = heatmaps.copy()
    n, k, h, w = heatmaps.shape
    preds, maxvals = get_max_preds(heatmaps)
    if post_process == "unbiased":
        with np.errstate(divide="ignore", invalid="ignore"):
            heatmaps = np.log(np.maximum(gaussian_blur(heatmaps, kernel), 1e-10))
        for i in range(n):
            for j in range(k):
                preds[i][j] = taylor(heatmaps[i][j], preds[i][j])
    elif post_process is not None:
        for i in range(n):
            for j in range(k):
                heatmap = heatmaps[i][j]
                px = int(preds[i][j][0])
                py = int(preds[i][j][1])
                if 1 < px < w - 1 and 1 < py < h - 1:
                    diff = np.array([heatmap[py][px + 1] - heatmap[py][px - 1],
                                     heatmap[py + 1][px] - heatmap[py - 1][px]])
                    preds[i][j] += np.sign(diff) * .25
    if transform:
        for i in range(n):
            preds[i] = transform_preds(preds[i], center[i], scale[i], [w, h])
    return preds, maxvals


def srpose_decode(heatmaps: np.ndarray | torch.Tensor, center: np.ndarray, scale: np.ndarray,
                  transform: bool = True, cell: int = 16, post: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """SRPose ``TopDownHigher`` decoder: 16 x 16 max-pool with indices, cell arg-max, quarter shift, image map.

    ``transform=False`` returns heatmap-pixel coordinates (the step before ``transform_preds``); ``post=False``
    skips the quarter shift (not an official option: the official decoder always shifts).
    """
    output_heatmap = torch.as_tensor(heatmaps)
    max_v, max_i = F.max_pool2d_with_indices(output_heatmap, cell, cell, return_indices=True)
    max_i = max_i.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    w_full = output_heatmap.shape[3]
    max_i[:, :, 0] = max_i[:, :, 0] % w_full
    max_i[:, :, 1] = max_i[:, :, 1] // w_full
    max_v = max_v.cpu().numpy()
    max_i = max_i.cpu().numpy()
    hm = output_heatmap.detach().cpu().numpy()

    n, k, h, w = hm.shape
    preds2, maxvals = get_max_preds(max_v)
    for i in range(n):
        for j in range(k):
            heatmap = hm[i][j]
            _px = int(preds2[i][j][0])
            _py = int(preds2[i][j][1])
            px = max_i[i][j][0][_py][_px]
            py = max_i[i][j][1][_py][_px]
            preds2[i][j][0] = px
            preds2[i][j][1] = py
            if post and 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([heatmap[py][px + 1] - heatmap[py][px - 1],
                                 heatmap[py + 1][px] - heatmap[py - 1][px]])
                preds2[i][j] += np.sign(diff) * .25
    if transform:
        for i in range(n):
            preds2[i] = transform_preds(preds2[i], center[i], scale[i], [w, h])
    return preds2, maxvals
