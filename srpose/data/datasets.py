"""Top-down person datasets (COCO, CrowdPose, MPII) with mmpose 0.x box and annotation semantics.

Every dataset yields one sample per person box: the normalised crop plus the metadata needed to map predictions
back to the image (``center``, ``scale``) and to score them (``bbox_score``, ``image_id``, ``idx``).
All inputs are checked when the dataset is built, so a bad path or file fails before any work starts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..keypoints import dataset_meta
from .boxes import check_boxes
from .checks import _examples, check_image_folder, check_person_category, without_bad_images  # noqa: F401 (re-exp.)
from .transforms import TopDownPipeline, box_to_center_scale, read_rgb

__all__ = ["TopDownDataset", "TopDownCocoDataset", "TopDownCrowdPoseDataset", "TopDownMpiiDataset", "collate",
           "check_person_category", "check_image_folder", "without_bad_images"]


def _load_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON (not UTF-8 text): is it the right file?") from None


def _require(obj: Any, keys: Sequence[str], where: str, path: str | os.PathLike) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"annotation file {str(path)!r}: {where} must be a JSON object, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise ValueError(f"annotation file {str(path)!r}: {where} is missing the key {key!r}")


def _sorted(items: Any) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


class TopDownDataset(Dataset):
    """Base class: a list of person records (image_file, center, scale, bbox_score, image_id, joints?)."""

    dataset_name = "base"

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, data_cfg: Mapping[str, Any],
                 *, train: bool = False) -> None:
        self.ann_file = str(ann_file)
        self.img_dir = str(img_dir)
        self.train = bool(train)
        meta = dataset_meta(self.dataset_name)
        self.sigmas = None if meta["sigmas"] is None else np.asarray(meta["sigmas"], dtype=np.float64)
        n_meta = len(meta["joints"])
        cfg = dict(data_cfg)
        if "image_size" not in cfg:
            raise ValueError("data_cfg is missing 'image_size' (w, h) of the network input")
        cfg.setdefault("heatmap_size", cfg["image_size"])
        cfg.setdefault("num_joints", n_meta)
        if int(cfg["num_joints"]) != n_meta:
            raise ValueError(
                f"data_cfg num_joints={cfg['num_joints']} but {self.dataset_name} has {n_meta} joints: "
                f"use a {self.dataset_name} config"
            )
        cfg.setdefault("flip_pairs", [list(p) for p in meta["flip_pairs"]])
        cfg.setdefault("upper_body_ids", list(meta["upper_body"]))
        self.data_cfg = cfg
        self.num_joints = n_meta
        self.flip_pairs = [tuple(int(i) for i in p) for p in cfg["flip_pairs"]]
        self.pipeline = TopDownPipeline(cfg, train=self.train)
        self.records: list[dict[str, Any]] = []
        self.has_gt_joints = False
        self._rng_seed: int | None = None
        self._rng: np.random.Generator | None = None

    # -- construction helpers -------------------------------------------------------------------------
    def _finish(self, empty_reason: str) -> None:
        if not self.records:
            raise ValueError(f"no person boxes to use from {self.ann_file!r}: {empty_reason}")
        check_image_folder(self.img_dir)
        names = sorted({r["image_file"] for r in self.records})
        missing = [n for n in names if not (Path(self.img_dir) / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(names)} images not found in folder {self.img_dir!r}: {_examples(missing)}; "
                f"point the image folder at the files named in {self.ann_file!r}"
            )
        self.num_images = len(names)

    # -- torch Dataset --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        seed = int(info.seed if info is not None else torch.initial_seed()) % (2**63)
        if self._rng is None or self._rng_seed != seed:
            self._rng, self._rng_seed = np.random.default_rng(seed), seed
        return self._rng

    def read_image(self, idx: int) -> np.ndarray:
        """RGB uint8 image (H x W x 3, read-only) of record ``idx``. The last image read is kept: the persons of
        one image are consecutive records, so an image is decoded once, not once per person."""
        name = self.records[idx]["image_file"]
        cached = getattr(self, "_last_image", None)
        if cached is not None and cached[0] == name:
            return cached[1]
        img = read_rgb(Path(self.img_dir) / name)
        img.flags.writeable = False  # shared by the persons of the image: the pipeline must not write into it
        self._last_image = (name, img)
        return img

    def __getitem__(self, idx: int) -> dict[str, Any]:
        rec = self.records[idx]
        rng = self._generator() if self.train else None
        out = self.pipeline(self.read_image(idx), rec, rng)
        out.update(
            bbox_score=np.float32(rec["bbox_score"]),
            image_id=np.int64(rec["image_id"]),
            idx=np.int64(idx),
            image_file=rec["image_file"],
        )
        return out


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples: ``img``/``target``/``target_weight`` as torch tensors, other arrays stacked in numpy,
    strings as lists. A module-level function, so DataLoader workers can pickle it."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if key in ("img", "target", "target_weight"):
            out[key] = torch.from_numpy(np.stack(vals))
        elif isinstance(vals[0], str):
            out[key] = vals
        else:
            out[key] = np.stack([np.asarray(v) for v in vals])
    return out


class TopDownCocoDataset(TopDownDataset):
    """COCO person keypoints: GT boxes from the annotations or person boxes from a detection results file.

    ``use_gt_bbox`` defaults to "no ``det_file`` given"; training always uses GT boxes. ``det_bbox_thr``
    defaults to ``data_cfg['det_bbox_thr']`` (else 0).
    """

    dataset_name = "coco"

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, data_cfg: Mapping[str, Any], *,
                 det_file: str | os.PathLike | None = None, use_gt_bbox: bool | None = None,
                 det_bbox_thr: float | None = None, train: bool = False, seed: int | None = None) -> None:
        super().__init__(ann_file, img_dir, data_cfg, train=train)
        if use_gt_bbox is None:
            use_gt_bbox = det_file is None
        if det_bbox_thr is None:
            det_bbox_thr = float(self.data_cfg.get("det_bbox_thr", 0.0))
        self.use_gt_bbox = bool(use_gt_bbox) or self.train
        self.det_file = None if det_file is None else str(det_file)
        self.det_bbox_thr = float(det_bbox_thr)
        if not self.use_gt_bbox and self.det_file is None:
            raise ValueError("detection boxes requested (use_gt_bbox=False) but no det_file given: "
                             "pass a person detection results file or use GT boxes")
        self._load_annotations()
        jitter = np.random.default_rng(seed) if self.train else None
        if self.use_gt_bbox:
            self.has_gt_joints = True
            self._load_gt_boxes(jitter)
            reason = "no annotation has a valid box with labelled keypoints"
        else:
            self._load_det_boxes()
            reason = (f"no detection in {self.det_file!r} is a person (category_id 1) with score >= "
                      f"{self.det_bbox_thr}")
        self._finish(reason)

    def _load_annotations(self) -> None:
        data = _load_json(self.ann_file, "annotation file")
        _require(data, ("images", "annotations"), "the top level", self.ann_file)
        check_person_category(data, self.ann_file, required=not self.train)
        self.images: dict[int, dict[str, Any]] = {}
        for i, img in enumerate(data["images"]):
            _require(img, ("id", "file_name", "width", "height"), f"images[{i}]", self.ann_file)
            self.images[img["id"]] = img
        self.img_to_anns: dict[int, list[dict[str, Any]]] = {k: [] for k in self.images}
        for i, ann in enumerate(data["annotations"]):
            _require(ann, ("image_id", "bbox", "keypoints"), f"annotations[{i}]", self.ann_file)
            if ann["image_id"] not in self.images:
                raise ValueError(f"annotation file {self.ann_file!r}: annotations[{i}] refers to image_id "
                                 f"{ann['image_id']!r}, which is not in 'images'")
            if len(ann["keypoints"]) != 3 * self.num_joints:
                raise ValueError(f"annotation file {self.ann_file!r}: annotations[{i}] has "
                                 f"{len(ann['keypoints'])} keypoint values, expected 3 x {self.num_joints} "
                                 f"for {self.dataset_name}")
            self.img_to_anns[ann["image_id"]].append(ann)
        self.image_ids = list(self.images)

    def _load_gt_boxes(self, jitter: np.random.Generator | None) -> None:
        image_size = self.data_cfg["image_size"]
        for img_id in self.image_ids:
            info = self.images[img_id]
            width, height = info["width"], info["height"]
            for ann in self.img_to_anns[img_id]:
                if ann.get("iscrowd", 0):
                    continue
                x, y, w, h = ann["bbox"][:4]
                x1, y1 = max(0, x), max(0, y)
                x2 = min(width - 1, x1 + max(0, w - 1))
                y2 = min(height - 1, y1 + max(0, h - 1))
                if not (("area" not in ann or ann["area"] > 0) and x2 > x1 and y2 > y1):
                    continue
                kpts = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
                if kpts.max() == 0 or ann.get("num_keypoints", 1) == 0:
                    continue
                joints = np.zeros((self.num_joints, 3), dtype=np.float32)
                joints[:, :2] = kpts[:, :2]
                joints[:, 2] = np.minimum(1, kpts[:, 2])
                box = [x1, y1, x2 - x1, y2 - y1]
                center, scale = box_to_center_scale(*box, image_size, rng=jitter)
                self.records.append(dict(image_file=info["file_name"], image_id=img_id, center=center,
                                         scale=scale, bbox=box, bbox_score=1.0, joints=joints))

    def _load_det_boxes(self) -> None:
        dets = _load_json(self.det_file, "detection file")
        if not isinstance(dets, list):
            raise ValueError(f"detection file {self.det_file!r} must hold a JSON list of detections, "
                             f"got {type(dets).__name__}")
        unknown = _sorted({d.get("image_id") for d in dets if isinstance(d, Mapping)} - set(self.images))
        if unknown:
            raise ValueError(f"detection file {self.det_file!r}: {len(unknown)} image_ids are not in the "
                             f"annotation file {self.ann_file!r}: {_examples(unknown)}; use the detections "
                             f"made for this annotation file")
        for i, det in enumerate(dets):
            if not isinstance(det, Mapping):
                raise ValueError(f"detection file {self.det_file!r}: entry {i} must be a JSON object")
            for key in ("image_id", "bbox", "score", "category_id"):
                if key not in det:
                    raise ValueError(f"detection file {self.det_file!r}: entry {i} is missing the key {key!r}")
        people = [(i, det) for i, det in enumerate(dets) if det["category_id"] == 1]
        rows = np.zeros((len(people), 5), np.float64)
        for k, (i, det) in enumerate(people):
            try:
                if len(det["bbox"]) < 4 or isinstance(det["score"], (bool, str)):
                    raise TypeError
                rows[k] = [*det["bbox"][:4], det["score"]]
            except (TypeError, ValueError):
                raise ValueError(f"detection file {self.det_file!r}: entry {i} (image_id {det['image_id']!r}) needs "
                                 f"'bbox' [x, y, w, h] and a numeric 'score', got {det['bbox']!r} and "
                                 f"{det['score']!r}") from None
        hw = [(self.images[det["image_id"]]["height"], self.images[det["image_id"]]["width"]) for _, det in people]
        try:  # the boxes a served model would refuse are refused here too
            check_boxes(rows, np.asarray(hw, np.float64).reshape(-1, 2), label=lambda k: (
                f"detection file {self.det_file!r}: entry {people[k][0]} (image_id {people[k][1]['image_id']!r})"))
        except ValueError as e:
            raise ValueError(f"{e}: fix or drop that detection") from None
        image_size = self.data_cfg["image_size"]
        for (i, det), row in zip(people, rows):
            if row[4] < self.det_bbox_thr:
                continue
            info = self.images[det["image_id"]]
            center, scale = box_to_center_scale(*row[:4], image_size)
            self.records.append(dict(image_file=info["file_name"], image_id=det["image_id"], center=center,
                                     scale=scale, bbox=row[:4].tolist(), bbox_score=float(row[4]), joints=None))


class TopDownCrowdPoseDataset(TopDownCocoDataset):
    """CrowdPose (14 joints), COCO-format annotations with a per-image ``crowdIndex``."""

    dataset_name = "crowdpose"


class TopDownMpiiDataset(TopDownDataset):
    """MPII single-person boxes from the mmpose json (image, center, scale, joints, joints_vis).

    As mmpose: the centre moves down by 15 x scale and the scale is padded by 1.25 (unless the centre is -1),
    and 1-based MATLAB coordinates become 0-based. ``headbox`` ([x1, y1, x2, y2]) entries, when present, give
    the PCKh head size; otherwise the upper-neck to head-top distance is used.
    """

    dataset_name = "mpii"

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, data_cfg: Mapping[str, Any], *,
                 train: bool = False, **_: Any) -> None:
        super().__init__(ann_file, img_dir, data_cfg, train=train)
        anno = _load_json(self.ann_file, "annotation file")
        if not isinstance(anno, list):
            raise ValueError(f"annotation file {self.ann_file!r} must hold a JSON list of MPII persons, "
                             f"got {type(anno).__name__}")
        self.has_gt_joints = True
        image_ids: dict[str, int] = {}
        self.image_ids = []
        for i, a in enumerate(anno):
            _require(a, ("image", "center", "scale", "joints", "joints_vis"), f"entry {i}", self.ann_file)
            center = np.array(a["center"], dtype=np.float32)
            scale = np.array([a["scale"], a["scale"]], dtype=np.float32)
            if center[0] != -1:
                center[1] = center[1] + 15 * scale[1]
                scale = scale * 1.25
            center = center - 1
            joints_src = np.asarray(a["joints"], dtype=np.float32)
            vis = np.asarray(a["joints_vis"], dtype=np.float32).reshape(-1)
            if joints_src.shape != (self.num_joints, 2) or vis.shape != (self.num_joints,):
                raise ValueError(f"annotation file {self.ann_file!r}: entry {i} must have {self.num_joints} "
                                 f"joints (x, y) and joints_vis, got {joints_src.shape} and {vis.shape}")
            joints = np.zeros((self.num_joints, 3), dtype=np.float32)
            joints[:, :2] = joints_src - 1
            joints[:, 2] = vis
            if "headbox" in a:
                hb = np.asarray(a["headbox"], dtype=np.float64).reshape(-1)
                headsize = 0.6 * float(np.linalg.norm(hb[2:4] - hb[0:2]))
            elif vis[8] > 0 and vis[9] > 0:
                headsize = float(np.linalg.norm(joints_src[9] - joints_src[8]))
            else:
                headsize = float("nan")
            image_id = image_ids.setdefault(a["image"], len(image_ids))
            if image_id == len(self.image_ids):
                self.image_ids.append(image_id)
            self.records.append(dict(image_file=a["image"], image_id=image_id, center=center,
                                     scale=scale.astype(np.float32), bbox_score=1.0, joints=joints,
                                     headsize=headsize))
        self.image_names = list(image_ids)
        self._finish("the annotation list is empty")


#: top-down dataset class of each evaluation protocol
DATASET_CLASSES: dict[str, type[TopDownDataset]] = {
    "coco": TopDownCocoDataset,
    "crowdpose": TopDownCrowdPoseDataset,
    "mpii": TopDownMpiiDataset,
}
