"""Bottom-up data: the aspect-preserving test resize of mmpose 0.x (``BottomUpGetImgSize`` + ``BottomUpResizeAlign``),
the COCO image dataset of the bottom-up protocol (every image, no person boxes) and ground-truth rendering of
heatmaps and tag maps (``HeatmapGenerator``) for the oracle.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..keypoints import dataset_meta
from .transforms import affine_transform, get_affine_transform, normalize_image, read_rgb

__all__ = ["resize_align_size", "resize_align", "BottomUpCocoDataset", "render_heatmaps", "render_tag_maps",
           "mirror_joints", "joints_to_input"]


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


def joints_to_input(joints: np.ndarray, center: Sequence[float], scale: Sequence[float],
                    size: Sequence[int]) -> np.ndarray:
    """Image-pixel joints P x K x 3 mapped into the resized input (visibility kept)."""
    joints = np.asarray(joints, dtype=np.float32).copy()
    if joints.size:
        trans = get_affine_transform(center, scale, 0, size)
        joints[..., :2] = affine_transform(joints[..., :2], trans)
    return joints


def mirror_joints(joints: np.ndarray, width: int, flip_index: Sequence[int]) -> np.ndarray:
    """P x K x 3 joints of a ``width``-pixel-wide input, as seen in its mirror image (x -> width - 1 - x, left and
    right swapped)."""
    out = np.asarray(joints, dtype=np.float32)[:, list(flip_index)].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


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


class BottomUpCocoDataset(Dataset):
    """Every image of a COCO keypoint file (the bottom-up test protocol), resized with aspect kept and normalised.

    Items: ``img`` 3 x H x W float32, ``center``/``scale`` (image <- input mapping, 200-px units), ``input_size``
    (W, H), ``image_id``, ``image_file``, ``idx`` and ``joints`` (P x K x 3 ground truth in input pixels, for the
    oracle; people with ``iscrowd`` and no keypoints are left out, as mmpose).
    """

    dataset_name = "coco"

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, data_cfg: Mapping[str, Any]) -> None:
        from .datasets import _load_json, _require

        self.ann_file, self.img_dir = str(ann_file), str(img_dir)
        meta = dataset_meta(self.dataset_name)
        self.num_joints = len(meta["joints"])
        self.sigmas = np.asarray(meta["sigmas"], dtype=np.float64)
        cfg = dict(data_cfg)
        if int(cfg.get("num_joints", self.num_joints)) != self.num_joints:
            raise ValueError(f"data_cfg num_joints={cfg['num_joints']} but COCO has {self.num_joints} joints")
        size = cfg.get("image_size", 512)
        self.input_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        if self.input_size % 64:
            raise ValueError(f"bottom-up input size {self.input_size} must be a multiple of 64")
        self.mean, self.std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        self.flip_pairs = [tuple(p) for p in cfg.get("flip_pairs", meta["flip_pairs"])]
        self.data_cfg = cfg
        data = _load_json(self.ann_file, "annotation file")
        _require(data, ("images", "annotations"), "the top level", self.ann_file)
        self.images: list[dict[str, Any]] = []
        for i, img in enumerate(data["images"]):
            _require(img, ("id", "file_name"), f"images[{i}]", self.ann_file)
            self.images.append(img)
        by_id: dict[Any, list[np.ndarray]] = {img["id"]: [] for img in self.images}
        for i, ann in enumerate(data["annotations"]):
            _require(ann, ("image_id", "keypoints"), f"annotations[{i}]", self.ann_file)
            if ann["image_id"] not in by_id:
                raise ValueError(f"annotation file {self.ann_file!r}: annotations[{i}] refers to image_id "
                                 f"{ann['image_id']!r}, which is not in 'images'")
            if len(ann["keypoints"]) != 3 * self.num_joints:
                raise ValueError(f"annotation file {self.ann_file!r}: annotations[{i}] has {len(ann['keypoints'])} "
                                 f"keypoint values, expected {3 * self.num_joints}")
            if ann.get("iscrowd", 0) == 0 or ann.get("num_keypoints", 0) > 0:
                by_id[ann["image_id"]].append(np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3))
        self.gt_joints = [np.stack(by_id[img["id"]]) if by_id[img["id"]]
                          else np.zeros((0, self.num_joints, 3), np.float32) for img in self.images]
        if not self.images:
            raise ValueError(f"annotation file {self.ann_file!r} lists no images")
        if not Path(self.img_dir).is_dir():
            raise FileNotFoundError(f"image folder {self.img_dir!r} does not exist")
        missing = [im["file_name"] for im in self.images if not (Path(self.img_dir) / im["file_name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.images)} images not found in folder "
                                    f"{self.img_dir!r}, e.g. {missing[:3]}; point the image folder at the files "
                                    f"named in {self.ann_file!r}")
        self.num_images = len(self.images)
        self.has_gt_joints = True

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, idx: int) -> np.ndarray:
        """RGB uint8 image of item ``idx``."""
        return read_rgb(Path(self.img_dir) / self.images[idx]["file_name"])

    def __getitem__(self, idx: int) -> dict[str, Any]:
        img = self.read_image(idx)
        resized, center, scale = resize_align(img, self.input_size)
        size = (resized.shape[1], resized.shape[0])
        return dict(img=normalize_image(resized, self.mean, self.std), center=center, scale=scale,
                    input_size=np.array(size, dtype=np.int64), image_id=self.images[idx]["id"],
                    image_file=self.images[idx]["file_name"], idx=idx,
                    joints=joints_to_input(self.gt_joints[idx], center, scale, size))
