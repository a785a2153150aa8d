"""Tiny person-detector ONNX graphs in the formats users have (no detector weights here): their outputs are constants
that place known boxes on a given non-square image through the format's own letterbox, plus a duplicate (for NMS),
a non-person and a low-score box."""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: person boxes (x, y, w, h) on a 480 x 320 (w x h) image, and their scores
BOXES = np.array([[50.0, 40.0, 100.0, 200.0], [300.0, 100.0, 120.0, 180.0]])
SCORES = np.array([0.9, 0.85])
IMAGE_HW = (320, 480)
INPUT = 640
NAMES = {0: "person", 1: "car", 2: "dog"}


def _letterboxed(boxes: np.ndarray, center: bool) -> np.ndarray:
    """x1, y1, x2, y2 of image boxes in the 640 x 640 input."""
    from srpose.eval._detect import Letterbox

    lb = Letterbox(IMAGE_HW, (INPUT, INPUT), center=center)
    left, top = lb.offset
    x1, y1 = boxes[:, 0] * lb.r + left, boxes[:, 1] * lb.r + top
    return np.stack([x1, y1, x1 + boxes[:, 2] * lb.r, y1 + boxes[:, 3] * lb.r], 1)


def _rows(center: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x1 y1 x2 y2 rows, scores, classes): the two persons, a shifted duplicate of the first (lower score), a car
    and a low-score person."""
    xyxy = _letterboxed(BOXES, center)
    dup = xyxy[0] + [2, 1, 2, 1]
    car = _letterboxed(np.array([[200.0, 200.0, 80.0, 60.0]]), center)[0]
    low = _letterboxed(np.array([[10.0, 10.0, 40.0, 40.0]]), center)[0]
    rows = np.stack([xyxy[0], xyxy[1], dup, car, low])
    return rows, np.array([0.9, 0.85, 0.8, 0.95, 0.05]), np.array([0, 0, 0, 1, 0])


def _save(path: Path, outputs: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """A graph from ``images`` 1 x 3 x 640 x 640 to the constant ``outputs`` (tied to the input by x 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
             helper.make_node("Mul", ["s", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        const = f"{name}_const"
        inits.append(numpy_helper.from_array(value, const))
        if value.dtype == np.float32:
            nodes.append(helper.make_node("Add", [const, "z"], [name]))
        else:
            nodes.append(helper.make_node("Identity", [const], [name]))
        elem = TensorProto.FLOAT if value.dtype == np.float32 else TensorProto.INT64
        outs.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, [1, 3, INPUT, INPUT])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))
    return path


def yolo(path: Path, anchors: int = 64) -> Path:
    """Ultralytics YOLOv8/YOLO11: 1 x (4 + 3) x anchors, cx cy w h + class scores, with Ultralytics' metadata."""
    rows, scores, classes = _rows(center=True)
    out = np.zeros((1, 4 + len(NAMES), anchors), np.float32)
    for a, (r, s, c) in enumerate(zip(rows, scores, classes)):
        out[0, :4, a] = [(r[0] + r[2]) / 2, (r[1] + r[3]) / 2, r[2] - r[0], r[3] - r[1]]
        out[0, 4:, a] = 0.01
        out[0, 4 + c, a] = s
    return _save(path, {"output0": out}, {"names": repr(NAMES), "stride": "32", "imgsz": f"[{INPUT}, {INPUT}]",
                                          "task": "detect"})


def yolo_end2end(path: Path, n: int = 300) -> Path:
    """Ultralytics end-to-end: 1 x N x 6 (x1, y1, x2, y2, score, class)."""
    rows, scores, classes = _rows(center=True)
    out = np.zeros((1, n, 6), np.float32)
    out[0, :len(rows)] = np.concatenate([rows, scores[:, None], classes[:, None]], 1)
    return _save(path, {"output0": out}, {"names": repr(NAMES), "imgsz": f"[{INPUT}, {INPUT}]"})


def mmdeploy(path: Path, n: int = 100) -> Path:
    """mmdeploy (RTMDet / YOLOX): dets 1 x N x 5 and labels 1 x N, boxes in the top-left-aligned resized input."""
    rows, scores, classes = _rows(center=False)
    dets = np.zeros((1, n, 5), np.float32)
    labels = np.full((1, n), -1, np.int64)
    dets[0, :len(rows)] = np.concatenate([rows, scores[:, None]], 1)
    labels[0, :len(rows)] = classes
    return _save(path, {"dets": dets, "labels": labels})


def unknown(path: Path) -> Path:
    return _save(path, {"scores": np.zeros((1, 10), np.float32)})


def image() -> np.ndarray:
    """A 480 x 320 BGR test image."""
    return np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
