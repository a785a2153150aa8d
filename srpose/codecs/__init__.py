"""Heatmap codecs, one class per codec in the spirit of mmpose 1.x ``mmpose/codecs``: each owns its parameters,
target encoding, numpy decoding (no torch), the exportable torch decoder and the flip merge.

- :class:`MSRAHeatmap` (``"simple"``): MSRA Gaussian heatmaps, global arg-max, quarter-pixel shift or DARK.
- :class:`SRPoseHeatmap` (``"srpose"``): full-resolution heatmaps, SRPose's 16 x 16 cell decoder.
- :class:`AssociativeEmbedding` (``"associative_embedding"``): bottom-up heatmaps + tags, NMS, top-k, grouping.

Which codec a model uses is the pose task's decision (:func:`srpose.tasks.task_for`); a codec travels as plain
data in the artifact card (``to_dict`` / :func:`codec_from_dict`).
"""
from __future__ import annotations

from .associative_embedding import AssociativeEmbedding, BottomUpPoses, flip_index_from_pairs, unpack_candidates
from .base import CODECS, Codec, HeatmapCodec, codec_from_dict, heatmap_to_image
from .msra import MSRAHeatmap
from .srpose_cell import SRPoseHeatmap

__all__ = ["CODECS", "Codec", "HeatmapCodec", "MSRAHeatmap", "SRPoseHeatmap", "AssociativeEmbedding",
           "BottomUpPoses", "codec_from_dict", "heatmap_to_image", "flip_index_from_pairs", "unpack_candidates"]
