"""Data pipeline: box transforms, training targets and the COCO / CrowdPose / MPII datasets (top-down), the
whole-image COCO dataset (bottom-up) and generated people.

Names are imported on first use, so the numpy-only pieces (``srpose.data.transforms``, ``srpose.data.targets``)
load without torch (the serving pre-processing uses them).
"""
from __future__ import annotations


from srpose._lazy import lazy_getattr

_EXPORTS = {
    **{n: "srpose.data.datasets" for n in ("DATASET_CLASSES", "TopDownCocoDataset", "TopDownCrowdPoseDataset",
                                            "TopDownDataset", "TopDownMpiiDataset", "collate")},
    **{n: "srpose.data.targets" for n in ("generate_target", "pool_target")},
    **{n: "srpose.data.transforms" for n in ("TopDownPipeline", "affine_transform", "box_to_center_scale",
                                              "flip_back", "fliplr_joints", "get_affine_transform",
                                              "normalize_image", "warp_affine_crop", "read_rgb")},
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("srpose.data", _EXPORTS, globals())
