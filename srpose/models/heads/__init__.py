"""Keypoint heads."""
from srpose.models.heads.simple import TopDownSimpleHead, TopDownSimpleSRHead
from srpose.models.heads.srpose_head import TopDownSRPoseHead

__all__ = ["TopDownSimpleHead", "TopDownSimpleSRHead", "TopDownSRPoseHead"]
