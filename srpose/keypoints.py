"""Keypoint metadata of the supported datasets: joint names, flip pairs, OKS sigmas, joint weights, skeletons.

Values follow mmpose 0.x's dataset definitions (``configs/_base_/datasets/{coco,crowdpose,mpii}.py``): joints in
their order, flip pairs from the ``swap`` names, ``sigmas`` and ``joint_weights`` as listed there, and each
skeleton's limbs (``skeleton_info``) as 0-based joint index pairs, in mmpose's order.
"""
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
# Joint weights: mmpose 0.x multiplies the heatmap loss's target weights by them only when a config sets
# ``use_different_joint_weights=True``; none of the COCO / CrowdPose / MPII top-down configs does. Metadata here.
COCO_JOINT_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5)

CROWDPOSE_JOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck",
)
CROWDPOSE_FLIP_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
CROWDPOSE_SIGMAS = (0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079)
CROWDPOSE_UPPER_BODY = (0, 1, 2, 3, 4, 5, 12, 13)
CROWDPOSE_LOWER_BODY = (6, 7, 8, 9, 10, 11)
CROWDPOSE_SKELETON = (
    (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3),
    (2, 4), (3, 5), (12, 13), (1, 13), (0, 13),
)
# As mmpose 0.x lists them; note they are not left/right symmetric (e.g. left wrist 0.2, right wrist 0.2 but left
# elbow 0.2, right elbow 1.3). Kept verbatim: they are metadata (see COCO_JOINT_WEIGHTS).
CROWDPOSE_JOINT_WEIGHTS = (0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5)

MPII_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
MPII_UPPER_BODY = (7, 8, 9, 10, 11, 12, 13, 14, 15)
MPII_LOWER_BODY = (0, 1, 2, 3, 4, 5, 6)
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12),
    (12, 11), (11, 10), (8, 13), (13, 14), (14, 15),
)
MPII_JOINT_WEIGHTS = (1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5)
# mmpose's MPII sigmas are "adapted from COCO" (MPII is scored by PCKh, not OKS): for OKS-NMS / OKS matching only.
MPII_SIGMAS = (
    0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026,
    0.062, 0.072, 0.179, 0.179, 0.072, 0.062,
)

DATASETS = {
    "coco": dict(joints=COCO_JOINTS, flip_pairs=COCO_FLIP_PAIRS, sigmas=COCO_SIGMAS,
                 upper_body=COCO_UPPER_BODY, lower_body=COCO_LOWER_BODY, skeleton=COCO_SKELETON,
                 joint_weights=COCO_JOINT_WEIGHTS),
    "crowdpose": dict(joints=CROWDPOSE_JOINTS, flip_pairs=CROWDPOSE_FLIP_PAIRS, sigmas=CROWDPOSE_SIGMAS,
                      upper_body=CROWDPOSE_UPPER_BODY, lower_body=CROWDPOSE_LOWER_BODY, skeleton=CROWDPOSE_SKELETON,
                      joint_weights=CROWDPOSE_JOINT_WEIGHTS),
    "mpii": dict(joints=MPII_JOINTS, flip_pairs=MPII_FLIP_PAIRS, sigmas=MPII_SIGMAS,
                 upper_body=MPII_UPPER_BODY, lower_body=MPII_LOWER_BODY, skeleton=MPII_SKELETON,
                 joint_weights=MPII_JOINT_WEIGHTS),
}


def dataset_meta(name: str) -> dict:
    """Metadata dict of dataset ``name``: ``joints`` (names, in model output order), ``flip_pairs``, ``sigmas``
    (OKS), ``upper_body`` / ``lower_body`` (half-body augmentation), ``skeleton`` (limbs as 0-based joint index
    pairs, for drawing) and ``joint_weights``."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(DATASETS)}") from None
