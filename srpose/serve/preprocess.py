"""The pre-processing python-backend model: one image's encoded bytes (+ its person boxes, top-down) -> the
network's input, exactly as the evaluator makes it.

Image-to-keypoints graphs (``card.image_input``) crop, normalise, flip and decode inside, so for them this model only
decodes the image (in the graph's channel order; bottom-up: and does the test resize) and passes the checked boxes
on (records given by centre and scale as their equivalent boxes), vectorised: no per-person Python.

- top-down: ``decode_rgb`` (OpenCV BGR decode -> RGB, as ``read_rgb``), ``box_to_center_scale`` of each box (or the
  given centre/scale), the evaluator's :class:`~srpose.data.transforms.TopDownPipeline` (affine crop + normalise),
  and, when the ensemble runs the flip test (graphs without it), the mirrored crops after the crops, as
  ``TopDownTask.infer`` mirrors them; outputs the crops, ``CENTER``, ``SCALE`` and ``BOX_SCORE``.
- bottom-up: the test resize ``resize_align`` and ``normalize_image``, as ``BottomUpCocoDataset``; outputs the input
  and the image's ``CENTER`` / ``SCALE`` (float64, as the dataset keeps them).

Bad requests (missing or undecodable image, no boxes, boxes outside the image, too many boxes) get an error naming
the problem; the model keeps serving.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from srpose.card import BOX_IMAGE, IMAGES
from srpose.card import BOXES as GRAPH_BOXES
from srpose.data.boxes import check_boxes as check_detections
from srpose.data.resize import resize_align
from srpose.data.transforms import (TopDownPipeline, box_to_center_scale, center_scale_to_boxes, decode_image,
                                    decode_rgb, normalize_image)
from srpose.engines.triton_protocol import (BOX_SCORE, BOXES, CENTER, CENTER_SCALE, IMAGE, PARAM_FLIP,
                                            PARAM_MAX_PERSONS, SCALE)

from ._triton import RequestError, input_array, model_card, respond

__all__ = ["PreprocessModel", "boxes_to_center_scale", "check_boxes"]


def boxes_to_center_scale(boxes: np.ndarray, image_hw: tuple[int, int], image_size: tuple[int, int]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale (N x 2 each, float32) of N x 5 boxes (x, y, w, h, score) in an image of ``image_hw``,
    by ``box_to_center_scale``; RequestError for a box that is not finite (score included), empty or entirely outside
    the image (:func:`check_boxes`, as offline detections are checked)."""
    check_boxes(boxes, image_hw)
    centers, scales = zip(*(box_to_center_scale(float(x), float(y), float(w), float(h), image_size)
                            for x, y, w, h in np.asarray(boxes, dtype=np.float64)[:, :4]))
    return np.stack(centers).astype(np.float32), np.stack(scales).astype(np.float32)


class PreprocessModel:
    """``TritonPythonModel`` of the ``<name>_preprocess`` model (see the module docstring)."""

    def initialize(self, args: Mapping[str, str]) -> None:
        self.card, params = model_card(args)
        self.model = args.get("model_name", "preprocess")
        self.flip = params.get(PARAM_FLIP) == "1"
        self.max_persons = int(params.get(PARAM_MAX_PERSONS) or 0)
        c = self.card
        self.pipeline = TopDownPipeline(dict(image_size=list(c.input_size), heatmap_size=list(c.heatmap_size),
                                             mean=c.mean, std=c.std, flip_pairs=c.flip_pairs))

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.card.image_input:
            handle = self._top_down_pixels if self.card.task == "top-down" else self._bottom_up
        else:
            handle = self._top_down if self.card.task == "top-down" else self._bottom_up
        return respond(requests, handle, self.model)

    def _image(self, request: Any) -> np.ndarray:
        data = input_array(request, IMAGE, np.uint8, required=False)
        if data is None:
            raise RequestError(f"input {IMAGE!r} is missing: send the image file's bytes as UINT8 [-1]")
        if self.card.image_input:  # the graph's channel order, uint8: it normalises inside
            return decode_image(data, self.card.pixel_format or "bgr", source=f"input {IMAGE!r}")
        return decode_rgb(data, source=f"input {IMAGE!r}")

    def _rows(self, request: Any) -> tuple[np.ndarray, bool]:
        """The request's person rows (``BOXES`` or ``CENTER_SCALE``) and whether they are boxes."""
        boxes = input_array(request, BOXES, np.float64, required=False)
        cs = input_array(request, CENTER_SCALE, np.float64, required=False)
        if (boxes is None) == (cs is None):
            raise RequestError(f"send the persons as {BOXES!r} (x, y, w, h, score per row) or as {CENTER_SCALE!r} "
                               f"(centre x, y, scale w, h, score), one of the two")
        rows = boxes if boxes is not None else cs
        name = BOXES if boxes is not None else CENTER_SCALE
        if rows.ndim != 2 or rows.shape[1] != 5:
            raise RequestError(f"{name!r} has shape {rows.shape}: send one row of 5 values per person")
        if len(rows) == 0:
            raise RequestError(f"{name!r} holds no person: send at least one row")
        if self.max_persons and len(rows) > self.max_persons:
            crops = "crops with the flip test, " if self.flip else "crops, "
            what = (f"{len(rows)} persons in one request are more than the graph's profile allows"
                    if self.card.image_input else
                    f"{len(rows)} persons in one request need {len(rows) * (2 if self.flip else 1)} {crops}more than "
                    "the network's max_batch_size allows")
            raise RequestError(f"{what}: send at most {self.max_persons} per request (the srpose client splits them)")
        return rows, boxes is not None

    def _top_down_pixels(self, request: Any) -> dict[str, np.ndarray]:
        """Image-to-keypoints graphs: the decoded image and the checked boxes, as the graph takes them."""
        img = self._image(request)
        rows, are_boxes = self._rows(request)
        if are_boxes:
            check_boxes(rows, img.shape[:2])
            boxes = rows
        else:
            _checked_center_scale(rows)
            boxes = np.concatenate([center_scale_to_boxes(rows[:, 0:2], rows[:, 2:4]), rows[:, 4:5]], axis=1)
        return {IMAGES: img[None], GRAPH_BOXES: boxes.astype(np.float32),
                BOX_IMAGE: np.zeros(len(boxes), np.int32)}

    def _top_down(self, request: Any) -> dict[str, np.ndarray]:
        img = self._image(request)
        rows, are_boxes = self._rows(request)
        if are_boxes:
            centers, scales = boxes_to_center_scale(rows, img.shape[:2], self.card.input_size)
        else:
            centers, scales = _checked_center_scale(rows)
        crops = np.stack([self.pipeline(img, dict(center=c, scale=s))["img"] for c, s in zip(centers, scales)])
        if self.flip:  # the mirrored crops after the crops, as the evaluator's host flip test feeds them
            crops = np.concatenate([crops, np.ascontiguousarray(crops[..., ::-1])])
        return {self.card.input_name: crops.astype(np.float32), CENTER: centers, SCALE: scales,
                BOX_SCORE: rows[:, 4].astype(np.float32)}

    def _bottom_up(self, request: Any) -> dict[str, np.ndarray]:
        img = self._image(request)
        resized, center, scale = resize_align(img, int(self.card.input_size[0]))
        x = resized[None] if self.card.image_input else normalize_image(resized, self.card.mean, self.card.std)[None]
        return {self.card.input_name: x if self.card.image_input else x.astype(np.float32),
                CENTER: np.asarray(center, np.float64),
                SCALE: np.asarray(scale, np.float64)}


def check_boxes(boxes: np.ndarray, image_hw: tuple[int, int]) -> None:
    """RequestError naming the first box (x, y, w, h, score rows) that is not finite, empty or entirely outside an
    image of ``image_hw``: :func:`srpose.data.boxes.check_boxes`, the check of offline detections too."""
    try:
        check_detections(boxes, image_hw)
    except ValueError as e:
        raise RequestError(str(e)) from None


def _checked_center_scale(cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centres, scales) of ``center_scale`` rows; RequestError naming the first row not finite or with a scale
    <= 0 (vectorised)."""
    v = np.asarray(cs, dtype=np.float64)[:, :4]
    finite = np.isfinite(v).all(axis=1)
    bad = ~finite | (np.where(finite, v[:, 2], 1.0) <= 0) | (np.where(finite, v[:, 3], 1.0) <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cx, cy, sx, sy = v[i]
        raise RequestError(f"{CENTER_SCALE!r} row {i} ({cx:g}, {cy:g}, {sx:g}, {sy:g}) must be finite with scales > 0")
    return cs[:, 0:2].astype(np.float32), cs[:, 2:4].astype(np.float32)
