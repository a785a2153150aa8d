"""The associative-embedding codec of bottom-up models (mmpose 0.x ``BottomUp``, SRPose's bottom-up SR heads).

A head output is N x (K + L) x h x w: K joint heatmaps, then L tag maps (L = K with ``tag_per_joint``, else 1).
Decoding one image, as mmpose 0.x's single-scale test does: flip merge (mirrored pass flipped back, heatmaps
averaged, tags stacked), projection to the input size, heatmap NMS by max pooling and top-k candidates (torch ops:
on the host in :meth:`AssociativeEmbedding.decode`, or in the exported graph through :meth:`decode_module`), then
tag grouping, adjust and refine on the host in numpy (:meth:`decode_candidates`, no torch) and back-projection.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._ae_group import GroupParams, group_candidates, transform_preds
from ._ae_render import render_heatmaps, render_tag_maps
from .base import Codec

__all__ = ["AssociativeEmbedding", "BottomUpPoses", "flip_index_from_pairs", "unpack_candidates"]


@dataclass
class BottomUpPoses:
    """People found in one image: ``keypoints`` P x K x 3 (image x, y, heatmap value), ``scores`` P (mean joint
    value before refining, mmpose's person score), ``tags`` P x K x L."""

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)


def flip_index_from_pairs(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> list[int]:
    """mmpose ``flip_index``: for each joint, the joint it becomes in the mirrored image."""
    idx = list(range(num_joints))
    for a, b in flip_pairs:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"flip pair ({a}, {b}) is out of range for {num_joints} joints")
        idx[a], idx[b] = b, a
    return idx


def unpack_candidates(packed: Any) -> dict[str, np.ndarray]:
    """``tag_k``, ``loc_k`` (int64), ``val_k`` of one image's packed K x M x (3 + L) candidates (x, y, value,
    tags), as the decoded graph outputs them."""
    packed = np.asarray(packed)
    if packed.ndim != 3 or packed.shape[2] < 4:
        raise ValueError(f"packed candidates must be K x M x (3 + L), got shape {packed.shape}")
    return dict(tag_k=packed[..., 3:].astype(np.float32), loc_k=np.rint(packed[..., :2]).astype(np.int64),
                val_k=packed[..., 2].astype(np.float32))


@dataclass
class AssociativeEmbedding(Codec, GroupParams):
    """Heatmaps plus tag maps of ``num_joints`` joints at 1/``stride`` of the input; the grouping settings are the
    :class:`GroupParams` fields (the official single-scale test settings by default; the flip test is the task's
    choice)."""

    name = "associative_embedding"
    flip_pairs: list[list[int]] = field(default_factory=list)
    stride: int = 4
    sigma: float = 2.0
    project2image: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # validates the grouping settings
        self.flip_pairs = [[int(a), int(b)] for a, b in self.flip_pairs]
        self.joint_order = tuple(int(j) for j in self.joint_order)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    @classmethod
    def from_config(cls, cfg: Any) -> "AssociativeEmbedding":
        """The codec of a bottom-up :class:`~srpose.config.PoseConfig` (its ``test_cfg`` and data settings)."""
        iw, ih = cfg.image_size
        hw, hh = cfg.heatmap_size
        if iw % hw or ih % hh or iw // hw != ih // hh:
            raise ValueError(f"{cfg.name}: input {iw}x{ih} is not an integer multiple of heatmap {hw}x{hh}")
        test = cfg.test_cfg
        scales = list(test.get("scale_factor", [1]))
        if len(scales) != 1 or float(scales[0]) != 1.0:
            raise ValueError(f"test_cfg.scale_factor {scales}: only single-scale testing ([1]) is supported")
        p = GroupParams.from_test_cfg(test, cfg.num_joints)
        return cls(**dataclasses.asdict(p), flip_pairs=[list(q) for q in cfg.flip_pairs], stride=iw // hw,
                   sigma=float(cfg.data.get("sigma", 2.0)), project2image=bool(test.get("project2image", True)))

    @property
    def params(self) -> GroupParams:
        """The grouping settings (the codec itself)."""
        return self

    @property
    def flip_index(self) -> list[int]:
        return flip_index_from_pairs(self.num_joints, self.flip_pairs)

    @property
    def tag_channels(self) -> int:
        """L, the number of tag maps."""
        return self.num_joints if self.tag_per_joint else 1

    # ------------------------------------------------------------------------------------------ encode
    def encode(self, joints: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
        """(K + L) x h x w maps of P x K x 3 input-pixel joints for an input of ``input_size`` (W, H): Gaussian
        heatmaps and tag maps holding the value 2 (p + 1) for person p (what a perfect model outputs)."""
        w, h = int(input_size[0]), int(input_size[1])
        if h % self.stride or w % self.stride:
            raise ValueError(f"input {w}x{h} is not a multiple of the output stride {self.stride}")
        size = (w // self.stride, h // self.stride)
        joints = np.asarray(joints, dtype=np.float32).copy()
        joints[..., :2] /= self.stride
        hm = render_heatmaps(joints, size, self.sigma)
        tm = render_tag_maps(joints, size, self.sigma, [2.0 * (p + 1) for p in range(len(joints))])
        if not self.tag_per_joint:
            tm = tm.max(axis=0, keepdims=True)
        return np.concatenate([hm, tm], 0)

    # ------------------------------------------------------------------------------------------ decode
    def decode(self, output: Any, output_flipped: Any | None, center: Sequence[float], scale: Sequence[float], *,
               input_size: tuple[int, int], adjust: bool | None = None, refine: bool | None = None) -> BottomUpPoses:
        """Raw outputs of one image (1 x (K + L) x h x w, and of its mirror when flip testing) of an input of
        ``input_size`` (W, H) -> people in image pixels."""
        from ._ae_torch import merge_outputs, top_k, to_tensor

        out = to_tensor(output)
        out_f = None if output_flipped is None else to_tensor(output_flipped)
        if out.ndim != 4 or out.shape[0] != 1:
            raise ValueError(f"decode takes one image's output (1 x C x h x w), got shape {tuple(out.shape)}")
        if out_f is not None and out_f.shape != out.shape:
            raise ValueError(f"flipped output shape {tuple(out_f.shape)} differs from {tuple(out.shape)}")
        size = (int(input_size[1]), int(input_size[0])) if self.project2image else None
        hm, tags = merge_outputs(out, out_f, self.num_joints, self.flip_index, size=size,
                                 tag_per_joint=self.tag_per_joint)
        tag_k, loc_k, val_k = top_k(hm, tags, self.max_num_people, self.nms_kernel, self.nms_padding)
        cand = dict(tag_k=tag_k[0].numpy(), loc_k=loc_k[0].numpy(), val_k=val_k[0].numpy())
        return self.decode_candidates(hm[0].numpy(), tags[0].numpy(), cand, center, scale, adjust=adjust,
                                      refine=refine)

    def decode_candidates(self, heatmaps: np.ndarray, tags: np.ndarray,
                          candidates: Mapping[str, np.ndarray] | np.ndarray, center: Sequence[float],
                          scale: Sequence[float], *, adjust: bool | None = None,
                          refine: bool | None = None) -> BottomUpPoses:
        """Group one image's candidates (a dict, or packed K x M x (3 + L)) over its merged maps (``heatmaps``
        K x H x W, ``tags`` K x H x W x L at the input resolution) and map the people back to the image (numpy)."""
        if not isinstance(candidates, Mapping):
            candidates = unpack_candidates(candidates)
        heatmaps = np.asarray(heatmaps, dtype=np.float32)
        people, scores = group_candidates(candidates, heatmaps, tags, self.params, adjust=adjust, refine=refine)
        h, w = heatmaps.shape[-2:]
        k = self.num_joints
        kpts = np.zeros((len(people), k, 3), dtype=np.float64)
        if len(people):
            kpts[..., :2] = transform_preds(people[..., :2], center, scale, (w, h))
            kpts[..., 2] = people[..., 2]
        return BottomUpPoses(keypoints=kpts, scores=np.asarray(scores, dtype=np.float64),
                             tags=people[..., 3:] if len(people) else np.zeros((0, k, 0), np.float32))

    def decode_module(self, *, flip: bool) -> Any:
        """The in-graph part of decoding (flip merge of a doubled batch when ``flip``, projection, NMS, top-k) as an
        exportable module returning (heatmaps, tags, candidates)."""
        from ._ae_torch import BottomUpDecode

        if not self.project2image:
            raise ValueError("decoded bottom-up graphs project the maps to the input size: set "
                             "test_cfg.project2image=True or export without --decode")
        return BottomUpDecode(self.num_joints, self.flip_index if flip else None, upsample=self.stride,
                              max_num_people=self.max_num_people, nms_kernel=self.nms_kernel,
                              nms_padding=self.nms_padding, tag_per_joint=self.tag_per_joint)

    def post_process_name(self, adjust: bool | None = None, refine: bool | None = None) -> str | None:
        """``adjust+refine``, ``adjust``, ``refine`` or None: the host post-processing that runs."""
        use = (("adjust", self.adjust if adjust is None else adjust), ("refine", self.refine if refine is None
                                                                      else refine))
        return "+".join(s for s, on in use if on) or None
