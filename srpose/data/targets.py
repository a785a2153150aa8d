"""Training targets: MSRA Gaussian heatmaps (mmpose 0.x ``TopDownGenerateTarget``) and their pooling."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["generate_target", "pool_target"]


def generate_target(
    joints: np.ndarray,
    image_size: Sequence[float],
    heatmap_size: Sequence[int],
    sigma: float,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps K x H x W (peak 1) and ``target_weight`` K x 1 for K x 3 crop-space joints.

    The weight is the joint's visibility (> 0 -> 1); joints whose Gaussian lies wholly outside the heatmap get
    weight 0 and an empty map. Without ``unbiased`` the peak sits on the nearest heatmap pixel (MSRA), with it
    the Gaussian is centred at the sub-pixel position (DARK encoding).
    """
    joints = np.asarray(joints, dtype=np.float32)
    if joints.ndim != 2 or joints.shape[1] < 3:
        raise ValueError(f"joints must be K x 3 (x, y, visibility), got shape {joints.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    num_joints = joints.shape[0]
    W, H = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.asarray(image_size, dtype=np.float64) / np.array([W, H], dtype=np.float64)
    target = np.zeros((num_joints, H, W), dtype=np.float32)
    weight = (joints[:, 2:3] > 0).astype(np.float32)
    tmp_size = sigma * 3

    if unbiased:
        xs = np.arange(0, W, 1, np.float32)
        ys = np.arange(0, H, 1, np.float32)[:, None]
        for j in range(num_joints):
            if weight[j, 0] == 0:
                continue
            mu_x = joints[j, 0] / stride[0]
            mu_y = joints[j, 1] / stride[1]
            ul = (mu_x - tmp_size, mu_y - tmp_size)
            br = (mu_x + tmp_size + 1, mu_y + tmp_size + 1)
            if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
                weight[j, 0] = 0
                continue
            target[j] = np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / (2 * sigma**2))
        return target, weight

    size = int(2 * tmp_size + 1)
    g_x = np.arange(0, size, 1, np.float32)
    g_y = g_x[:, None]
    x0 = y0 = size // 2
    gaussian = np.exp(-((g_x - x0) ** 2 + (g_y - y0) ** 2) / (2 * sigma**2))
    for j in range(num_joints):
        mu_x = int(joints[j, 0] / stride[0] + 0.5)
        mu_y = int(joints[j, 1] / stride[1] + 0.5)
        ul = (int(mu_x - tmp_size), int(mu_y - tmp_size))
        br = (int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1))
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            weight[j, 0] = 0
        if weight[j, 0] <= 0.5:
            continue
        gx = max(0, -ul[0]), min(br[0], W) - ul[0]
        gy = max(0, -ul[1]), min(br[1], H) - ul[1]
        ix = max(0, ul[0]), min(br[0], W)
        iy = max(0, ul[1]), min(br[1], H)
        target[j, iy[0]:iy[1], ix[0]:ix[1]] = gaussian[gy[0]:gy[1], gx[0]:gx[1]]
    return target, weight


def pool_target(target: Any, size: Sequence[int]) -> Any:
    """Adaptive average pooling of (N x) K x H x W targets to ``size`` = (h, w), as SRPose's loss does per stage.

    ``size`` follows torch's (height, width) order. Numpy in -> numpy out, torch in -> torch out.
    """
    import torch
    import torch.nn.functional as F

    if len(size) != 2:
        raise ValueError(f"size must be (h, w), got {size!r}")
    size = (int(size[0]), int(size[1]))
    if isinstance(target, np.ndarray):
        if tuple(target.shape[-2:]) == size:
            return target.copy()
        return F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(target)), size).numpy()
    if tuple(target.shape[-2:]) == size:
        return target
    return F.adaptive_avg_pool2d(target, size)
