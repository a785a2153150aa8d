"""Evaluation: backends, the top-down evaluation loop and the keypoint metrics (COCO, CrowdPose, MPII)."""
from .backends import OracleBackend, TorchBackend
from .evaluator import EvalResult, evaluate
from .metrics import coco_keypoint_eval, crowdpose_keypoint_eval, mpii_pckh, oks_iou, oks_nms

__all__ = [
    "EvalResult", "OracleBackend", "TorchBackend", "coco_keypoint_eval", "crowdpose_keypoint_eval", "evaluate",
    "mpii_pckh", "oks_iou", "oks_nms",
]
