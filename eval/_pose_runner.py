"""How `srpose predict` runs a pose model on frames and their person boxes, whatever the model is: one runner class
per kind of model, one interface (``run(images, boxes) -> list of (keypoints, scores, boxes)`` per image).

- :class:`ImageRunner`: an image-to-keypoints graph (ONNX, TensorRT engine, or a PyTorch model run as one): the
  persons of the frames go through the graph in one call (crop, flip test and decoding inside);
- :class:`CropRunner`: a crop graph (e.g. a TensorRT engine of one): host crops, host flip test and decoding, as the
  evaluator's host pipeline;
- :class:`ServedRunner`: a Triton server (one request per frame, the frame sent losslessly as PNG);
- :class:`BottomUpRunner`: bottom-up models (whole images; no boxes).

:func:`open_runner` picks the runner of a model: a preset or config (+ checkpoint), an ``.onnx``, an ``.engine`` or
a server URL (a top-down crop ``.onnx`` is wrapped into its image-to-keypoints graph first).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from srpose.tasks._rescore import rescore_all

__all__ = ["ImageRunner", "CropRunner", "ServedRunner", "BottomUpRunner", "open_runner"]

Result = tuple[np.ndarray, np.ndarray, np.ndarray]  # keypoints P x K x 3, scores P, boxes P x 5


class ImageRunner:
    """A backend with an image-to-keypoints graph: the frames' persons in calls of at most the graph's persons and
    images (its profile); frames larger than the graph's image profile are shrunk to fit (keypoints scaled back)."""

    def __init__(self, backend: Any, task: Any) -> None:
        self.backend, self.task, self.card = backend, task, backend.card

    def _fit(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        (max_h, max_w) = self.card.hw_profile[2] if self.card.hw_profile else (1 << 30, 1 << 30)
        f = min(1.0, max_h / image.shape[0], max_w / image.shape[1])
        if f >= 1.0:
            return image, boxes, 1.0
        small = cv2.resize(image, (int(image.shape[1] * f), int(image.shape[0] * f)), interpolation=cv2.INTER_AREA)
        b = boxes.copy()
        b[:, :4] *= f
        return small, b, f

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[Result]:
        from srpose.card import KEYPOINTS, SCORES
        from srpose.tasks._image_batches import pack

        k = self.task.cfg.num_joints
        results: list[Result] = [(np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32), b) for b in boxes]
        fitted = {i: self._fit(images[i], np.asarray(b, np.float32)) for i, b in enumerate(boxes) if len(b)}
        calls = pack([(i, len(fitted[i][1])) for i in fitted], max_persons=self.card.batch[2],
                     max_images=(self.card.image_batch or (1, 1, 1))[2])
        parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for call in calls:  # an image's chunks come in order, in this call or the next ones
            chunks = [(i, fitted[i][1][part]) for i, part in call]
            batch = dict(images=[fitted[i][0] for i, _ in chunks], boxes=np.concatenate([b for _, b in chunks]),
                         box_image=np.concatenate([np.full(len(b), j, np.int32) for j, (_, b) in enumerate(chunks)]),
                         idx=np.arange(sum(len(b) for _, b in chunks)))
            out = self.backend.submit(self.task.image_feed(self.backend, batch)).result()
            start = 0
            for i, b in chunks:
                kp = np.array(out[KEYPOINTS][start:start + len(b)], np.float32)
                kp[..., :2] /= fitted[i][2]
                parts.setdefault(i, []).append((kp, np.array(out[SCORES][start:start + len(b)], np.float32)))
                start += len(b)
        for i, got in parts.items():
            results[i] = (np.concatenate([c[0] for c in got]), np.concatenate([c[1] for c in got]),
                          np.asarray(boxes[i], np.float32))
        return results

    def close(self) -> None:
        self.backend.close()


class CropRunner:
    """A crop graph: the evaluator's host pipeline (OpenCV crops, host flip test unless the graph flips, the codec's
    decoder unless the graph decodes)."""

    def __init__(self, backend: Any, task: Any, flip: bool | None = None) -> None:
        from srpose.data.transforms import TopDownPipeline

        self.backend, self.task = backend, task
        self.flip = task.host_flip(backend, flip)
        self.pipeline = TopDownPipeline(task.cfg.data)
        self.vis_thr = float(task.cfg.data.get("vis_thr", 0.2))

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[Result]:
        from srpose.data.transforms import box_to_center_scale

        out = []
        k = self.task.cfg.num_joints
        for img, b in zip(images, boxes):
            b = np.asarray(b, np.float32).reshape(-1, 5)
            if not len(b):
                out.append((np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32), b))
                continue
            rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            cs = [box_to_center_scale(*row[:4], self.task.cfg.image_size) for row in b]
            items = [self.pipeline(rgb, dict(center=c, scale=s)) for c, s in cs]
            batch = dict(img=np.stack([it["img"] for it in items]), center=np.stack([c for c, _ in cs]),
                         scale=np.stack([s for _, s in cs]), bbox_score=b[:, 4].astype(np.float64),
                         image_id=np.zeros(len(b), np.int64), idx=np.arange(len(b)))
            res, _ = self.task.infer(self.backend, batch, flip=self.flip)
            poses = self.task.decode(res, batch, decoded=self.backend.decoded, post=True)
            kp = poses.keypoints.astype(np.float32)
            out.append((kp, rescore_all(kp, b[:, 4], self.vis_thr), b))
        return out

    def close(self) -> None:
        self.backend.close()


class ServedRunner:
    """A model served by Triton: one request per frame (PNG, lossless), its boxes split by the server's maximum."""

    def __init__(self, backend: Any, task: Any) -> None:
        self.backend, self.task = backend, task

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[Result]:
        out = []
        for img, b in zip(images, boxes):
            ok, png = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
                raise RuntimeError("OpenCV could not encode a frame as PNG")
            b = np.asarray(b, np.float32).reshape(-1, 5)
            if self.task.kind == "top-down" and not len(b):
                out.append((np.zeros((0, self.task.cfg.num_joints, 3), np.float32), np.zeros(0, np.float32), b))
                continue
            ans = self.backend.infer_image(png.tobytes(), b.astype(np.float64) if self.task.kind == "top-down"
                                           else None)
            kp = np.asarray(ans["keypoints"], np.float32)
            scores = np.asarray(ans["scores"], np.float32)
            if self.task.kind != "top-down":
                b = _boxes_of(kp, scores)
            out.append((kp, scores, b))
        return out

    def close(self) -> None:
        self.backend.close()


def _boxes_of(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from ._track import boxes_from_keypoints

    if not len(keypoints):
        return np.zeros((0, 5), np.float32)
    return np.concatenate([boxes_from_keypoints(keypoints, 0.0, 1.1), scores[:, None]], 1).astype(np.float32)


class BottomUpRunner:
    """A bottom-up model (PyTorch, ONNX, engine): the test resize of each frame, the task's decoding; person boxes
    come from the keypoints."""

    def __init__(self, backend: Any, task: Any, flip: bool | None = None) -> None:
        self.backend, self.task = backend, task
        self.flip = task.host_flip(backend, flip)

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[Result]:
        from srpose.data.resize import resize_align
        from srpose.data.transforms import normalize_image

        cfg, out = self.task.cfg, []
        pixels = self.backend.image_input
        for img in images:
            src = img if pixels and (self.backend.card.pixel_format or "bgr") == "bgr" else \
                cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            resized, center, scale = resize_align(src, int(cfg.image_size[0]))
            x = resized[None] if pixels else normalize_image(resized, cfg.data["mean"], cfg.data["std"])[None]
            batch = dict(img=x, center=np.asarray(center)[None], scale=np.asarray(scale)[None],
                         image_id=np.zeros(1, np.int64), idx=np.zeros(1, np.int64), joints=[np.zeros((0, 0, 3))])
            res, _ = self.task.infer(self.backend, batch, flip=self.flip)
            poses = self.task.decode(res, batch, decoded=self.backend.decoded, post=True)
            kp, scores = poses.keypoints.astype(np.float32), poses.scores.astype(np.float32)
            out.append((kp, scores, _boxes_of(kp, scores)))
        return out

    def close(self) -> None:
        self.backend.close()


def open_runner(model: Any, *, checkpoint: str | None = None, device: str = "cpu", flip: bool | None = None,
                threads: int | None = None) -> tuple[Any, Any]:
    """(task, runner) of ``model``: a preset / config name or file (with ``checkpoint``), an ``.onnx`` graph, a
    TensorRT ``.engine`` / ``.plan``, a Triton URL (see the module docstring) or an opened backend with a card."""
    from srpose.engines import backend_kind, open_backend
    from srpose.engines.base import Backend
    from srpose.eval.bench import task_of_backend

    if isinstance(model, Backend):  # an opened backend (a TensorRT engine loaded once, a stand-in, ...)
        task = task_of_backend(model)
        return task, _runner_of(model, task, flip)
    text = str(model)
    kind = backend_kind(text)
    if kind == "triton":
        backend = open_backend(text if "://" in text else f"grpc://{text}")
        task = task_of_backend(backend)
        return task, ServedRunner(backend, task)
    if kind is None:
        return _torch_runner(text, checkpoint, device, flip)
    from srpose.card import read_card
    from srpose.export.image_graph import task_of_card

    path = Path(text)
    card = read_card(path)
    task = task_of_card(card)
    if kind == "onnxruntime" and task.kind == "top-down" and not card.image_input:
        from srpose.export.image_graph import ImageGraphOptions, write_image_graph

        want = True if card.flip else (False if card.decode else flip)
        with tempfile.TemporaryDirectory(prefix="srpose-predict-") as tmp:  # the session holds the graph once open
            image = write_image_graph(path, Path(tmp) / f"{path.stem}.image.onnx", ImageGraphOptions(flip=want))
            backend = open_backend(image, device=device, threads=threads)
    else:
        backend = open_backend(path, device=device, threads=threads)
    return task, _runner_of(backend, task, flip)


def _runner_of(backend: Any, task: Any, flip: bool | None) -> Any:
    """The runner of an opened backend with a card: bottom-up, image-to-keypoints, or crop graph."""
    if task.kind != "top-down":
        return BottomUpRunner(backend, task, flip)
    return ImageRunner(backend, task) if backend.image_input else CropRunner(backend, task, flip)


def _torch_runner(name: str, checkpoint: str | None, device: str, flip: bool | None) -> tuple[Any, Any]:
    from srpose.checkpoint import build_with_weights
    from srpose.resolve import get_config
    from srpose.tasks import task_for

    from .backends import TorchBackend, TorchImageBackend

    task = task_for(get_config(name))
    model, _ = build_with_weights(task.cfg, checkpoint, command="srpose predict")
    if task.kind != "top-down":
        return task, BottomUpRunner(TorchBackend(model, device=device), task, flip)
    return task, ImageRunner(TorchImageBackend(model, task, device=device, flip=flip), task)
