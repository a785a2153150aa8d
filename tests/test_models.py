"""Every preset: builds, runs eval and training forwards, round-trips checkpoints; the bottom-up presets also match
the official parameter names and the paper's parameters and GFLOPs."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import srpose
from srpose import CheckpointError, build_model, get_config, list_models, load_checkpoint, save_checkpoint
from srpose.complexity import complexity_report
from srpose.models import BottomUp
from srpose.models.heads.associative_embedding import BottomUpSimpleHead, BottomUpSimpleSRHead
from srpose.presets import PAPER_TABLE_BOTTOMUP
from srpose.tasks import task_for


# the top-down COCO presets; the bottom-up ones (large for 2 cores) are tested at the end of the module, the MPII and
# CrowdPose ones (these architectures with other joints) at reduced width in test_presets_mpii_crowdpose.py
PRESETS = [n for n in list_models() if not get_config(n).is_bottom_up and get_config(n).data["dataset"] == "coco"]
SMALL = (64, 64)  # (w, h): small input for CPU speed; every backbone supports it


@functools.lru_cache(maxsize=None)
def _small(name: str) -> srpose.TopDown:
    torch.manual_seed(0)
    return build_model(get_config(name).with_input_size(*SMALL))


def test_presets_cover_the_paper_table() -> None:
    for backbone in ("res50", "hrnet_w32", "hrt_small", "transpose_r_a4"):
        for head in ("", "_sr", "_srpose"):
            assert f"{backbone}{head}_coco_256x192" in PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_eval_forward_shape(name: str) -> None:
    model = _small(name)
    cfg = model.cfg
    x = torch.randn(2, 3, SMALL[1], SMALL[0])
    with torch.no_grad():
        y = model.eval()(x)
    hw, hh = cfg.heatmap_size
    assert tuple(y.shape) == (2, cfg.num_joints, hh, hw)
    assert torch.isfinite(y).all()
    full_res = task_for(cfg).codec.name == "srpose"  # the SRPose codec decodes full-resolution maps
    assert (hw, hh) == (SMALL if full_res else (SMALL[0] // 4, SMALL[1] // 4))


@pytest.mark.parametrize("name", PRESETS)
def test_train_forward_returns_every_stage(name: str) -> None:
    model = _small(name)
    model.train()
    try:
        outs = model(torch.randn(2, 3, SMALL[1], SMALL[0]))
    finally:
        model.eval()
    assert isinstance(outs, list)
    head = model.cfg.model["keypoint_head"]
    if head["type"] == "TopDownSRPoseHead":
        # the low-resolution heatmap, then one per supervised stage; the last at full resolution
        assert len(outs) == 1 + sum(head["supervises"])
        assert tuple(outs[-1].shape[2:]) == (SMALL[1], SMALL[0])
        assert outs[0].shape[2] < outs[1].shape[2]
    else:
        assert len(outs) == 1
    loss = sum(o.float().mean() for o in outs)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", PRESETS)
def test_official_checkpoint_layout_loads_strict(name: str, tmp_path) -> None:
    model = _small(name)
    sd = model.state_dict()
    assert all(k.startswith(("backbone.", "keypoint_head.")) for k in sd)
    # the layout an mmpose run writes under DataParallel: {'state_dict': {'module.'+k: v}, 'meta': {...}}
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v.clone() + 0.5 if v.is_floating_point() else v.clone()
                               for k, v in sd.items()},
                "meta": {"epoch": 210, "mmpose_version": "0.x"}}, path)
    fresh = build_model(model.cfg)
    meta = load_checkpoint(fresh, path)
    assert meta["epoch"] == 210
    for k, v in fresh.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, sd[k] + 0.5)


@pytest.mark.parametrize("name", PRESETS)
def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    model = _small(name)
    path = save_checkpoint(model, tmp_path / "ours.pth", meta={"note": "round trip"})
    # the saved config rebuilds the same architecture without the preset name
    obj = torch.load(path, weights_only=True)
    assert obj["meta"]["config"]["name"] == model.cfg.name
    fresh = build_model(model.cfg)
    load_checkpoint(fresh, path)
    x = torch.randn(1, 3, SMALL[1], SMALL[0])
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_mismatched_checkpoint_lists_keys_and_names_the_fitting_preset(tmp_path) -> None:
    donor = build_model("hrnet_w32_coco_256x192", init=False)
    path = tmp_path / "hrnet.pth"
    torch.save({"state_dict": donor.state_dict()}, path)
    target = build_model("hrnet_w32_sr_coco_256x192", init=False)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(target, path)
    msg = str(e.value)
    assert "missing keys" in msg and "keypoint_head.heatmap_head.weight" in msg
    assert "unexpected keys" in msg and "keypoint_head.final_layer.weight" in msg
    assert "hrnet_w32_coco_256x192" in msg


def test_shape_mismatch_is_listed(tmp_path) -> None:
    model = build_model("res50_coco_256x192", init=False)
    sd = model.state_dict()
    sd["keypoint_head.final_layer.weight"] = torch.zeros(14, 256, 1, 1)
    sd["keypoint_head.final_layer.bias"] = torch.zeros(14)
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"(?s)shape mismatches \(2\).*final_layer.weight: checkpoint \(14, 256"):
        load_checkpoint(model, tmp_path / "c.pth")


@pytest.mark.parametrize("cut", [0, 100, "half"])
def test_truncated_or_corrupt_checkpoint_fails_clearly(tmp_path, cut) -> None:
    model = build_model("res50_coco_256x192", init=False)
    good = save_checkpoint(model, tmp_path / "good.pth")
    data = good.read_bytes()
    n = len(data) // 2 if cut == "half" else cut
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(model, bad)


def test_garbage_and_non_tensor_checkpoints(tmp_path) -> None:
    model = build_model("res50_coco_256x192", init=False)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(model, tmp_path / "text.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(model, tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_checkpoint(model, tmp_path / "nothere.pth")


def test_save_is_atomic(tmp_path, monkeypatch) -> None:
    model = build_model("res50_coco_256x192", init=False)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_name_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean res50_srpose_coco_256x192"):
        build_model("res50_srpose_coco_256x19")

# ---------------------------------------------------------------------------------------------- bottom-up presets
# one torch thread from here on (the module-scoped fixture stays set up until the module ends)
bottom_up = pytest.mark.usefixtures("one_thread")


@bottom_up
def test_bottom_up_presets_are_registered() -> None:
    assert set(PAPER_TABLE_BOTTOMUP) <= set(list_models("*_512x512"))
    cfg = get_config("hrnet_w32_sr_coco_512x512")
    assert cfg.is_bottom_up and cfg.model["type"] == "BottomUp"
    assert cfg.test_cfg["nms_kernel"] == 11 and cfg.test_cfg["nms_padding"] == 5  # as the official SR config
    assert get_config("res50_sr_coco_512x512").test_cfg["nms_kernel"] == 5
    assert cfg.heatmap_size == (512, 512) and get_config("hrnet_w32_coco_512x512").heatmap_size == (128, 128)


@bottom_up
@pytest.mark.parametrize("name", sorted(PAPER_TABLE_BOTTOMUP))
def test_bottom_up_parameters_and_gflops_match_the_paper(name: str) -> None:
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


@bottom_up
def test_bottom_up_official_parameter_names_and_shapes() -> None:
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


@bottom_up
def test_bottom_up_heads_forward_shapes_and_tag_upsampling() -> None:
    torch.manual_seed(0)
    sr = BottomUpSimpleSRHead(8, 17, num_deconv_layers=0, pixel_shuffle=4).eval()
    x = torch.randn(2, 8, 6, 10)
    y = sr([x])
    assert y.shape == (2, 34, 24, 40)
    tags = y[:, 17:]  # after the 17 heatmaps
    ref = torch.nn.functional.interpolate(sr.tag_head(x), size=(24, 40))  # mmpose: nearest to the heatmap size
    torch.testing.assert_close(tags, ref)
    simple = BottomUpSimpleHead(8, 17, num_deconv_layers=1, num_deconv_filters=(16,), num_deconv_kernels=(4,),
                                tag_per_joint=False).eval()
    assert simple(x).shape == (2, 18, 12, 20)
    with pytest.raises(ValueError, match="one filter count"):
        BottomUpSimpleHead(8, 17, num_deconv_layers=2, num_deconv_filters=(16,), num_deconv_kernels=(4,))
    with pytest.raises(ValueError, match="final_conv_kernel"):
        BottomUpSimpleHead(8, 17, num_deconv_layers=0, extra=dict(final_conv_kernel=5))


@bottom_up
def test_bottom_up_training_mode_returns_a_list_and_any_multiple_of_32_runs() -> None:
    cfg = get_config("res50_sr_coco_512x512").with_input_size(64, 64)
    model = build_model(cfg, init=False)
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 34, 64, 96)
    model.train()
    out = model(torch.zeros(2, 3, 64, 64))
    assert isinstance(out, list) and out[0].shape == (2, 34, 64, 64)


@bottom_up
def test_bottom_up_official_config_file_is_read(tmp_path: Path) -> None:
    from srpose.resolve import config_from_mmpose_bottomup

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
