"""Bottom-up (associative embedding) decoding: flip merge, heatmap NMS, top-k, tag grouping, adjust and refine."""
from .group import (
    COCO_JOINT_ORDER,
    GroupParams,
    adjust_joints,
    group_candidates,
    linear_assignment,
    match_by_tag,
    refine_joints,
    transform_preds,
)
from .inference import BottomUpPoses, decode_maps, decode_outputs
from .ops import BottomUpDecode, flip_index_from_pairs, heatmap_nms, merge_outputs, pack_candidates, top_k, \
    unpack_candidates

__all__ = [
    "COCO_JOINT_ORDER", "GroupParams", "adjust_joints", "group_candidates", "linear_assignment", "match_by_tag",
    "refine_joints", "transform_preds", "BottomUpPoses", "decode_maps", "decode_outputs", "BottomUpDecode",
    "flip_index_from_pairs", "heatmap_nms", "merge_outputs", "pack_candidates", "top_k", "unpack_candidates",
]
