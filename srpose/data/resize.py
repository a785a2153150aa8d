"""The bottom-up test resize of mmpose 0.x (``BottomUpGetImgSize`` + ``BottomUpResizeAlign``), numpy and OpenCV
only: the evaluator's dataset (:mod:`srpose.data.bottom_up`) and the serving pre-processing (:mod:`srpose.serve`)
both use it, the latter in a server process without torch.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .transforms import get_affine_transform

__all__ = ["resize_align_size", "resize_align"]


def _ceil_to(x: float, base: int = 64) -> int:
    return int(math.ceil(x / base)) * base


def resize_align_size(height: int, width: int, input_size: int, current_scale: float = 1.0,
                      min_scale: float = 1.0) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """((w_resized, h_resized), center, scale) of mmpose's bottom-up test resize: the shorter side becomes
    ``input_size`` x scale, the longer one the aspect-kept length rounded up to a multiple of 64; ``scale`` is in
    units of 200 px and covers the padded area."""
    if height <= 0 or width <= 0 or input_size <= 0:
        raise ValueError(f"image {width}x{height} and input size {input_size} must be positive")
    min_input = _ceil_to(min_scale * input_size, 64)
    if width < height:
        w_resized = int(min_input * current_scale / min_scale)
        h_resized = int(_ceil_to(min_input / width * height, 64) * current_scale / min_scale)
        scale_w = width / 200.0
        scale_h = h_resized / w_resized * width / 200.0
    else:
        h_resized = int(min_input * current_scale / min_scale)
        w_resized = int(_ceil_to(min_input / height * width, 64) * current_scale / min_scale)
        scale_h = height / 200.0
        scale_w = w_resized / h_resized * height / 200.0
    center = np.array([round(width / 2.0), round(height / 2.0)], dtype=np.float64)
    return (w_resized, h_resized), center, np.array([scale_w, scale_h], dtype=np.float64)


def resize_align(image: np.ndarray, input_size: int, current_scale: float = 1.0,
                 min_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resized image, center, scale): ``image`` warped to the size of :func:`resize_align_size` (bilinear)."""
    size, center, scale = resize_align_size(image.shape[0], image.shape[1], input_size, current_scale, min_scale)
    trans = get_affine_transform(center, scale, 0, size)
    return cv2.warpAffine(image, trans, size, flags=cv2.INTER_LINEAR), center, scale
