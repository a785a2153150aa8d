"""The post-processing python-backend model: the network's outputs + the pre-processing's centre/scale -> people in
image pixels, decoded as the evaluator decodes them, with the codec of the graph's card
(``codec_from_dict(card.codec)``).

- top-down heatmaps: the codec's flip merge when the ensemble ran the mirrored pass (second half of the batch),
  ``decode_to_image`` with the codec's refinement (the evaluator's default ``post``); decoded graphs
  (``--decode``): ``to_image`` of the in-graph keypoints. ``SCORES`` is the evaluator's person rescoring
  (:func:`srpose.tasks._rescore.rescore_all`: box score x mean joint score above the config's ``vis_thr``); the OKS-NMS
  of a protocol stays with the client, which sees all of an image's people.
- bottom-up (decoded graphs: merged maps + top-k candidates): ``decode_candidates`` (grouping, adjust and refine),
  ``SCORES`` the grouping scores.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from srpose.codecs import codec_from_dict
from srpose.engines.triton_protocol import (BOX_SCORE, CENTER, CENTER_SCALE_OUT, KEYPOINTS, PARAM_FLIP, SCALE,
                                            SCORES)
from srpose.tasks._rescore import rescore_all
from srpose.tasks.bottom_up import DECODED_OUTPUTS

from ._triton import RequestError, input_array, model_card, respond

__all__ = ["PostprocessModel", "decode_top_down"]


def decode_top_down(codec: Any, out: np.ndarray, centers: np.ndarray, scales: np.ndarray, *, decoded: bool,
                    flip: bool, post: bool = True) -> np.ndarray:
    """N x K x 3 image keypoints (x, y, score; float32) of a top-down network output for N persons: raw heatmaps
    (2N of them when ``flip``: the mirrored crops' second) or in-graph keypoints in heatmap pixels."""
    n = len(centers)
    if decoded:
        if out.ndim != 3 or out.shape[0] != n or out.shape[2] != 3:
            raise RequestError(f"the network returned keypoints of shape {out.shape}, expected {n} x K x 3")
        xy, score = codec.to_image(out[..., :2], centers, scales), out[..., 2:3]
    else:
        if out.ndim != 4 or out.shape[0] != (2 * n if flip else n):
            raise RequestError(f"the network returned heatmaps of shape {out.shape} for {n} persons"
                               + (" (flip test: 2N expected)" if flip else ""))
        if flip:
            out = codec.flip_merge(out[:n], out[n:])
        xy, score = codec.decode_to_image(out, centers, scales, post=post)
    k = out.shape[1]
    return np.concatenate([np.asarray(xy, np.float32), np.asarray(score, np.float32).reshape(n, k, 1)], -1)


class PostprocessModel:
    """``TritonPythonModel`` of the ``<name>_postprocess`` model (see the module docstring)."""

    def initialize(self, args: Mapping[str, str]) -> None:
        self.card, params = model_card(args)
        self.model = args.get("model_name", "postprocess")
        self.flip = params.get(PARAM_FLIP) == "1"
        self.codec = codec_from_dict(self.card.codec)
        data = (self.card.config or {}).get("data") or {}
        self.vis_thr = float(data.get("vis_thr", 0.2))

    def execute(self, requests: list[Any]) -> list[Any]:
        handle = self._top_down if self.card.task == "top-down" else self._bottom_up
        return respond(requests, handle, self.model)

    def _top_down(self, request: Any) -> dict[str, np.ndarray]:
        out = input_array(request, self.card.output_names[0], np.float32)
        centers = input_array(request, CENTER, np.float32)
        scales = input_array(request, SCALE, np.float32)
        box_scores = input_array(request, BOX_SCORE, np.float32)
        kpts = decode_top_down(self.codec, out, centers, scales, decoded=self.card.decode, flip=self.flip)
        scores = rescore_all(kpts, box_scores, self.vis_thr)
        return {KEYPOINTS: kpts, SCORES: scores}

    def _bottom_up(self, request: Any) -> dict[str, np.ndarray]:
        heatmaps, tags, candidates = (input_array(request, n, np.float32) for n in DECODED_OUTPUTS)
        center = input_array(request, CENTER, np.float64)
        scale = input_array(request, SCALE, np.float64)
        people = self.codec.decode_candidates(heatmaps[0], tags[0], candidates[0], center, scale)
        k = self.card.num_joints
        kpts = np.asarray(people.keypoints, np.float32).reshape(-1, k, 3)
        return {KEYPOINTS: kpts, SCORES: np.asarray(people.scores, np.float32).reshape(-1),
                CENTER_SCALE_OUT: np.concatenate([center, scale]).astype(np.float64)}
