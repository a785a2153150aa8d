"""Bottom-up presets (associative embedding, COCO 512x512): the SRPose paper's bottom-up rows, config as data.

Names follow the official configs: ``configs/bottom_up/sr/coco/*_sr_coco_512x512.py`` (SRPose) and mmpose 0.x
``configs/bottom_up/{resnet,hrnet}/coco/*_coco_512x512.py``. ``data.image_size`` is the square training input;
at test time the shorter image side is resized to it and the longer side to a multiple of 64 (aspect kept).
``data.heatmap_size`` is the output size for a square input: 1/4 for the simple head, full size for the SR head.
"""
from __future__ import annotations

import copy
from typing import Any

from srpose._registry import register_model
from srpose.config import DEFAULT_TRAIN_CFG, PoseConfig, bottom_up_test_cfg, make_data_cfg

__all__ = ["PAPER_TABLE_BOTTOMUP"]

NUM_JOINTS = 17
INPUT = 512
RESNET50 = dict(type="ResNet", depth=50)
HRNET_W32 = dict(type="HRNet", in_channels=3, extra=dict(
    stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(4,), num_channels=(64,)),
    stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(4, 4), num_channels=(32, 64)),
    stage3=dict(num_modules=4, num_branches=3, block="BASIC", num_blocks=(4, 4, 4), num_channels=(32, 64, 128)),
    stage4=dict(num_modules=3, num_branches=4, block="BASIC", num_blocks=(4, 4, 4, 4),
                num_channels=(32, 64, 128, 256))))


def _simple_head(in_channels: int, num_deconv_layers: int = 3) -> dict[str, Any]:
    head = dict(type="BottomUpSimpleHead", in_channels=in_channels, num_joints=NUM_JOINTS, tag_per_joint=True,
                with_ae_loss=[True])
    if num_deconv_layers == 0:
        head.update(num_deconv_layers=0, extra=dict(final_conv_kernel=1))
    return head


def _sr_head(in_channels: int, num_deconv_layers: int = 3) -> dict[str, Any]:
    head = dict(type="BottomUpSimpleSRHead", in_channels=in_channels, num_joints=NUM_JOINTS, tag_per_joint=True,
                with_ae_loss=[True], per_kp_emb=4, pixel_shuffle=4)
    if num_deconv_layers == 0:
        head.update(num_deconv_layers=0)
    return head


def _bottomup(name: str, backbone: dict, head: dict, *, sr: bool, nms_kernel: int = 5) -> PoseConfig:
    heatmap = INPUT if sr else INPUT // 4
    model = dict(type="BottomUp", backbone=copy.deepcopy(backbone), keypoint_head=copy.deepcopy(head),
                 train_cfg=dict(num_joints=NUM_JOINTS, img_size=INPUT), test_cfg=bottom_up_test_cfg(nms_kernel))
    data = make_data_cfg("coco", image_size=(INPUT, INPUT), heatmap_size=(heatmap, heatmap), sigma=8.0 if sr else 2.0,
                         decoder="associative_embedding", base_size=INPUT if sr else 256, base_sigma=8 if sr else 2,
                         max_num_people=30, scale_aware_sigma=False, bottom_up=True)
    train = dict(DEFAULT_TRAIN_CFG, optimizer="Adam", lr=0.0015, lr_steps=(200, 260), epochs=300, batch_size=24,
                 rot_factor=30, scale_factor=(0.75, 1.5), trans_factor=40)
    return PoseConfig(name=name, model=model, data=data, train=train, source="preset")


@register_model
def res50_coco_512x512() -> PoseConfig:
    """Associative embedding, ResNet-50 + 3 deconvs (1/4-resolution heatmaps and tags)."""
    return _bottomup("res50_coco_512x512", RESNET50, _simple_head(2048), sr=False)


@register_model
def res50_sr_coco_512x512() -> PoseConfig:
    """ResNet-50 with the bottom-up SR head (full-resolution heatmaps, tags upsampled to them)."""
    return _bottomup("res50_sr_coco_512x512", RESNET50, _sr_head(2048), sr=True)


@register_model
def hrnet_w32_coco_512x512() -> PoseConfig:
    """Associative embedding, HRNet-W32 with a 1x1 final conv (1/4-resolution heatmaps and tags)."""
    return _bottomup("hrnet_w32_coco_512x512", HRNET_W32, _simple_head(32, 0), sr=False)


@register_model
def hrnet_w32_sr_coco_512x512() -> PoseConfig:
    """HRNet-W32 with the bottom-up SR head; heatmap NMS kernel 11 as the official config."""
    return _bottomup("hrnet_w32_sr_coco_512x512", HRNET_W32, _sr_head(32, 0), sr=True, nms_kernel=11)


#: The SRPose paper's bottom-up table (COCO val, 512x512): GFLOPs, backbone params (M), head params (M).
PAPER_TABLE_BOTTOMUP: dict[str, tuple[float, float, float]] = {
    "res50_coco_512x512": (29.20, 23.51, 10.49),
    "res50_sr_coco_512x512": (30.86, 23.51, 10.60),
    "hrnet_w32_coco_512x512": (41.10, 28.54, 0.00),
    "hrnet_w32_sr_coco_512x512": (42.57, 28.54, 0.09),
}
