"""Presets and official mmpose config files resolve to the same PoseConfig semantics."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from srpose import build_model, get_config
from srpose._mmcfg import ConfigError, read_mmpose_config
from srpose.tasks import task_for

OFFICIAL_STYLE = textwrap.dedent('''
    log_level = 'INFO'
    total_epochs = 210
    optimizer = dict(type='Adam', lr=5e-4)
    lr_config = dict(policy='step', warmup='linear', warmup_iters=500, warmup_ratio=0.001, step=[170, 200])
    channel_cfg = dict(num_output_channels=17, dataset_joints=17,
                       dataset_channel=[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]],
                       inference_channel=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
    model = dict(
        type='TopDownHigher',
        pretrained='/path/to/pretrain_model/resnet50-19c8e357.pth',
        backbone=dict(type='ResNet', depth=50, out_indices=(0,1,2,3)),
        keypoint_head=dict(
            type='TopDownSRPoseHead',
            in_channels=[2048,1024,512,256],
            out_channels=[256,128,64,32],
            num_joints=channel_cfg['num_output_channels'],
            upsample_log=[3, 2, 1, 2],
            per_emb_nums=[16, 8, 4, 4],
            supervises=[True, True, True, True],
            loss_keypoint=dict(type='JointsMSELoss', use_target_weight=True)),
        train_cfg=dict(),
        test_cfg=dict(flip_test=True, post_process='default', shift_heatmap=True, modulate_kernel=11))
    data_root = '/path/to/data/coco'
    data_cfg = dict(image_size=[192, 256], heatmap_size=[192, 256],
                    num_output_channels=channel_cfg['num_output_channels'], num_joints=channel_cfg['dataset_joints'],
                    soft_nms=False, nms_thr=1.0, oks_thr=0.9, vis_thr=0.2, use_gt_bbox=False, det_bbox_thr=0.0,
                    bbox_file=f'{data_root}/person_detection_results/'
                    'COCO_val2017_detections_AP_H_56_person.json')
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TopDownRandomFlip', flip_prob=0.5),
        dict(type='TopDownHalfBodyTransform', num_joints_half_body=8, prob_half_body=0.3),
        dict(type='TopDownGetRandomScaleRotation', rot_factor=40, scale_factor=0.5),
        dict(type='TopDownAffine'), dict(type='ToTensor'),
        dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(type='TopDownGenerateTarget', sigma=8),
    ]
    val_pipeline = [dict(type='LoadImageFromFile'), dict(type='TopDownAffine'), dict(type='ToTensor'),
                    dict(type='NormalizeTensor', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
    test_pipeline = val_pipeline
    data = dict(samples_per_gpu=32, workers_per_gpu=2,
                test=dict(type='TopDownCocoDataset', ann_file=f'{data_root}/annotations/val.json',
                          img_prefix=f'{data_root}/images/val2017/', data_cfg=data_cfg, pipeline=val_pipeline))
''')


def test_official_config_matches_preset(tmp_path) -> None:
    path = tmp_path / "res50_srpose_coco_256x192.py"
    path.write_text(OFFICIAL_STYLE)
    cfg = get_config(path)
    preset = get_config("res50_srpose_coco_256x192")
    assert cfg.data["image_size"] == preset.data["image_size"] == [192, 256]
    assert cfg.data["heatmap_size"] == [192, 256]
    assert cfg.data["sigma"] == 8.0 and cfg.data["decoder"] == "srpose"
    assert cfg.data["flip_pairs"] == preset.data["flip_pairs"]
    assert cfg.train["lr_steps"] == (170, 200) and cfg.train["epochs"] == 210
    assert cfg.test_cfg["shift_heatmap"] is True
    codec = task_for(cfg).codec  # the task decodes it as the preset: the SRPose codec, flip merge shifted
    assert codec.to_dict() == task_for(preset).codec.to_dict() and codec.name == "srpose" and codec.shift_heatmap
    a, b = build_model(path, init=False), build_model("res50_srpose_coco_256x192", init=False)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_base_inheritance_and_dataset_info(tmp_path) -> None:
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "ds.py").write_text(textwrap.dedent('''
        dataset_info = dict(dataset_name='toy', keypoint_info={
            0: dict(name='nose', id=0, swap=''),
            1: dict(name='left_eye', id=1, swap='right_eye'),
            2: dict(name='right_eye', id=2, swap='left_eye')})
        optimizer = dict(type='Adam', lr=1e-3, weight_decay=0.0)
    '''))
    (tmp_path / "child.py").write_text(textwrap.dedent('''
        _base_ = ['_base_/ds.py']
        optimizer = dict(lr=5e-4)
        x = [i for i in range(3)] if False else 1
    '''))
    with pytest.raises(ConfigError, match="child.py:4: IfExp is not supported"):
        read_mmpose_config(tmp_path / "child.py")
    (tmp_path / "child.py").write_text("_base_ = ['_base_/ds.py']\noptimizer = dict(lr=5e-4)\n")
    raw = read_mmpose_config(tmp_path / "child.py")
    assert raw["optimizer"] == {"type": "Adam", "lr": 5e-4, "weight_decay": 0.0}
    assert raw["dataset_info"]["keypoint_info"][1]["swap"] == "right_eye"


MPII_STYLE = textwrap.dedent('''
    _base_ = ['../../_base_/default_runtime.py', '../../_base_/datasets/mpii.py']
    model = dict(type='TopDown', backbone=dict(type='ResNet', depth=50),
                 keypoint_head=dict(type='TopdownHeatmapSimpleHead', in_channels=2048, out_channels=16,
                                    loss_keypoint=dict(type='JointsMSELoss', use_target_weight=True)),
                 train_cfg=dict(), test_cfg=dict(flip_test=True, post_process='default', shift_heatmap=True,
                                                 modulate_kernel=11))
    data_cfg = dict(image_size=[256, 256], heatmap_size=[64, 64], num_joints=16, use_gt_bbox=True, bbox_file=None)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TopDownRandomFlip', flip_prob=0.5),
        dict(type='TopDownGetRandomScaleRotation', rot_factor=40, scale_factor=0.5),
        dict(type='TopDownAffine'), dict(type='TopDownGenerateTarget', sigma=2)]
    val_pipeline = [dict(type='LoadImageFromFile'), dict(type='TopDownAffine')]
    data = dict(
        samples_per_gpu=64,
        train=dict(type='TopDownMpiiDataset', data_cfg=data_cfg, pipeline=train_pipeline,
                   dataset_info={{_base_.dataset_info}}),
        test=dict(type='TopDownMpiiDataset', data_cfg=data_cfg, pipeline=val_pipeline,
                  dataset_info={{ _base_.dataset_info }}))
    name = {{_base_.dataset_info.dataset_name}}
''')


def test_base_placeholders_of_mmpose_0x_mpii_and_crowdpose_configs(tmp_path) -> None:
    """mmcv's ``{{_base_.xxx}}`` (mmpose 0.x's MPII and CrowdPose configs) takes the base files' value; the training
    augmentations follow the config's pipeline (MPII's has no half-body step: off)."""
    base = tmp_path / "_base_"
    (base / "datasets").mkdir(parents=True)
    (base / "default_runtime.py").write_text("log_level = 'INFO'\nload_from = None\n")
    (base / "datasets" / "mpii.py").write_text(textwrap.dedent('''
        dataset_info = dict(dataset_name='mpii', keypoint_info={
            0: dict(name='right_ankle', id=0, swap='left_ankle'),
            5: dict(name='left_ankle', id=5, swap='right_ankle')})
    '''))
    cfg_path = tmp_path / "body" / "mpii" / "res50_mpii_256x256.py"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text(MPII_STYLE)
    raw = read_mmpose_config(cfg_path)
    assert raw["data"]["train"]["dataset_info"] == raw["data"]["test"]["dataset_info"] == raw["dataset_info"]
    assert raw["name"] == "mpii" and raw["load_from"] is None
    cfg = get_config(cfg_path)
    assert cfg.data["num_joints"] == 16 and cfg.data["flip_pairs"] == [[0, 5]]
    assert cfg.train["prob_half_body"] == 0.0 and cfg.train["flip_prob"] == 0.5 and cfg.train["rot_factor"] == 40
    coco = get_config(_write(tmp_path / "coco.py", OFFICIAL_STYLE))  # COCO's pipeline has the step: 0.3
    assert coco.train["prob_half_body"] == 0.3 and coco.train["num_joints_half_body"] == 8
    cfg_path.write_text(MPII_STYLE.replace("dataset_info.dataset_name", "dataset_info.nosuch"))
    with pytest.raises(ConfigError, match=r"\{\{_base_.dataset_info.nosuch\}\}: the base files have no "
                                          r"`dataset_info.nosuch`"):
        read_mmpose_config(cfg_path)
    (tmp_path / "nobase.py").write_text("x = {{_base_.y}}\n")
    with pytest.raises(ConfigError, match="used before `_base_` names the base files"):
        read_mmpose_config(tmp_path / "nobase.py")
    (tmp_path / "set.py").write_text("x = {1, 2}\n")
    with pytest.raises(ConfigError, match="Set is not supported"):
        read_mmpose_config(tmp_path / "set.py")


def _write(path, text):
    path.write_text(text)
    return path


def test_config_errors(tmp_path) -> None:
    (tmp_path / "imp.py").write_text("import os\nmodel = dict()\n")
    with pytest.raises(ConfigError, match="imports are not supported"):
        read_mmpose_config(tmp_path / "imp.py")
    (tmp_path / "nomodel.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="no top-level `model`"):
        get_config(tmp_path / "nomodel.py")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        get_config(tmp_path / "missing.py")
    (tmp_path / "bad.py").write_text("model = dict(\n")
    with pytest.raises(ConfigError, match="bad.py:.*not valid Python"):
        read_mmpose_config(tmp_path / "bad.py")
    (tmp_path / "use.py").write_text("a = b\n")
    with pytest.raises(ConfigError, match="name 'b' is used before it is assigned"):
        read_mmpose_config(tmp_path / "use.py")


def test_json_config_round_trip(tmp_path) -> None:
    cfg = get_config("hrnet_w32_sr_coco_256x192")
    p = tmp_path / "my.json"
    p.write_text(json.dumps(cfg.to_dict()))
    again = get_config(p)
    assert again.model == json.loads(json.dumps(cfg.model))
    m = build_model(p, init=False)
    assert "keypoint_head.heatmap_head.weight" in m.state_dict()


def test_with_input_size_scales_heatmaps() -> None:
    cfg = get_config("res50_coco_256x192").with_input_size(96, 128)
    assert cfg.image_size == (96, 128) and cfg.heatmap_size == (24, 32)
    m = build_model(cfg, init=False)
    with torch.no_grad():
        assert tuple(m(torch.zeros(1, 3, 128, 96)).shape) == (1, 17, 32, 24)


def test_parse_wxh_accepts_sizes_and_names_the_option() -> None:
    from srpose.config import parse_wxh

    assert parse_wxh("192x256") == (192, 256) and parse_wxh(" 64 X 96 ") == (64, 96)
    with pytest.raises(ValueError, match=r"--input-size '192': expected WxH"):
        parse_wxh("192", option="--input-size")
    with pytest.raises(ValueError, match=">= 32"):
        parse_wxh("16x64", minimum=32)
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_wxh("48x64", multiple=32)


def test_demo_preset_is_a_small_full_resolution_srpose_model() -> None:
    cfg = get_config("res18w16_srpose_coco_96x64")
    assert cfg.image_size == cfg.heatmap_size == (64, 96)
    assert cfg.model["keypoint_head"]["type"] == "TopDownSRPoseHead" and cfg.data["decoder"] == "srpose"
    model = build_model(cfg).eval()
    assert sum(p.numel() for p in model.parameters()) < 1.5e6
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 96, 64)).shape == (1, 17, 96, 64)
