"""Keypoint metadata of the supported datasets: joint names, flip pairs, OKS sigmas."""
from __future__ import annotations

COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)
COCO_UPPER_BODY = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
COCO_LOWER_BODY = (11, 12, 13, 14, 15, 16)
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# COCO joint weights used by mmpose's half-body / loss weighting (not used for evaluation).
COCO_JOINT_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5)

CROWDPOSE_JOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck",
)
CROWDPOSE_FLIP_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
CROWDPOSE_SIGMAS = (0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079)
CROWDPOSE_UPPER_BODY = (0, 1, 2, 3, 4, 5, 12, 13)
CROWDPOSE_LOWER_BODY = (6, 7, 8, 9, 10, 11)

MPII_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
MPII_UPPER_BODY = (7, 8, 9, 10, 11, 12, 13, 14, 15)
MPII_LOWER_BODY = (0, 1, 2, 3, 4, 5, 6)

DATASETS = {
    "coco": dict(joints=COCO_JOINTS, flip_pairs=COCO_FLIP_PAIRS, sigmas=COCO_SIGMAS,
                 upper_body=COCO_UPPER_BODY, lower_body=COCO_LOWER_BODY),
    "crowdpose": dict(joints=CROWDPOSE_JOINTS, flip_pairs=CROWDPOSE_FLIP_PAIRS, sigmas=CROWDPOSE_SIGMAS,
                      upper_body=CROWDPOSE_UPPER_BODY, lower_body=CROWDPOSE_LOWER_BODY),
    "mpii": dict(joints=MPII_JOINTS, flip_pairs=MPII_FLIP_PAIRS, sigmas=None,
                 upper_body=MPII_UPPER_BODY, lower_body=MPII_LOWER_BODY),
}


def dataset_meta(name: str) -> dict:
    """Metadata dict (joints, flip_pairs, sigmas, upper_body, lower_body) of dataset ``name``."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}") from None
