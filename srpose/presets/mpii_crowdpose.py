"""Presets of the SRPose paper's MPII (PCKh@0.5) and CrowdPose (AP) rows: SimpleBaseline ResNet-50 and HRNet-W32,
each as the baseline and with the SRPose head.

The baselines follow mmpose 0.x's configs (``configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/{mpii,crowdpose}/
{res50,hrnet_w32}_*.py`` with ``configs/_base_/datasets/{mpii,crowdpose}.py``): joint order and flip pairs (from
:mod:`srpose.keypoints`), input and heatmap sizes, sigma 2, the test settings (flip test, shifted heatmaps,
``post_process='default'``, ``modulate_kernel=11``), the boxes (MPII: its annotated persons; CrowdPose: detections,
OKS-NMS at 0.9) and the training recipe (no half-body crops on MPII, half-body at 6 joints on CrowdPose, batch 64).

The official SRPose repository releases no MPII or CrowdPose config: the ``*_srpose_*`` presets are the COCO SRPose
configs (``configs/top_down/srpose/coco/{res50,hrnet_w32}_srpose_coco_256x192.py``: ``TopDownHigher``, the
four-stage ``TopDownSRPoseHead``, full-resolution heatmaps, sigma 8, the SRPose decoder, batch 32) with the
dataset's joints, input size, boxes and augmentation of the baseline. docs/models.md says what was derived and how.
"""
from __future__ import annotations

from typing import Any

from srpose._registry import register_model
from srpose.config import PoseConfig
from srpose.keypoints import dataset_meta

from .top_down import RESNET50, RESNET50_MS, _hrnet_w32, _simple_head, _srpose_head, _topdown

__all__ = ["DATASET_SETTINGS", "PAPER_TABLE_DATASETS"]

#: Per dataset: input (w, h), the settings of mmpose 0.x's data_cfg and train pipeline, and the paper's metric.
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "mpii": dict(input=(256, 256), metric="PCKh@0.5",
                 data=dict(use_gt_bbox=True),  # MPII is scored on its annotated persons (centre / scale)
                 train=dict(prob_half_body=0.0)),  # mmpose's MPII pipeline has no TopDownHalfBodyTransform
    "crowdpose": dict(input=(192, 256), metric="AP",
                      data=dict(use_gt_bbox=False, det_bbox_thr=0.0, oks_thr=0.9, vis_thr=0.2, soft_nms=False),
                      train=dict(num_joints_half_body=6, prob_half_body=0.3)),
}


def _preset(name: str, dataset: str, backbone: dict[str, Any], head: dict[str, Any], *, srpose: bool) -> PoseConfig:
    """A top-down ``dataset`` config: the mmpose 0.x baseline, or (``srpose``) the COCO SRPose recipe on it."""
    settings = DATASET_SETTINGS[dataset]
    head = {**head, ("num_joints" if srpose else "out_channels"): len(dataset_meta(dataset)["joints"])}
    return _topdown(name, backbone, head, full_res=srpose, dataset=dataset, input_size=settings["input"],
                    data=settings["data"], train=dict(batch_size=32 if srpose else 64, **settings["train"]))


def _size(dataset: str) -> str:
    """The name's size part, ``HxW`` as mmpose names its configs."""
    w, h = DATASET_SETTINGS[dataset]["input"]
    return f"{h}x{w}"


def _res50(dataset: str, srpose: bool) -> PoseConfig:
    size = _size(dataset)
    if srpose:
        return _preset(f"res50_srpose_{dataset}_{size}", dataset, RESNET50_MS, _srpose_head([2048, 1024, 512, 256]),
                       srpose=True)
    return _preset(f"res50_{dataset}_{size}", dataset, RESNET50, _simple_head(2048), srpose=False)


def _hrnet(dataset: str, srpose: bool) -> PoseConfig:
    size = _size(dataset)
    if srpose:
        return _preset(f"hrnet_w32_srpose_{dataset}_{size}", dataset, _hrnet_w32(True),
                       _srpose_head([256, 128, 64, 32]), srpose=True)
    return _preset(f"hrnet_w32_{dataset}_{size}", dataset, _hrnet_w32(False), _simple_head(32, 0), srpose=False)


# MPII (16 joints, 256x256) ----------------------------------------------------------------------
@register_model
def res50_mpii_256x256() -> PoseConfig:
    """SimpleBaseline ResNet-50 on MPII (3 deconvs, 64x64 heatmaps), mmpose 0.x's res50_mpii_256x256."""
    return _res50("mpii", False)


@register_model
def res50_srpose_mpii_256x256() -> PoseConfig:
    """ResNet-50 SRPose on MPII (multi-stage SR head over C2..C5, 256x256 heatmaps)."""
    return _res50("mpii", True)


@register_model
def hrnet_w32_mpii_256x256() -> PoseConfig:
    """HRNet-W32 on MPII (1x1 final conv, 64x64 heatmaps), mmpose 0.x's hrnet_w32_mpii_256x256."""
    return _hrnet("mpii", False)


@register_model
def hrnet_w32_srpose_mpii_256x256() -> PoseConfig:
    """HRNet-W32 SRPose on MPII (multiscale stage-4 output, 256x256 heatmaps)."""
    return _hrnet("mpii", True)


# CrowdPose (14 joints, 256x192) -----------------------------------------------------------------
@register_model
def res50_crowdpose_256x192() -> PoseConfig:
    """SimpleBaseline ResNet-50 on CrowdPose (3 deconvs, 48x64 heatmaps), mmpose 0.x's res50_crowdpose_256x192."""
    return _res50("crowdpose", False)


@register_model
def res50_srpose_crowdpose_256x192() -> PoseConfig:
    """ResNet-50 SRPose on CrowdPose (multi-stage SR head over C2..C5, 192x256 heatmaps)."""
    return _res50("crowdpose", True)


@register_model
def hrnet_w32_crowdpose_256x192() -> PoseConfig:
    """HRNet-W32 on CrowdPose (1x1 final conv, 48x64 heatmaps), mmpose 0.x's hrnet_w32_crowdpose_256x192."""
    return _hrnet("crowdpose", False)


@register_model
def hrnet_w32_srpose_crowdpose_256x192() -> PoseConfig:
    """HRNet-W32 SRPose on CrowdPose (multiscale stage-4 output, 192x256 heatmaps)."""
    return _hrnet("crowdpose", True)


#: The SRPose paper's MPII and CrowdPose tables: preset -> (dataset, metric, the paper's value). MPII: PCKh@0.5
#: on the MPII val set; CrowdPose: AP on CrowdPose test; both in percent as printed.
PAPER_TABLE_DATASETS: dict[str, tuple[str, str, float]] = {
    "res50_mpii_256x256": ("mpii", "PCKh@0.5", 88.2),
    "res50_srpose_mpii_256x256": ("mpii", "PCKh@0.5", 89.1),
    "hrnet_w32_mpii_256x256": ("mpii", "PCKh@0.5", 90.1),
    "hrnet_w32_srpose_mpii_256x256": ("mpii", "PCKh@0.5", 90.5),
    "res50_crowdpose_256x192": ("crowdpose", "AP", 63.7),
    "res50_srpose_crowdpose_256x192": ("crowdpose", "AP", 64.7),
    "hrnet_w32_crowdpose_256x192": ("crowdpose", "AP", 66.4),
    "hrnet_w32_srpose_crowdpose_256x192": ("crowdpose", "AP", 67.8),
}
