"""ResNet and HRNet backbones: mmpose 0.x state_dict keys, parameter counts, output shapes, options."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from srpose.models.backbones._blocks import BasicBlock, Bottleneck, load_pretrained
from srpose.models.backbones.hrnet import HRNet
from srpose.models.backbones.resnet import ResNet

# HRNet-W32 backbone of SRPose's configs/top_down/srpose/coco/hrnet_w32_srpose_coco_256x192.py (multiscale_output
# True); mmpose 0.x's topdown_heatmap/coco/hrnet_w32_coco_256x192.py is the same without the flag (i.e. False).
W32_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(4,), num_channels=(64,)),
    stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(4, 4), num_channels=(32, 64)),
    stage3=dict(num_modules=4, num_branches=3, block="BASIC", num_blocks=(4, 4, 4), num_channels=(32, 64, 128)),
    stage4=dict(multiscale_output=True, num_modules=3, num_branches=4, block="BASIC", num_blocks=(4, 4, 4, 4),
                num_channels=(32, 64, 128, 256)),
)


# A tiny HRNet (same structure, few blocks/channels) for tests that run forward/backward passes.
SLIM_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(8,)),
    stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(1, 1), num_channels=(4, 8)),
    stage3=dict(num_modules=2, num_branches=3, block="BASIC", num_blocks=(1, 1, 1), num_channels=(4, 8, 16)),
    stage4=dict(multiscale_output=True, num_modules=2, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1),
                num_channels=(4, 8, 16, 32)),
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """One intra-op thread: much faster and steadier for these small graphs on a busy 2-core machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _w32(multiscale: bool, **kwargs) -> HRNet:
    extra = copy.deepcopy(W32_EXTRA)
    if multiscale:
        extra["stage4"]["multiscale_output"] = True
    else:
        del extra["stage4"]["multiscale_output"]  # mmpose default is False
    return HRNet(extra, **kwargs)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def resnet50() -> ResNet:
    return ResNet(50, out_indices=(0, 1, 2, 3)).eval()


@pytest.fixture(scope="module")
def w32_single() -> HRNet:
    return _w32(False).eval()


@pytest.fixture(scope="module")
def w32_multi() -> HRNet:
    return _w32(True).eval()


# ----------------------------------------------------------------------------------------------------- ResNet
@pytest.mark.parametrize(
    "depth, params, n_keys",
    [(18, 11_176_512, 120), (34, 21_284_672, 216), (50, 23_508_032, 318), (101, 42_500_160, 624),
     (152, 58_143_808, 930)],
)
def test_resnet_param_and_key_counts(depth: int, params: int, n_keys: int) -> None:
    with torch.device("meta"):  # shapes only, no weight init
        m = ResNet(depth)
    assert _n_params(m) == params
    assert round(params / 1e6, 2) == {18: 11.18, 34: 21.28, 50: 23.51, 101: 42.50, 152: 58.14}[depth]
    assert len(m.state_dict()) == n_keys


def test_resnet50_keys(resnet50: ResNet) -> None:
    sd = resnet50.state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.weight": (64,),
        "bn1.running_mean": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.bn2.bias": (256,),
        "layer4.0.downsample.1.weight": (2048,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    for absent in ("fc.weight", "layer1.1.downsample.0.weight", "layer1.0.norm1.weight", "stem.0.conv.weight"):
        assert absent not in sd


def test_resnet18_keys() -> None:
    sd = ResNet(18).state_dict()
    assert tuple(sd["layer1.1.conv2.weight"].shape) == (64, 64, 3, 3)
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert "layer1.0.downsample.0.weight" not in sd  # 64 -> 64, stride 1: no projection
    assert "layer1.0.conv3.weight" not in sd


def test_resnet_deep_stem_avg_down_keys() -> None:
    sd = ResNet(50, deep_stem=True, avg_down=True).state_dict()
    assert tuple(sd["stem.0.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["stem.2.bn.running_var"].shape) == (64,)
    assert "conv1.weight" not in sd
    # stride-2 stages pool first (index 0, no params); layer1 (stride 1) has no pool
    assert tuple(sd["layer2.0.downsample.1.weight"].shape) == (512, 256, 1, 1)
    assert tuple(sd["layer2.0.downsample.2.weight"].shape) == (512,)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)


@pytest.mark.parametrize(
    "size, spatial",
    [((64, 48), [(16, 12), (8, 6), (4, 3), (2, 2)]), ((256, 192), [(64, 48), (32, 24), (16, 12), (8, 6)])],
)
def test_resnet50_output_shapes(resnet50: ResNet, size: tuple, spatial: list) -> None:
    with torch.no_grad():
        outs = resnet50(torch.randn(1, 3, *size))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(1, c, h, w) for c, (h, w) in zip((256, 512, 1024, 2048), spatial)]
    single = ResNet(50).eval()  # default out_indices=(3,): a bare tensor
    single.load_state_dict(resnet50.state_dict())
    with torch.no_grad():
        out = single(torch.randn(1, 3, 64, 48))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 2048, 2, 2)


def test_resnet18_multi_out_and_dilation() -> None:
    m = ResNet(18, out_indices=(1, 3)).eval()
    with torch.no_grad():
        a, b = m(torch.randn(2, 3, 64, 48))
    assert tuple(a.shape) == (2, 128, 8, 6) and tuple(b.shape) == (2, 512, 2, 2)
    m = ResNet(50, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 2), out_indices=(2,)).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 48))
    assert tuple(out.shape) == (1, 1024, 8, 6)
    assert m.layer3[1].conv2.dilation == (2, 2)


def test_resnet_init_weights_zero_init_residual() -> None:
    m = ResNet(50)
    m.init_weights()
    assert torch.all(m.layer1[0].bn3.weight == 0) and torch.all(m.layer1[0].bn1.weight == 1)
    assert torch.all(m.bn1.bias == 0)
    std = m.layer3[0].conv2.weight.std().item()
    assert abs(std - (2.0 / (256 * 9)) ** 0.5) < 0.003  # kaiming normal, fan_out, relu
    m18 = ResNet(18, zero_init_residual=False)
    m18.init_weights()
    assert torch.all(m18.layer1[0].bn2.weight == 1)


def test_resnet_frozen_stages_and_norm_eval() -> None:
    m = ResNet(18, frozen_stages=1, norm_eval=True)
    m.train()
    assert not any(p.requires_grad for p in m.conv1.parameters())
    assert not any(p.requires_grad for p in m.layer1.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    assert not m.layer1.training
    assert all(not bn.training for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    assert m.layer2[0].conv1.training


def test_resnet_with_cp_matches_and_backprops() -> None:
    torch.manual_seed(0)
    a = ResNet(18, out_indices=(0, 1, 2, 3))
    b = ResNet(18, out_indices=(0, 1, 2, 3), with_cp=True)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    ya, yb = a(x), b(x)
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q)
    sum(o.sum() for o in yb).backward()
    assert b.layer1[0].conv1.weight.grad is not None


def test_resnet_bad_arguments() -> None:
    with pytest.raises(ValueError, match="26"):
        ResNet(26)
    with pytest.raises(ValueError, match="'GN'"):
        ResNet(18, norm_cfg=dict(type="GN", num_groups=32))
    with pytest.raises(ValueError, match="out_indices"):
        ResNet(18, out_indices=(4,))
    with pytest.raises(ValueError, match="DCN"):
        ResNet(18, conv_cfg=dict(type="DCN"))
    ResNet(18, norm_cfg=dict(type="SyncBN", requires_grad=True), conv_cfg=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResNet(18, pretrained=None)  # mmpose-only, silently ignored
    with pytest.warns(UserWarning, match="bogus"):
        ResNet(18, bogus=1)


def test_norm_cfg_requires_grad_false() -> None:
    m = ResNet(18, norm_cfg=dict(type="BN", requires_grad=False))
    assert not m.bn1.weight.requires_grad and m.conv1.weight.requires_grad


def test_load_pretrained_nested_and_prefixed(tmp_path) -> None:
    src = ResNet(18)
    for p in src.parameters():
        nn.init.normal_(p)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 512)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, path)
    dst = ResNet(18)
    dst.init_weights(pretrained=str(path))
    torch.testing.assert_close(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    missing, unexpected = load_pretrained(ResNet(18), path)
    assert missing == [] and unexpected == ["fc.weight"]
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(dst, tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------------ HRNet
def test_hrnet_w32_counts(w32_single: HRNet, w32_multi: HRNet) -> None:
    assert _n_params(w32_single) == 28_535_552  # 28.54M (mmpose hrnet_w32_coco_256x192)
    assert _n_params(w32_multi) == 29_305_536  # 29.31M (SRPose hrnet_w32_srpose_coco_256x192)
    assert round(_n_params(w32_single) / 1e6, 2) == 28.54
    assert len(w32_single.state_dict()) == 1752
    assert len(w32_multi.state_dict()) == 1830


def test_hrnet_w32_keys(w32_single: HRNet, w32_multi: HRNet) -> None:
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn2.running_var": (64,),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.bias": (256,),
        "layer1.3.bn3.weight": (256,),
        "transition1.0.0.weight": (32, 256, 3, 3),
        "transition1.0.1.running_mean": (32,),
        "transition1.1.0.0.weight": (64, 256, 3, 3),
        "transition2.2.0.0.weight": (128, 64, 3, 3),
        "transition3.3.0.1.weight": (256,),
        "stage2.0.branches.1.3.conv2.weight": (64, 64, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1),  # upsample path: 1x1 conv, BN, Upsample
        "stage2.0.fuse_layers.0.1.1.running_var": (32,),
        "stage2.0.fuse_layers.1.0.0.0.weight": (64, 32, 3, 3),  # downsample path: Sequential of (conv, BN[, ReLU])
        "stage3.3.fuse_layers.2.0.0.0.weight": (32, 32, 3, 3),
        "stage3.3.fuse_layers.2.0.1.0.weight": (128, 32, 3, 3),
        "stage4.1.fuse_layers.3.0.2.0.weight": (256, 32, 3, 3),
        "stage4.2.branches.3.3.bn2.weight": (256,),
        "stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
    }
    for sd in (w32_single.state_dict(), w32_multi.state_dict()):
        for key, shape in expected.items():
            assert tuple(sd[key].shape) == shape, key
        assert "transition1.1.0.weight" not in sd and "stage2.0.fuse_layers.1.0.0.weight" not in sd
        assert not any(".fuse_layers.0.0." in k or "layer1.1.downsample" in k for k in sd)
    only_multi = {"stage4.2.fuse_layers.1.0.0.0.weight": (64, 32, 3, 3),
                  "stage4.2.fuse_layers.3.1.1.0.weight": (256, 64, 3, 3)}
    sd_multi, sd_single = w32_multi.state_dict(), w32_single.state_dict()
    for key, shape in only_multi.items():
        assert tuple(sd_multi[key].shape) == shape, key
        assert key not in sd_single
    assert not any(k.startswith(("stage4.2.fuse_layers.1", "stage4.2.fuse_layers.2", "stage4.2.fuse_layers.3"))
                   for k in sd_single)
    assert set(sd_single) < set(sd_multi)


def test_hrnet_w32_output_shapes(w32_single: HRNet, w32_multi: HRNet) -> None:
    with torch.no_grad():
        multi = w32_multi(torch.randn(1, 3, 256, 192))
        single = w32_single(torch.randn(1, 3, 64, 64))
        small = w32_multi(torch.randn(1, 3, 64, 64))
    assert isinstance(multi, list) and isinstance(single, list)
    assert [tuple(t.shape) for t in multi] == [(1, 32, 64, 48), (1, 64, 32, 24), (1, 128, 16, 12), (1, 256, 8, 6)]
    assert [tuple(t.shape) for t in single] == [(1, 32, 16, 16)]
    assert [tuple(t.shape) for t in small] == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]


def test_hrnet_w48_counts() -> None:
    extra = copy.deepcopy(W32_EXTRA)
    del extra["stage4"]["multiscale_output"]
    for stage, ch in (("stage2", (48, 96)), ("stage3", (48, 96, 192)), ("stage4", (48, 96, 192, 384))):
        extra[stage]["num_channels"] = ch
    with torch.device("meta"):
        m = HRNet(extra)
    assert _n_params(m) == 63_594_912  # 63.59M, mmpose hrnet_w48
    assert tuple(m.state_dict()["stage4.2.fuse_layers.0.3.0.weight"].shape) == (48, 384, 1, 1)


def test_hrnet_init_weights() -> None:
    m = HRNet(copy.deepcopy(SLIM_EXTRA))
    m.init_weights()
    assert abs(m.stage3[0].branches[2][0].conv1.weight.std().item() - 0.001) < 1e-4
    assert torch.all(m.bn1.weight == 1) and torch.all(m.layer1[0].bn3.weight == 1)
    z = HRNet(copy.deepcopy(SLIM_EXTRA), zero_init_residual=True)
    z.init_weights()
    assert torch.all(z.layer1[0].bn3.weight == 0) and torch.all(z.stage2[0].branches[0][0].bn2.weight == 0)


def test_hrnet_frozen_norm_eval_and_errors() -> None:
    m = _w32(False, frozen_stages=2, norm_eval=True)
    m.train()
    assert not any(p.requires_grad for mod in (m.conv1, m.layer1, m.transition1, m.stage2, m.transition2)
                   for p in mod.parameters())
    assert all(p.requires_grad for p in m.stage3.parameters())
    assert all(not bn.training for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="'LN'"):
        _w32(False, norm_cfg=dict(type="LN"))
    bad = copy.deepcopy(W32_EXTRA)
    del bad["stage3"]
    with pytest.raises(ValueError, match="stage3"):
        HRNet(bad)
    bad = copy.deepcopy(W32_EXTRA)
    bad["stage2"]["num_blocks"] = (4, 4, 4)
    with pytest.raises(ValueError, match="num_blocks"):
        HRNet(bad)
    bad = copy.deepcopy(W32_EXTRA)
    bad["stage2"]["block"] = "BASICX"
    with pytest.raises(ValueError, match="BASICX"):
        HRNet(bad)


def test_hrnet_strict_roundtrip_and_grad() -> None:
    a, b = HRNet(copy.deepcopy(SLIM_EXTRA)), HRNet(copy.deepcopy(SLIM_EXTRA), with_cp=True)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert [tuple(t.shape) for t in yb] == [(2, 4, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4), (2, 32, 2, 2)]
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q)
    b.train()
    sum(t.mean() for t in b(x.requires_grad_())).backward()
    assert b.conv1.weight.grad is not None and b.stage4[1].fuse_layers[3][0][2][0].weight.grad is not None


def test_hrnet_bilinear_upsample_cfg() -> None:
    extra = copy.deepcopy(SLIM_EXTRA)
    extra["upsample"] = dict(mode="bilinear", align_corners=False)
    m = HRNet(extra).eval()
    up = m.stage2[0].fuse_layers[0][1][2]
    assert isinstance(up, nn.Upsample) and up.mode == "bilinear" and up.scale_factor == 2.0
    with torch.no_grad():
        assert tuple(m(torch.randn(1, 3, 64, 64))[0].shape) == (1, 4, 16, 16)


def test_blocks_exported() -> None:
    assert BasicBlock.expansion == 1 and Bottleneck.expansion == 4
    blk = Bottleneck(64, 256, downsample=nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256)))
    assert sorted(k for k in blk.state_dict() if k.endswith("weight")) == [
        "bn1.weight", "bn2.weight", "bn3.weight", "conv1.weight", "conv2.weight", "conv3.weight",
        "downsample.0.weight", "downsample.1.weight",
    ]
    assert tuple(blk(torch.randn(1, 64, 8, 8)).shape) == (1, 256, 8, 8)
