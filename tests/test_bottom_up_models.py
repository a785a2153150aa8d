"""Bottom-up presets: official parameter names and shapes, output shapes, parameters and GFLOPs against the paper."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srpose import build_model, get_config, list_models
from srpose.complexity import complexity_report
from srpose.models.bottom_up import BottomUp, BottomUpSimpleHead, BottomUpSimpleSRHead, is_bottom_up, split_outputs
from srpose.presets_bottomup import PAPER_TABLE_BOTTOMUP


pytestmark = pytest.mark.usefixtures("one_thread")  # the bottom-up models are large for 2 cores


def test_presets_are_registered() -> None:
    assert set(PAPER_TABLE_BOTTOMUP) <= set(list_models("*_512x512"))
    cfg = get_config("hrnet_w32_sr_coco_512x512")
    assert is_bottom_up(cfg) and cfg.model["type"] == "BottomUp"
    assert cfg.test_cfg["nms_kernel"] == 11 and cfg.test_cfg["nms_padding"] == 5  # as the official SR config
    assert get_config("res50_sr_coco_512x512").test_cfg["nms_kernel"] == 5
    assert cfg.heatmap_size == (512, 512) and get_config("hrnet_w32_coco_512x512").heatmap_size == (128, 128)


@pytest.mark.parametrize("name", sorted(PAPER_TABLE_BOTTOMUP))
def test_parameters_and_gflops_match_the_paper(name: str) -> None:
    """GFLOPs are counted at 128x128 and scaled by 16: every feature map scales exactly with the input."""
    gflops, backbone_m, head_m = PAPER_TABLE_BOTTOMUP[name]
    cfg = get_config(name).with_input_size(128, 128)
    model = build_model(cfg, init=False)
    assert isinstance(model, BottomUp)
    rep = complexity_report(model, cfg.input_shape())
    assert abs(rep.params_backbone / 1e6 - backbone_m) <= 0.005
    assert abs(rep.params_head_eval / 1e6 - head_m) <= 0.01  # the paper truncates 10.496 to 10.49
    assert round(rep.gmacs * 16, 2) == pytest.approx(gflops, abs=1e-9)
    assert rep.output_shape == (1, 34, *reversed(cfg.heatmap_size))


def test_official_parameter_names_and_shapes() -> None:
    sd = build_model("res50_sr_coco_512x512", init=False).state_dict()
    head = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("keypoint_head.")}
    assert head["keypoint_head.deconv_layers.0.weight"] == (2048, 256, 4, 4)
    assert head["keypoint_head.deconv_layers.1.running_mean"] == (256,)
    assert head["keypoint_head.kp_encoder.0.weight"] == (68, 256, 1, 1)
    assert head["keypoint_head.heatmap_head.weight"] == (272, 4, 9, 9)
    assert head["keypoint_head.heatmap_head.bias"] == (272,)
    assert head["keypoint_head.tag_head.weight"] == (17, 256, 1, 1)
    deconv = [k for k in head if k.startswith("keypoint_head.deconv_layers.")]
    assert len(deconv) == 3 * (1 + 5)  # 3 x (deconv weight + 5 BN entries)
    assert "backbone.layer4.2.conv3.weight" in sd

    sd = build_model("hrnet_w32_coco_512x512", init=False).state_dict()
    head = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("keypoint_head.")}
    assert head == {"keypoint_head.final_layer.weight": (34, 32, 1, 1), "keypoint_head.final_layer.bias": (34,)}


def test_heads_forward_shapes_and_tag_upsampling() -> None:
    torch.manual_seed(0)
    sr = BottomUpSimpleSRHead(8, 17, num_deconv_layers=0, pixel_shuffle=4).eval()
    x = torch.randn(2, 8, 6, 10)
    y = sr([x])
    assert y.shape == (2, 34, 24, 40)
    hm, tags = split_outputs(y, 17)
    ref = torch.nn.functional.interpolate(sr.tag_head(x), size=(24, 40))  # mmpose: nearest to the heatmap size
    torch.testing.assert_close(tags, ref)
    simple = BottomUpSimpleHead(8, 17, num_deconv_layers=1, num_deconv_filters=(16,), num_deconv_kernels=(4,),
                                tag_per_joint=False).eval()
    assert simple(x).shape == (2, 18, 12, 20)
    with pytest.raises(ValueError, match="one filter count"):
        BottomUpSimpleHead(8, 17, num_deconv_layers=2, num_deconv_filters=(16,), num_deconv_kernels=(4,))
    with pytest.raises(ValueError, match="final_conv_kernel"):
        BottomUpSimpleHead(8, 17, num_deconv_layers=0, extra=dict(final_conv_kernel=5))


def test_training_mode_returns_a_list_and_any_multiple_of_32_runs() -> None:
    cfg = get_config("res50_sr_coco_512x512").with_input_size(64, 64)
    model = build_model(cfg, init=False)
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 34, 64, 96)
    model.train()
    out = model(torch.zeros(2, 3, 64, 64))
    assert isinstance(out, list) and out[0].shape == (2, 34, 64, 64)


def test_official_config_file_is_read(tmp_path: Path) -> None:
    from srpose.presets_bottomup import config_from_mmpose_bottomup

    text = """
data_cfg = dict(image_size=512, base_size=512, base_sigma=8, heatmap_size=[512], num_joints=17)
model = dict(type='BottomUp', backbone=dict(type='ResNet', depth=50),
             keypoint_head=dict(type='BottomUpSimpleSRHead', in_channels=2048, num_joints=17, tag_per_joint=True,
                                with_ae_loss=[True], per_kp_emb=4, pixel_shuffle=4),
             test_cfg=dict(num_joints=17, max_num_people=30, nms_kernel=5, nms_padding=2, flip_test=True))
train_pipeline = [dict(type='BottomUpGenerateTarget', sigma=8, max_num_people=30)]
data = dict(samples_per_gpu=24, test=dict(type='BottomUpCocoDataset', data_cfg=data_cfg))
"""
    path = tmp_path / "res50_sr_coco_512x512.py"
    path.write_text(text)
    cfg = config_from_mmpose_bottomup(path)
    preset = get_config("res50_sr_coco_512x512")
    assert cfg.heatmap_size == preset.heatmap_size and cfg.data["sigma"] == 8.0
    assert {k: cfg.test_cfg[k] for k in preset.test_cfg} == preset.test_cfg
    def shapes(c):  # noqa: ANN001, ANN202
        return {k: v.shape for k, v in build_model(c.with_input_size(64, 64), init=False).state_dict().items()}

    assert shapes(cfg) == shapes(preset)
