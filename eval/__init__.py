"""Evaluation: in-process backends, the one evaluation loop (any task) and the keypoint metrics (COCO, CrowdPose,
MPII)."""
from .backends import OracleBackend, TorchBackend
from .evaluator import EvalOptions, EvalResult, evaluate
from .metrics import coco_keypoint_eval, crowdpose_keypoint_eval, mpii_pckh, oks_iou, oks_nms

__all__ = [
    "EvalOptions", "EvalResult", "OracleBackend", "TorchBackend", "coco_keypoint_eval", "crowdpose_keypoint_eval",
    "evaluate",
    "mpii_pckh", "oks_iou", "oks_nms",
]
