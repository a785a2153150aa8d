"""Bottom-up data: the aspect-preserving test resize of mmpose 0.x (``BottomUpGetImgSize`` + ``BottomUpResizeAlign``),
and the COCO image dataset of the bottom-up protocol (every image, no person boxes); the ground-truth maps are the
associative-embedding codec's (``srpose.codecs``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..keypoints import dataset_meta
from .resize import resize_align, resize_align_size  # noqa: F401  (torch-free; re-exported here)
from .transforms import affine_transform, get_affine_transform, normalize_image, read_image, read_rgb

__all__ = ["resize_align_size", "resize_align", "BottomUpCocoDataset", "mirror_joints", "joints_to_input"]


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


class BottomUpCocoDataset(Dataset):
    """Every image of a COCO keypoint file (the bottom-up test protocol), resized with aspect kept and normalised.

    Items: ``img`` 3 x H x W float32, ``center``/``scale`` (image <- input mapping, 200-px units), ``input_size``
    (W, H), ``image_id``, ``image_file``, ``idx`` and ``joints`` (P x K x 3 ground truth in input pixels, for the
    oracle; people with ``iscrowd`` and no keypoints are left out, as mmpose).
    """

    dataset_name = "coco"

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, data_cfg: Mapping[str, Any]) -> None:
        from .datasets import _load_json, _require, check_image_folder, check_person_category

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
        check_person_category(data, self.ann_file)
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
        check_image_folder(self.img_dir)
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

    #: None: items hold normalised float32 3 x H x W inputs; ``bgr`` / ``rgb``: the resized uint8 H x W x 3 pixels
    #: in that channel order (what image-input graphs take: they normalise inside)
    pixels: str | None = None

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self.pixels is None:
            img = self.read_image(idx)
        else:
            img = read_image(Path(self.img_dir) / self.images[idx]["file_name"], self.pixels)
        resized, center, scale = resize_align(img, self.input_size)
        size = (resized.shape[1], resized.shape[0])
        x = normalize_image(resized, self.mean, self.std) if self.pixels is None else np.ascontiguousarray(resized)
        return dict(img=x, center=center, scale=scale,
                    input_size=np.array(size, dtype=np.int64), image_id=self.images[idx]["id"],
                    image_file=self.images[idx]["file_name"], idx=idx,
                    joints=joints_to_input(self.gt_joints[idx], center, scale, size))
