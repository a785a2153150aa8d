"""Presets: one per row of the SRPose paper's table (top-down COCO 256x192), config as data next to each.

Names follow the official config files where one exists (``configs/top_down/srpose/coco/*.py`` of SRPose and the
mmpose 0.x baselines). ``*_sr_*`` presets are the lightweight SR head (simple head + keypoint encoder + joint-grouped
9x9 conv + pixel shuffle); ``*_srpose_*`` the multi-stage SRPose head.
"""
from __future__ import annotations

import copy
from typing import Any

from srpose._registry import register_model
from srpose.config import DEFAULT_TEST_CFG, DEFAULT_TRAIN_CFG, PoseConfig, make_data_cfg

NUM_JOINTS = 17
INPUT = (192, 256)  # (w, h)

# ----------------------------------------------------------------------------------------------- backbones
RESNET50 = dict(type="ResNet", depth=50)
RESNET50_MS = dict(type="ResNet", depth=50, out_indices=(0, 1, 2, 3))


def _hrnet_w32(multiscale_output: bool) -> dict[str, Any]:
    return dict(type="HRNet", in_channels=3, extra=dict(
        stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(4,), num_channels=(64,)),
        stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(4, 4), num_channels=(32, 64)),
        stage3=dict(num_modules=4, num_branches=3, block="BASIC", num_blocks=(4, 4, 4), num_channels=(32, 64, 128)),
        stage4=dict(num_modules=3, num_branches=4, block="BASIC", num_blocks=(4, 4, 4, 4),
                    num_channels=(32, 64, 128, 256), multiscale_output=multiscale_output)))


def _hrt_small(multiscale_output: bool) -> dict[str, Any]:
    return dict(type="HRT", in_channels=3, norm_cfg=dict(type="SyncBN", requires_grad=True), extra=dict(
        drop_path_rate=0.1,
        stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(2,), num_channels=(64,),
                    num_heads=[2], num_mlp_ratios=[4]),
        stage2=dict(num_modules=1, num_branches=2, block="TRANSFORMER_BLOCK", num_blocks=(2, 2),
                    num_channels=(32, 64), num_heads=[1, 2], num_mlp_ratios=[4, 4], num_window_sizes=[7, 7]),
        stage3=dict(num_modules=4, num_branches=3, block="TRANSFORMER_BLOCK", num_blocks=(2, 2, 2),
                    num_channels=(32, 64, 128), num_heads=[1, 2, 4], num_mlp_ratios=[4, 4, 4],
                    num_window_sizes=[7, 7, 7]),
        stage4=dict(num_modules=2, num_branches=4, block="TRANSFORMER_BLOCK", num_blocks=(2, 2, 2, 2),
                    num_channels=(32, 64, 128, 256), num_heads=[1, 2, 4, 8], num_mlp_ratios=[4, 4, 4, 4],
                    num_window_sizes=[7, 7, 7, 7], multiscale_output=multiscale_output)))


def _transpose_r_a4(out_indices: tuple[int, ...] = (2,)) -> dict[str, Any]:
    """TransPose-R-A4: ResNet-S (stem, layer1, layer2) + 1x1 reduce to 256 + 4 encoder layers (8 heads, FFN 1024)."""
    return dict(type="TransPoseR", layers=(3, 4), d_model=256, dim_feedforward=1024, nhead=8, num_encoder_layers=4,
                pos_embedding="sine", image_size=list(INPUT), out_indices=out_indices)


# ----------------------------------------------------------------------------------------------- heads
def _simple_head(in_channels: int, num_deconv_layers: int = 3) -> dict[str, Any]:
    head = dict(type="TopDownSimpleHead", in_channels=in_channels, out_channels=NUM_JOINTS,
                num_deconv_layers=num_deconv_layers, num_deconv_filters=(256,) * max(num_deconv_layers, 1),
                num_deconv_kernels=(4,) * max(num_deconv_layers, 1))
    if num_deconv_layers == 0:
        head.update(extra=dict(final_conv_kernel=1))
    return head


def _sr_head(in_channels: int, num_deconv_layers: int = 3, pixel_shuffle: int = 4) -> dict[str, Any]:
    head = _simple_head(in_channels, num_deconv_layers)
    head.pop("extra", None)
    head.update(type="TopDownSimpleSRHead", per_kp_emb=4, pixel_shuffle=pixel_shuffle)
    return head


def _srpose_head(in_channels: list[int]) -> dict[str, Any]:
    return dict(type="TopDownSRPoseHead", in_channels=in_channels, out_channels=[256, 128, 64, 32],
                num_joints=NUM_JOINTS, upsample_log=[3, 2, 1, 2], per_emb_nums=[16, 8, 4, 4],
                supervises=[True, True, True, True])


# ----------------------------------------------------------------------------------------------- assembly
def _topdown(name: str, backbone: dict, head: dict, *, full_res: bool, optimizer: str = "Adam",
             weight_decay: float = 0.0, dataset: str = "coco", input_size: tuple[int, int] = INPUT,
             data: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> PoseConfig:
    """A top-down config (default COCO 256x192): full-resolution heads use the SRPose decoder and sigma 8
    (official); ``data`` / ``train``: the dataset's settings over the defaults."""
    w, h = input_size
    heatmap = (w, h) if full_res else (w // 4, h // 4)
    model = dict(type="TopDownHigher" if full_res else "TopDown", backbone=copy.deepcopy(backbone),
                 keypoint_head=copy.deepcopy(head), train_cfg={}, test_cfg=dict(DEFAULT_TEST_CFG))
    data_cfg = make_data_cfg(dataset, image_size=(w, h), heatmap_size=heatmap, sigma=8.0 if full_res else 2.0,
                             decoder="srpose" if full_res else "simple", **(data or {}))
    train_cfg = dict(DEFAULT_TRAIN_CFG, optimizer=optimizer, weight_decay=weight_decay, **(train or {}))
    return PoseConfig(name=name, model=model, data=data_cfg, train=train_cfg, source="preset")


# ResNet-50 --------------------------------------------------------------------------------------
@register_model
def res50_coco_256x192() -> PoseConfig:
    """SimpleBaseline ResNet-50 (3 deconvs, 1/4-resolution heatmaps)."""
    return _topdown("res50_coco_256x192", RESNET50, _simple_head(2048), full_res=False)


@register_model
def res50_sr_coco_256x192() -> PoseConfig:
    """ResNet-50 with the lightweight SR head (full-resolution heatmaps)."""
    return _topdown("res50_sr_coco_256x192", RESNET50, _sr_head(2048), full_res=True)


@register_model
def res50_srpose_coco_256x192() -> PoseConfig:
    """ResNet-50 SRPose (multi-stage SR head over C2..C5)."""
    return _topdown("res50_srpose_coco_256x192", RESNET50_MS, _srpose_head([2048, 1024, 512, 256]), full_res=True)


# HRNet-W32 --------------------------------------------------------------------------------------
@register_model
def hrnet_w32_coco_256x192() -> PoseConfig:
    """HRNet-W32 with a 1x1 final conv (1/4-resolution heatmaps)."""
    return _topdown("hrnet_w32_coco_256x192", _hrnet_w32(False), _simple_head(32, 0), full_res=False)


@register_model
def hrnet_w32_sr_coco_256x192() -> PoseConfig:
    """HRNet-W32 with the lightweight SR head."""
    return _topdown("hrnet_w32_sr_coco_256x192", _hrnet_w32(False), _sr_head(32, 0), full_res=True)


@register_model
def hrnet_w32_srpose_coco_256x192() -> PoseConfig:
    """HRNet-W32 SRPose (multiscale stage-4 output)."""
    return _topdown("hrnet_w32_srpose_coco_256x192", _hrnet_w32(True), _srpose_head([256, 128, 64, 32]),
                    full_res=True)


# HRFormer-S -------------------------------------------------------------------------------------
@register_model
def hrt_small_coco_256x192() -> PoseConfig:
    """HRFormer-Small with a 1x1 final conv."""
    return _topdown("hrt_small_coco_256x192", _hrt_small(False), _simple_head(32, 0), full_res=False,
                    optimizer="AdamW", weight_decay=0.01)


@register_model
def hrt_small_sr_coco_256x192() -> PoseConfig:
    """HRFormer-Small with the lightweight SR head."""
    return _topdown("hrt_small_sr_coco_256x192", _hrt_small(False), _sr_head(32, 0), full_res=True,
                    optimizer="AdamW", weight_decay=0.01)


@register_model
def hrt_small_srpose_coco_256x192() -> PoseConfig:
    """HRFormer-Small SRPose (multiscale stage-4 output)."""
    return _topdown("hrt_small_srpose_coco_256x192", _hrt_small(True), _srpose_head([256, 128, 64, 32]),
                    full_res=True, optimizer="AdamW", weight_decay=0.01)


# TransPose-R-A4 ----------------------------------------------------------------------------------
# The SRPose repo has no TransPose config; the head layouts below reproduce the paper's head parameter counts
# (docs/models.md explains the choice and why the paper's GFLOPs for these rows follow another counter).
@register_model
def transpose_r_a4_coco_256x192() -> PoseConfig:
    """TransPose-R-A4 with its one-deconv head (1/4-resolution heatmaps)."""
    return _topdown("transpose_r_a4_coco_256x192", _transpose_r_a4(), _simple_head(256, 1), full_res=False)


@register_model
def transpose_r_a4_sr_coco_256x192() -> PoseConfig:
    """TransPose-R-A4 with the lightweight SR head (one deconv, then x4 pixel shuffle)."""
    return _topdown("transpose_r_a4_sr_coco_256x192", _transpose_r_a4(), _sr_head(256, 1), full_res=True)


@register_model
def transpose_r_a4_srpose_coco_256x192() -> PoseConfig:
    """TransPose-R-A4 SRPose: two stages over the encoder output (1/8) and ResNet-S layer1 (1/4)."""
    head = dict(_srpose_head([256, 256]), out_channels=[256, 128], upsample_log=[1, 2], per_emb_nums=[4, 4],
                supervises=[True, True])
    return _topdown("transpose_r_a4_srpose_coco_256x192", _transpose_r_a4((0, 2)), head, full_res=True)


# Demo -------------------------------------------------------------------------------------------
@register_model
def res18w16_srpose_coco_96x64() -> PoseConfig:
    """A narrow ResNet-18 (16 base channels) with a 4-stage SRPose head at 64x96 (w x h): the model ``srpose demo``
    trains on generated people in about 6 minutes on 2 CPU cores to AP > 0.7 (recipe and measurements in
    docs/benchmarks.md). Full-resolution heatmaps, SRPose decoder, sigma scaled from the official 8 at 192 px."""
    backbone = dict(type="ResNet", depth=18, base_channels=16, stem_channels=16, out_indices=(0, 1, 2, 3))
    head = _srpose_head([128, 64, 32, 16])
    head.update(out_channels=[64, 32, 16, 8], per_emb_nums=[8, 4, 2, 2])
    cfg = _topdown("res18w16_srpose_coco_96x64", backbone, head, full_res=True)
    cfg = cfg.with_input_size(64, 96)
    cfg.data["sigma"] = 8.0 * 64 / 192
    # Short schedule: warm-up, one LR step before the last epoch; rotation and half-body crops slow learning on
    # generated single-person crops more than they help within 6 epochs (measured).
    cfg.train.update(lr=3e-3, batch_size=16, warmup_iters=100, epochs=6, lr_steps=(5,), rot_factor=0,
                     scale_factor=0.25, prob_half_body=0.0, channels_last=True)
    return cfg


#: The SRPose paper's table (COCO val, 256x192): GFLOPs, backbone params (M), head params used in eval (M).
PAPER_TABLE: dict[str, tuple[float, float, float]] = {
    "res50_coco_256x192": (5.46, 23.51, 10.49),
    "res50_sr_coco_256x192": (5.77, 23.51, 10.59),
    "res50_srpose_coco_256x192": (4.61, 23.51, 1.29),
    "hrnet_w32_coco_256x192": (7.70, 28.54, 0.00),
    "hrnet_w32_sr_coco_256x192": (7.98, 28.54, 0.09),
    "hrnet_w32_srpose_coco_256x192": (8.28, 29.30, 0.65),
    "transpose_r_a4_coco_256x192": (8.91, 4.93, 1.06),
    "transpose_r_a4_sr_coco_256x192": (9.23, 4.93, 1.16),
    "transpose_r_a4_srpose_coco_256x192": (6.26, 4.93, 0.55),
    "hrt_small_coco_256x192": (2.82, 7.89, 0.00),
    "hrt_small_sr_coco_256x192": (3.09, 7.89, 0.09),
    "hrt_small_srpose_coco_256x192": (3.34, 8.21, 0.65),
}
