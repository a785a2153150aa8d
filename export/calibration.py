"""INT8 calibration data: person crops from an annotation file + image folder, through the evaluation pipeline.

Crops come from the same dataset classes (and the same affine crop and normalisation) as evaluation, using the
ground-truth person boxes. They are produced batch by batch, so memory does not grow with the number of crops.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from srpose.config import PoseConfig

__all__ = ["CalibrationReader", "IMAGE_SUFFIXES", "check_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def check_image_folder(folder: str | Path) -> Path:
    """``folder`` as a Path; raises when it does not exist or holds no image files."""
    from srpose.data.datasets import check_image_folder as check_folder

    folder = Path(folder)
    check_folder(folder, "calibration image folder")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        raise ValueError(f"calibration image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "point --calib-images at the folder of the images named in --calib-ann")
    return folder


class CalibrationReader:
    """Batches of N x 3 x H x W float32 crops for calibration; also an ONNX Runtime ``CalibrationDataReader``.

    ``num`` crops (all when ``None``) are taken evenly spread over the dataset's persons, in a fixed order.
    Iterating yields arrays; ``get_next()`` yields ``{input_name: array}`` until exhausted (``rewind()`` restarts).
    :meth:`data_key` identifies the exact data (annotation content, images used, crop settings) for caching.
    """

    def __init__(self, ann_file: str | Path, img_dir: str | Path, cfg: "PoseConfig", *, num: int | None = 512,
                 batch_size: int = 8, input_name: str = "input") -> None:
        from srpose.data import DATASET_CLASSES

        if batch_size < 1:
            raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
        if num is not None and num < 1:
            raise ValueError(f"--calib-num must be >= 1, got {num}")
        self.ann_file, self.img_dir = Path(ann_file), check_image_folder(img_dir)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"calibration annotation file {self.ann_file} does not exist")
        dataset = str(cfg.data.get("dataset", "coco"))
        if dataset not in DATASET_CLASSES:
            raise ValueError(f"no dataset class for {dataset!r}: expected one of {sorted(DATASET_CLASSES)}")
        cls = DATASET_CLASSES[dataset]
        kwargs: dict[str, Any] = {} if dataset == "mpii" else {"use_gt_bbox": True}
        self.dataset = cls(str(self.ann_file), str(self.img_dir), cfg.data, **kwargs)
        n = len(self.dataset)
        count = n if num is None else min(int(num), n)
        self.indices = np.unique(np.linspace(0, n - 1, count).round().astype(np.int64)).tolist()
        self.batch_size = int(batch_size)
        self.input_name = input_name
        self.image_size = tuple(int(v) for v in cfg.image_size)
        self.mean, self.std = list(cfg.data["mean"]), list(cfg.data["std"])
        self._iter: Iterator[np.ndarray] | None = None

    def __len__(self) -> int:
        """Number of batches."""
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    @property
    def num_crops(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.indices), self.batch_size):
            idx = self.indices[start:start + self.batch_size]
            yield np.stack([np.asarray(self.dataset[i]["img"], dtype=np.float32) for i in idx])

    # ONNX Runtime CalibrationDataReader protocol
    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self)
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = None

    def data_key(self) -> str:
        """sha256 over the annotation file, the bytes of every image used, the crops chosen and the preprocessing."""
        h = hashlib.sha256()
        h.update(self.ann_file.read_bytes())
        records = [self.dataset.records[i] for i in self.indices]
        for name in sorted({r["image_file"] for r in records}):
            h.update(name.encode())
            h.update(hashlib.sha256((self.img_dir / name).read_bytes()).digest())
        desc = dict(indices=self.indices, image_size=self.image_size, mean=self.mean, std=self.std,
                    batch_size=self.batch_size,
                    boxes=[[float(v) for v in (*r["center"], *r["scale"])] for r in records])
        h.update(json.dumps(desc, sort_keys=True).encode())
        return h.hexdigest()
