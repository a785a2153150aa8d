"""Person boxes for top-down pose: a detector model (ONNX or TensorRT engine) in the formats users have, a COCO
detection-results file, or the whole image.

Detector formats (read from the file's outputs and metadata, or named):

- ``yolo``: Ultralytics YOLOv8 / YOLO11 exports, one output ``1 x (4 + classes) x anchors`` (cx, cy, w, h in
  letterboxed pixels, then class scores), metadata ``names``, ``stride``, ``imgsz``; input RGB / 255, letterboxed
  (centred, grey 114) as Ultralytics' ``LetterBox``;
- ``yolo-end2end``: Ultralytics exports with NMS inside, one output ``1 x N x 6`` (x1, y1, x2, y2, score, class),
  same input;
- ``mmdeploy``: mmdeploy / RTMDet / YOLOX style, outputs ``dets 1 x N x 5`` (x1, y1, x2, y2, score) and ``labels
  1 x N``; input BGR, resized with the aspect kept into the top-left corner (pad 114), raw 0..255 (YOLOX) unless a
  mean / std is given (RTMDet: 103.53, 116.28, 123.675 / 57.375, 57.12, 58.395).

Boxes are mapped back by the exact inverse of the letterbox, kept for the person class only, above a score
threshold, and de-duplicated with OpenCV's ``NMSBoxes``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

__all__ = ["DETECTOR_FORMATS", "DetectorOptions", "PersonDetector", "Letterbox", "BoxFile", "whole_image_box",
           "detector_format"]

DETECTOR_FORMATS = ("yolo", "yolo-end2end", "mmdeploy")


@dataclass
class DetectorOptions:
    """``format`` None: read from the file; ``score_thr`` on the person score; ``nms_iou`` of ``NMSBoxes``;
    ``person_class`` None: the class named ``person`` in the metadata, else 0 (COCO); ``mean`` / ``std``
    (``mmdeploy`` inputs, BGR, 0..255 scale); ``max_persons`` kept per image, best first."""

    format: str | None = None
    score_thr: float = 0.3
    nms_iou: float = 0.45
    person_class: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    max_persons: int = 100

    def check(self) -> None:
        if self.format is not None and self.format not in DETECTOR_FORMATS:
            raise ValueError(f"--detector-format {self.format!r}: expected one of {', '.join(DETECTOR_FORMATS)}")
        if not 0 <= self.score_thr <= 1 or not 0 < self.nms_iou <= 1:
            raise ValueError(f"detector score threshold {self.score_thr} must be in [0, 1] and NMS IoU "
                             f"{self.nms_iou} in (0, 1]")
        if self.max_persons < 1:
            raise ValueError(f"max persons per image must be >= 1, got {self.max_persons}")


@dataclass(frozen=True)
class Letterbox:
    """Aspect-keeping resize of an image of ``image_hw`` into ``input_hw``: scale ``r`` and offsets
    (``left``, ``top``); centred as Ultralytics' LetterBox, or at the top left (mmdeploy / mmdet)."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    center: bool = True

    @property
    def r(self) -> float:
        return min(self.input_hw[0] / self.image_hw[0], self.input_hw[1] / self.image_hw[1])

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the resized image."""
        return int(round(self.image_hw[1] * self.r)), int(round(self.image_hw[0] * self.r))

    @property
    def offset(self) -> tuple[int, int]:
        if not self.center:
            return 0, 0
        w, h = self.size
        dw, dh = (self.input_hw[1] - w) / 2, (self.input_hw[0] - h) / 2
        return int(round(dw - 0.1)), int(round(dh - 0.1))  # Ultralytics' rounding

    def apply(self, image: np.ndarray, pad: int = 114) -> np.ndarray:
        w, h = self.size
        out = np.full((*self.input_hw, 3), pad, np.uint8)
        left, top = self.offset
        resized = image if (w, h) == (image.shape[1], image.shape[0]) else \
            cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        out[top:top + h, left:left + w] = resized
        return out

    def invert(self, xyxy: np.ndarray) -> np.ndarray:
        """N x 4 (x1, y1, x2, y2) in the input -> in the image, clipped to it."""
        left, top = self.offset
        b = (np.asarray(xyxy, np.float64) - [left, top, left, top]) / self.r
        b[:, 0::2] = b[:, 0::2].clip(0, self.image_hw[1])
        b[:, 1::2] = b[:, 1::2].clip(0, self.image_hw[0])
        return b


def _meta(props: Mapping[str, str]) -> dict[str, Any]:
    """Ultralytics metadata values (Python literals in strings)."""
    out = {}
    for k, v in props.items():
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def detector_format(output_shapes: Mapping[str, Sequence[Any]], meta: Mapping[str, Any], path: str) -> str:
    """The format of a detector with these outputs (name -> shape) and metadata; ValueError naming what it saw."""
    shapes = {k: list(v) for k, v in output_shapes.items()}
    if len(shapes) == 2 and any(len(s) == 3 and s[-1] == 5 for s in shapes.values()) and \
            any(len(s) == 2 for s in shapes.values()):
        return "mmdeploy"
    if len(shapes) == 1:
        (s,) = shapes.values()
        if len(s) == 3 and s[-1] == 6:
            return "yolo-end2end"
        if len(s) == 3 and isinstance(s[1], int) and s[1] >= 5 and (not isinstance(s[2], int) or s[2] > s[1]):
            return "yolo"
    raise ValueError(f"detector {path}: outputs {shapes} (metadata keys {sorted(meta)}) match no known format: "
                     "Ultralytics YOLOv8/YOLO11 '1 x (4 + classes) x anchors', Ultralytics end-to-end '1 x N x 6' "
                     "(x1, y1, x2, y2, score, class), or mmdeploy 'dets 1 x N x 5' + 'labels 1 x N'; name the format "
                     f"with --detector-format ({', '.join(DETECTOR_FORMATS)}) if the shapes are dynamic")


class PersonDetector:
    """A person detector model (``.onnx`` in ONNX Runtime, ``.engine`` / ``.plan`` in TensorRT): ``detect(image)``
    -> N x 5 boxes (x, y, w, h in image pixels, score), best first."""

    def __init__(self, model: str | Path, options: DetectorOptions | None = None, *, device: str = "cpu") -> None:
        from srpose.engines import open_backend

        self.options = opts = options or DetectorOptions()
        opts.check()
        self.path = Path(model)
        if not self.path.is_file():
            raise FileNotFoundError(f"detector {self.path} does not exist")
        self.backend = open_backend(self.path, device=device)
        meta, shapes, self.input_hw = self._describe()
        self.format = opts.format or detector_format(shapes, meta, str(self.path))
        names = meta.get("names")
        if opts.person_class is not None:
            self.person = int(opts.person_class)
        elif isinstance(names, Mapping):
            self.person = next((int(k) for k, v in names.items() if str(v).lower() == "person"), 0)
        elif isinstance(names, (list, tuple)):
            self.person = next((i for i, v in enumerate(names) if str(v).lower() == "person"), 0)
        else:
            self.person = 0
        self.output_names = list(shapes)

    def _describe(self) -> tuple[dict[str, Any], dict[str, list[Any]], tuple[int, int]]:
        session = getattr(self.backend, "session", None)
        if session is not None:  # ONNX Runtime: shapes and metadata from the session
            meta = _meta(session.get_modelmeta().custom_metadata_map)
            shapes = {o.name: list(o.shape) for o in session.get_outputs()}
            in_shape = list(session.get_inputs()[0].shape)
        else:  # TensorRT: the engine's I/O
            meta = {}
            shapes = {n: list(self.backend.output_shapes[n]) for n in self.backend.output_names}
            in_shape = [1, *self.backend.input_shape]
        hw = [d if isinstance(d, int) and d > 0 else None for d in in_shape[2:4]]
        imgsz = meta.get("imgsz") or [640, 640]
        imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz)
        return meta, shapes, (int(hw[0] or imgsz[0]), int(hw[1] or imgsz[1]))

    def _input(self, image: np.ndarray, box: Letterbox) -> np.ndarray:
        x = box.apply(image)
        if self.format == "mmdeploy":
            x = x.astype(np.float32)
            if self.options.mean is not None:
                x = (x - np.asarray(self.options.mean, np.float32)) / np.asarray(self.options.std or (1, 1, 1),
                                                                                 np.float32)
        else:
            x = x[..., ::-1].astype(np.float32) / 255.0  # RGB, 0..1
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def _candidates(self, out: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N x 4 x1 y1 x2 y2 in the input, N scores) of the person class."""
        if self.format == "yolo":
            (a,) = out.values()
            a = np.asarray(a)[0].T  # anchors x (4 + classes)
            cls = 4 + self.person
            if cls >= a.shape[1]:
                raise ValueError(f"detector {self.path}: person class {self.person} but the output has "
                                 f"{a.shape[1] - 4} classes")
            cx, cy, w, h, s = a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, cls]
            return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), s
        if self.format == "yolo-end2end":
            (a,) = out.values()
            a = np.asarray(a)[0]
            keep = a[:, 5].round() == self.person
            return a[keep, :4], a[keep, 4]
        dets = next(np.asarray(v)[0] for v in out.values() if np.asarray(v).ndim == 3)
        labels = next(np.asarray(v)[0] for v in out.values() if np.asarray(v).ndim == 2)
        keep = labels.round() == self.person
        return dets[keep, :4], dets[keep, 4]

    def detect(self, image: np.ndarray) -> np.ndarray:
        """N x 5 person boxes (x, y, w, h, score) of a BGR image, best first."""
        return self.submit(image)()

    def submit(self, image: np.ndarray) -> Callable[[], np.ndarray]:
        """Start detecting ``image`` (asynchronously where the backend runs so, as TensorRT does); the returned
        function waits and gives :meth:`detect`'s boxes. Lets the pose graph run while the detector does."""
        box = Letterbox(tuple(image.shape[:2]), self.input_hw, center=self.format != "mmdeploy")
        pending = self.backend.submit(self._input(image, box))
        return lambda: self._boxes(pending.result(), box)

    def _boxes(self, out: Mapping[str, np.ndarray], box: Letterbox) -> np.ndarray:
        xyxy, scores = self._candidates(out)
        ok = np.isfinite(scores) & (scores >= self.options.score_thr) & np.isfinite(xyxy).all(1)
        xyxy, scores = box.invert(xyxy[ok]), scores[ok].astype(np.float64)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
        sized = (xywh[:, 2] > 1) & (xywh[:, 3] > 1)
        xywh, scores = xywh[sized], scores[sized]
        if not len(xywh):
            return np.zeros((0, 5), np.float32)
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.options.score_thr, self.options.nms_iou)
        keep = np.asarray(keep, np.int64).reshape(-1)[: self.options.max_persons]
        return np.concatenate([xywh[keep], scores[keep, None]], 1).astype(np.float32)

    def close(self) -> None:
        self.backend.close()


def whole_image_box(image: np.ndarray) -> np.ndarray:
    """The whole image as one person box (score 1)."""
    h, w = image.shape[:2]
    return np.array([[0.0, 0.0, float(w), float(h), 1.0]], np.float32)


class BoxFile:
    """Person boxes from a COCO detection-results file (``image_id``, ``bbox`` x y w h, ``score``, ``category_id``
    1), for the frames of the sources by name: the file's own ``file_name`` keys, else an annotation file's
    ``images`` (``ann``), else the image id as a number in the file name (COCO's ``000000000785.jpg``), and for
    videos the frame number (image id = frame + 1, as ``srpose predict`` writes them)."""

    def __init__(self, path: str | Path, *, ann: str | Path | None = None) -> None:
        from srpose.data.boxes import check_boxes
        from srpose.data.datasets import _load_json

        self.path = Path(path)
        dets = _load_json(self.path, "detection file")
        if not isinstance(dets, list):
            raise ValueError(f"detection file {self.path} must hold a JSON list of detections")
        people: list[tuple[int, Any]] = []
        for i, d in enumerate(dets):
            if not isinstance(d, Mapping) or not {"image_id", "bbox", "score"} <= set(d):
                raise ValueError(f"detection file {self.path}: entry {i} needs image_id, bbox and score")
            if d.get("category_id", 1) == 1:
                people.append((i, d))
        rows = np.asarray([[*map(float, d["bbox"][:4]), float(d["score"])] for _, d in people],
                          np.float64).reshape(-1, 5)
        check_boxes(rows, label=lambda k: f"detection file {self.path}: entry {people[k][0]}")  # as the evaluator
        by_id: dict[Any, list[list[float]]] = {}
        for (_, d), row in zip(people, rows.tolist()):
            by_id.setdefault(d["image_id"], []).append(row)
        self.by_id = by_id
        self.names: dict[str, Any] = {}
        if ann is not None:
            images = _load_json(ann, "annotation file").get("images", [])
            self.names = {im["file_name"]: im["id"] for im in images}

    def boxes(self, name: str, frame: int | None = None) -> np.ndarray:
        """The boxes of image ``name`` (a file name), or of frame ``frame`` of a video."""
        key: Any = self.names.get(name, self.names.get(Path(name).name))
        if key is None and frame is not None:
            key = frame + 1
        if key is None:
            digits = "".join(c for c in Path(name).stem if c.isdigit())
            key = int(digits) if digits else name
        rows = self.by_id.get(key, [])
        return np.asarray(rows, np.float32).reshape(-1, 5)
