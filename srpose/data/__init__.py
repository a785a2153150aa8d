"""Top-down data pipeline: box transforms, training targets and the COCO / CrowdPose / MPII datasets."""
from .datasets import (
    TopDownCocoDataset,
    TopDownCrowdPoseDataset,
    TopDownDataset,
    TopDownMpiiDataset,
    collate,
)
from .targets import generate_target, pool_target
from .transforms import (
    TopDownPipeline,
    affine_transform,
    box_to_center_scale,
    flip_back,
    fliplr_joints,
    get_affine_transform,
    normalize_image,
    warp_affine_crop,
)

DATASET_CLASSES = {
    "coco": TopDownCocoDataset,
    "crowdpose": TopDownCrowdPoseDataset,
    "mpii": TopDownMpiiDataset,
}

__all__ = [
    "DATASET_CLASSES",
    "TopDownCocoDataset",
    "TopDownCrowdPoseDataset",
    "TopDownDataset",
    "TopDownMpiiDataset",
    "TopDownPipeline",
    "affine_transform",
    "box_to_center_scale",
    "collate",
    "flip_back",
    "fliplr_joints",
    "generate_target",
    "get_affine_transform",
    "normalize_image",
    "pool_target",
    "warp_affine_crop",
]
