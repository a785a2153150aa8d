"""Helpers of the MPII / CrowdPose preset tests: the presets at reduced width, a PyTorch model whose keypoints land
near the sample's people (a metric above 0 without training), and the shared samples as datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from srpose import build_model, get_config
from srpose.config import PoseConfig

#: preset -> (dataset, COCO counterpart): the paper's MPII and CrowdPose rows
PRESETS = {
    "res50_mpii_256x256": ("mpii", "res50_coco_256x192"),
    "res50_srpose_mpii_256x256": ("mpii", "res50_srpose_coco_256x192"),
    "hrnet_w32_mpii_256x256": ("mpii", "hrnet_w32_coco_256x192"),
    "hrnet_w32_srpose_mpii_256x256": ("mpii", "hrnet_w32_srpose_coco_256x192"),
    "res50_crowdpose_256x192": ("crowdpose", "res50_coco_256x192"),
    "res50_srpose_crowdpose_256x192": ("crowdpose", "res50_srpose_coco_256x192"),
    "hrnet_w32_crowdpose_256x192": ("crowdpose", "hrnet_w32_coco_256x192"),
    "hrnet_w32_srpose_crowdpose_256x192": ("crowdpose", "hrnet_w32_srpose_coco_256x192"),
}
#: the metric each dataset's reports lead with
PRIMARY = {"mpii": "Mean", "crowdpose": "AP"}
SMALL = (64, 64)  # (w, h) of the reduced inputs: every backbone and head supports it


def small_preset(name: str, size: tuple[int, int] = SMALL) -> PoseConfig:
    """Preset ``name`` at input ``size`` with its backbone narrowed (HRNet: one block per stage and 4..32 channels;
    ResNet-50: its 16 bottlenecks at 8 base channels) and its head fed by it: the preset's layer types, joints,
    head structure, codec and data settings in a fraction of the export and inference time."""
    cfg = get_config(name)
    backbone, head = cfg.model["backbone"], cfg.model["keypoint_head"]
    if backbone["type"] == "HRNet":
        extra = backbone["extra"]
        extra["stage1"].update(num_blocks=(1,), num_channels=(8,))
        for i, stage in enumerate(("stage2", "stage3", "stage4")):
            nb = i + 2
            extra[stage].update(num_modules=1, num_blocks=(1,) * nb, num_channels=(4, 8, 16, 32)[:nb])
        feats = [32, 16, 8, 4]  # deepest first, as the SRPose head takes them
        simple_in = 4
    else:
        backbone.update(base_channels=8, stem_channels=8)
        feats = [256, 128, 64, 32]
        simple_in = 256
    if head["type"] == "TopDownSRPoseHead":
        head.update(in_channels=feats, out_channels=[16, 8, 8, 8], per_emb_nums=[2, 2, 2, 2])
    else:
        head.update(in_channels=simple_in)
        if head.get("num_deconv_layers", 3):
            head.update(num_deconv_filters=(16, 16, 16))
    cfg.name = f"small_{name}"
    return cfg.with_input_size(*size)


def sample_dataset(task: Any, shared: Path, *, det: bool = False) -> Any:
    """The shared sample of the task's dataset: MPII's annotated persons; CrowdPose's GT boxes (or detections)."""
    name = task.cfg.data["dataset"]
    d = shared / name
    ann = d / f"test_{name}.json"
    if name == "mpii":
        return task.dataset(str(ann), str(d))
    if det:
        return task.dataset(str(ann), str(d), det=str(d / f"test_{name}_det_AP_40.json"))
    return task.dataset(str(ann), str(d), gt_bbox=True)


def sample_sets(task: Any, shared: Path) -> list[Any]:
    """The sample of the task's dataset; CrowdPose also with detections (several boxes an image, OKS-NMS)."""
    return [sample_dataset(task, shared)] + (
        [sample_dataset(task, shared, det=True)] if task.cfg.data["dataset"] == "crowdpose" else [])


def mean_pose_model(cfg: PoseConfig, task: Any, dataset: Any, *, weight: float = 0.02,
                    seed: int = 0) -> torch.nn.Module:
    """The model of ``cfg`` (PyTorch's default initialisation, seeded) whose eval-mode heatmaps are ``weight`` x its
    own plus the rendered mean pose of ``dataset``'s crops: the network still computes (and exports: the hook is
    traced), and the keypoints land near people, so AP / PCKh are above 0 without training."""
    joints = np.stack([dataset[i]["joints"] for i in range(len(dataset))])  # crop pixels
    vis = joints[..., 2:3] > 0
    mean = (joints[..., :2] * vis).sum(0) / np.maximum(vis.sum(0), 1)
    mean_joints = np.concatenate([mean, np.ones((len(mean), 1))], 1).astype(np.float32)
    target = torch.from_numpy(task.codec.encode(mean_joints)[0][None].astype(np.float32))
    torch.manual_seed(seed)
    model = build_model(cfg, init=False).eval()
    model.register_forward_hook(lambda m, _inputs, out: out if m.training else weight * out + target)
    return model


def self_labelled(task: Any, model: torch.nn.Module, shared: Path, out: Path) -> Path:
    """The shared sample of the task's dataset annotated with ``model``'s own keypoints (every joint visible; MPII:
    1-based, with a head box of the true head segment for PCKh's head size): the FP32 model scores 1, so every
    quantisation error shows as a loss of AP / PCKh."""
    import json

    from srpose.eval.backends import TorchBackend
    from srpose.eval.evaluator import EvalOptions, predict

    name = task.cfg.data["dataset"]
    dataset = sample_dataset(task, shared)
    poses, _ = predict(task, TorchBackend(model), dataset, EvalOptions(flip=False, workers=0, progress=False))
    kpts = poses.keypoints[np.argsort(poses.indices)]
    data = json.loads((shared / name / f"test_{name}.json").read_text())
    if name == "mpii":
        for person, kp in zip(data, kpts):
            head = np.asarray(person["joints"], dtype=np.float64)[[8, 9]]
            person.update(joints=(kp[:, :2] + 1).tolist(), joints_vis=[1] * len(kp),
                          headbox=[*head.min(0).tolist(), *head.max(0).tolist()])
    else:
        for rec, kp in zip(dataset.records, kpts):
            (ann,) = [a for a in data["annotations"]
                      if a["image_id"] == rec["image_id"] and np.allclose(a["bbox"][:2], rec["bbox"][:2])]
            ann.update(keypoints=[float(v) for x, y, _ in kp for v in (x, y, 2)], num_keypoints=len(kp))
    path = out / f"self_labelled_{name}.json"
    path.write_text(json.dumps(data))
    return path
