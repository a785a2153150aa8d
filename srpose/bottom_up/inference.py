"""One image through the bottom-up decoding: raw head outputs (or in-graph candidates) -> people in image pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .group import GroupParams, group_candidates, transform_preds
from .ops import merge_outputs, top_k, unpack_candidates

__all__ = ["BottomUpPoses", "decode_outputs", "decode_maps"]


@dataclass
class BottomUpPoses:
    """People found in one image: ``keypoints`` P x K x 3 (image x, y, heatmap value), ``scores`` P (mean joint
    value before refining, mmpose's person score), ``tags`` P x K x L."""

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)


def _as_tensor(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def decode_maps(heatmaps: np.ndarray, tags: np.ndarray, candidates: Mapping[str, np.ndarray] | np.ndarray,
                center: Sequence[float], scale: Sequence[float], params: GroupParams, *,
                adjust: bool | None = None, refine: bool | None = None) -> BottomUpPoses:
    """Group one image's candidates (a dict, or packed K x M x (3 + L)) over its merged maps (``heatmaps``
    K x H x W, ``tags`` K x H x W x L at the input resolution) and map the people back to the image."""
    if not isinstance(candidates, Mapping):
        candidates = unpack_candidates(candidates)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    people, scores = group_candidates(candidates, heatmaps, tags, params, adjust=adjust, refine=refine)
    h, w = heatmaps.shape[-2:]
    k = params.num_joints
    kpts = np.zeros((len(people), k, 3), dtype=np.float64)
    if len(people):
        kpts[..., :2] = transform_preds(people[..., :2], center, scale, (w, h))
        kpts[..., 2] = people[..., 2]
    return BottomUpPoses(keypoints=kpts, scores=np.asarray(scores, dtype=np.float64),
                         tags=people[..., 3:] if len(people) else np.zeros((0, k, 0), np.float32))


def decode_outputs(output: Any, output_flipped: Any | None, center: Sequence[float], scale: Sequence[float],
                   params: GroupParams, flip_index: Sequence[int], *, input_size: tuple[int, int] | None = None,
                   project2image: bool = True, adjust: bool | None = None,
                   refine: bool | None = None) -> BottomUpPoses:
    """Raw outputs of one image (1 x (K + L) x h x w, and of its mirror when flip testing) -> people.

    ``input_size`` = (W, H) of the network input (mmpose ``base_size``); with ``project2image`` the maps are
    resized to it before NMS, as the official test does.
    """
    out = _as_tensor(output)
    out_f = None if output_flipped is None else _as_tensor(output_flipped)
    if out.ndim != 4 or out.shape[0] != 1:
        raise ValueError(f"decode_outputs takes one image's output (1 x C x h x w), got shape {tuple(out.shape)}")
    if out_f is not None and out_f.shape != out.shape:
        raise ValueError(f"flipped output shape {tuple(out_f.shape)} differs from {tuple(out.shape)}")
    size = (int(input_size[1]), int(input_size[0])) if (project2image and input_size is not None) else None
    hm, tags = merge_outputs(out, out_f, params.num_joints, flip_index, size=size, tag_per_joint=params.tag_per_joint)
    tag_k, loc_k, val_k = top_k(hm, tags, params.max_num_people, params.nms_kernel, params.nms_padding)
    cand = dict(tag_k=tag_k[0].numpy(), loc_k=loc_k[0].numpy(), val_k=val_k[0].numpy())
    return decode_maps(hm[0].numpy(), tags[0].numpy(), cand, center, scale, params, adjust=adjust, refine=refine)
