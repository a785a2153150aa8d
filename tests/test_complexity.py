"""Tests for srpose.complexity (mmcv-convention MACs, all-ops FLOPs, parameter counts)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from srpose.complexity import (
    Complexity,
    complexity_report,
    count_all_ops_flops,
    count_all_ops_macs,
    count_macs,
    count_params,
)

# Expected values from mmcv 1.x tests/test_cnn/test_flops_counter.py (its "flops" are MACs).
MMCV_TABLE = [
    (lambda: nn.Conv1d(3, 8, 3), (3, 16), 1120, 80),
    (lambda: nn.Conv2d(3, 8, 3), (3, 16, 16), 43904, 224),
    (lambda: nn.Conv3d(3, 8, 3), (3, 3, 16, 16), 128576, 656),
    (lambda: nn.ReLU(), (3, 16, 16), 768, 0),
    (lambda: nn.PReLU(), (3, 16, 16), 768, 1),
    (lambda: nn.ELU(), (3, 16, 16), 768, 0),
    (lambda: nn.LeakyReLU(), (3, 16, 16), 768, 0),
    (lambda: nn.ReLU6(), (3, 16, 16), 768, 0),
    (lambda: nn.MaxPool1d(2), (3, 16), 48, 0),
    (lambda: nn.MaxPool2d(2), (3, 16, 16), 768, 0),
    (lambda: nn.MaxPool3d(2), (3, 3, 16, 16), 2304, 0),
    (lambda: nn.AvgPool1d(2), (3, 16), 48, 0),
    (lambda: nn.AvgPool2d(2), (3, 16, 16), 768, 0),
    (lambda: nn.AvgPool3d(2), (3, 3, 16, 16), 2304, 0),
    (lambda: nn.AdaptiveMaxPool1d(2), (3, 16), 48, 0),
    (lambda: nn.AdaptiveMaxPool2d(2), (3, 16, 16), 768, 0),
    (lambda: nn.AdaptiveMaxPool3d(2), (3, 3, 16, 16), 2304, 0),
    (lambda: nn.AdaptiveAvgPool1d(2), (3, 16), 48, 0),
    (lambda: nn.AdaptiveAvgPool2d(2), (3, 16, 16), 768, 0),
    (lambda: nn.AdaptiveAvgPool3d(2), (3, 3, 16, 16), 2304, 0),
    (lambda: nn.BatchNorm1d(3), (3, 16), 96, 6),
    (lambda: nn.BatchNorm2d(3), (3, 16, 16), 1536, 6),
    (lambda: nn.BatchNorm3d(3), (3, 3, 16, 16), 4608, 6),
    (lambda: nn.GroupNorm(2, 6), (6, 16, 16), 3072, 12),
    (lambda: nn.InstanceNorm1d(3, affine=True), (3, 16), 96, 6),
    (lambda: nn.InstanceNorm2d(3, affine=True), (3, 16, 16), 1536, 6),
    (lambda: nn.InstanceNorm3d(3, affine=True), (3, 3, 16, 16), 4608, 6),
    (lambda: nn.LayerNorm((3, 16, 16)), (3, 16, 16), 1536, 1536),
    (lambda: nn.LayerNorm((3, 16, 16), elementwise_affine=False), (3, 16, 16), 768, 0),
    (lambda: nn.Linear(1024, 2), (1024,), 2048, 2050),
    (lambda: nn.ConvTranspose2d(3, 8, 3), (3, 16, 16), 57888, 224),
    (lambda: nn.Upsample((32, 32)), (3, 16, 16), 3072, 0),
    (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(1568, 2)),
     (3, 16, 16), 47040, 3362),
]


@pytest.mark.parametrize("make, shape, macs, params", MMCV_TABLE)
def test_matches_mmcv_reference_table(make, shape, macs, params):
    model = make()
    assert count_macs(model, shape, batched=False) == macs
    assert count_params(model) == params


# Hand-computed cases -------------------------------------------------------------------

def test_conv_with_and_without_bias():
    # out 8x16x16 = 2048 positions; 3*3*3*8 = 216 MACs per position; bias 8 per position.
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)) == 216 * 256 + 8 * 256
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 16, 16)) == 216 * 256


def test_grouped_and_depthwise_conv():
    # groups=4: each output sees 8/4 input channels: 16 out * 64 pos * 9 * 2 = 18432.
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
    assert count_macs(conv, (8, 8, 8)) == 16 * 64 * 9 * 2
    dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
    assert count_macs(dw, (8, 8, 8)) == 8 * 64 * 49 + 8 * 64


def test_deconv_counts_input_positions_and_output_bias():
    deconv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)  # 5x5 -> 10x10
    expected = (4 * 4 * 4 * 2) * 25 + 2 * 100
    assert count_macs(deconv, (4, 5, 5)) == expected
    deconv_nb = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False)
    assert count_macs(deconv_nb, (4, 5, 5)) == (4 * 4 * 4 * 2) * 25


def test_linear_over_leading_dims_without_bias():
    # (1, 5, 6) -> (1, 5, 10): 5*6*10 MACs; mmcv ignores the Linear bias.
    assert count_macs(nn.Linear(6, 10), (5, 6)) == 300
    assert count_macs(nn.Linear(6, 10, bias=False), (5, 6)) == 300
    # 4D input as in channels-last ConvNeXt-style blocks.
    assert count_macs(nn.Linear(4, 16), (3, 5, 4)) == 3 * 5 * 4 * 16


def test_norms_affine_factor():
    assert count_macs(nn.BatchNorm2d(4), (4, 5, 5)) == 200
    assert count_macs(nn.BatchNorm2d(4, affine=False), (4, 5, 5)) == 100
    assert count_macs(nn.InstanceNorm2d(4), (4, 5, 5)) == 100  # affine=False by default
    assert count_macs(nn.GroupNorm(2, 4), (4, 5, 5)) == 200
    assert count_macs(nn.LayerNorm(6), (5, 6)) == 60


def test_activations_pooling_upsample():
    for act in (nn.ReLU(), nn.LeakyReLU(0.1), nn.ReLU6(), nn.ELU(), nn.PReLU()):
        assert count_macs(act, (4, 5, 5)) == 100
    assert count_macs(nn.MaxPool2d(2), (4, 8, 8)) == 256  # input elements, not output
    assert count_macs(nn.AvgPool2d(3, 2, 1), (4, 8, 8)) == 256
    assert count_macs(nn.AdaptiveAvgPool2d(1), (4, 8, 8)) == 256
    assert count_macs(nn.Upsample(scale_factor=2), (4, 5, 5)) == 400


class _Uncounted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1, bias=False)
        self.gelu = nn.GELU()
        self.sig = nn.Sigmoid()
        self.up = nn.UpsamplingNearest2d(scale_factor=2)  # subclass of Upsample: not counted
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        y = self.conv(x)
        y = self.sig(self.gelu(y)) + y
        y = F.interpolate(y, scale_factor=2.0)
        y = F.pixel_shuffle(y, 2)  # 2 x 32 x 32
        y = torch.matmul(y, torch.ones(32, 32)) * 2.0
        y = F.relu(y) + F.conv2d(y, torch.ones(2, 2, 1, 1))
        return y


def test_uncounted_ops_are_not_counted():
    assert count_macs(_Uncounted(), (4, 8, 8)) == 4 * 8 * 64  # only the 1x1 conv
    assert count_macs(nn.Sequential(nn.GELU(), nn.Sigmoid(), nn.Identity()), (4, 5, 5)) == 0


def test_subclass_of_counted_type_is_not_counted_and_warns():
    class MyConv(nn.Conv2d):
        pass

    with pytest.warns(UserWarning, match="MyConv"):
        assert count_macs(MyConv(3, 4, 1), (3, 4, 4)) == 0


def test_multihead_attention_out_proj_not_counted():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    model = Attn()
    assert count_macs(model, (5, 8)) == 0  # as mmcv: no hooked module runs
    # all-ops counts the projections and attention matmuls:
    # in_proj 5*8*24, scores 2 heads * 5*5*4, weighted sum same, out_proj 5*8*8.
    assert count_all_ops_macs(model, (5, 8)) == 5 * 8 * 24 + 2 * (2 * 5 * 5 * 4) + 5 * 8 * 8


def test_hrt_window_attention_counts_qkv_but_not_out_proj():
    """Official HRT MHA_: q/k/v_proj are module calls (counted), out_proj is F.linear (not counted)."""
    from srpose.models.backbones._hrt_modules import WindowMHA

    attn = WindowMHA(8, 2, window_size=2)  # 3 windows of 2x2 tokens, 8 channels
    assert count_macs(attn, (1, 3, 4, 8), batched=True) == 3 * (3 * 4 * 8 * 8)
    # all-ops also sees out_proj and the two attention matmuls (2 heads, 4x4 scores, head dim 4).
    assert count_all_ops_macs(attn, (1, 3, 4, 8), batched=True) == (
        4 * (3 * 4 * 8 * 8) + 2 * (3 * 2 * 4 * 4 * 4))


def test_transformer_layer_submodules_counted_without_fast_path():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    # linear1 5*8*16 + linear2 5*16*8 + norm1/norm2 2 * (5*8*2); attention and F.relu: 0.
    assert count_macs(layer, (5, 8)) == 640 + 640 + 160


def test_shared_module_counted_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(x))

    assert count_macs(Twice(), (2, 3, 3)) == 2 * (4 * 9)


def test_all_ops_single_conv_is_twice_macs_without_bias():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_all_ops_flops(conv, (3, 16, 16)) == 2 * count_macs(conv, (3, 16, 16))
    conv_b = nn.Conv2d(3, 8, 3, padding=1)
    assert count_all_ops_flops(conv_b, (3, 16, 16)) == 2 * count_macs(conv, (3, 16, 16))
    assert count_all_ops_macs(conv_b, (3, 16, 16)) == count_macs(conv, (3, 16, 16))
    deconv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False)
    assert count_all_ops_flops(deconv, (4, 5, 5)) == 2 * count_macs(deconv, (4, 5, 5))


def test_input_shape_forms_and_errors():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (1, 3, 16, 16)) == count_macs(conv, (3, 16, 16))
    with pytest.raises(ValueError, match="batch"):
        count_macs(conv, (2, 3, 16, 16), batched=True)
    with pytest.raises(ValueError, match="positive ints"):
        count_macs(conv, (3, 16.0, 16))
    with pytest.raises(ValueError, match="non-empty"):
        count_macs(conv, ())


# complexity_report ---------------------------------------------------------------------

class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.final = nn.Conv2d(4, 2, 1)  # 10 params
        self.aux = nn.Conv2d(4, 2, 3, padding=1)  # 74 params, training only
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)  # 80 params, out_proj 20
        self.unused = nn.Linear(4, 4)  # 20 params, never runs

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = self.attn(t, t, t, need_weights=False)[0]
        x = x + t.transpose(1, 2).reshape(n, c, h, w)
        out = self.final(x)
        if self.training:
            return [self.aux(x), out]
        return out


class _TopDown(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(4), nn.ReLU())
        self.keypoint_head = _Head()

    def forward(self, img):
        return self.keypoint_head(self.backbone(img))


def _all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_complexity_report_toy_topdown():
    model = _TopDown()
    rep = complexity_report(model, (3, 8, 8))
    assert isinstance(rep, Complexity)
    assert rep.params_backbone == 108 + 8
    assert rep.params_head == 10 + 74 + 80 + 20
    # final + attention (incl. out_proj, used functionally); aux and unused excluded.
    assert rep.params_head_eval == 10 + 80
    assert rep.output_shape == (1, 2, 4, 4)
    backbone = 27 * 4 * 16 + 2 * 64 + 64  # conv + affine BN + ReLU
    head = 4 * 2 * 16 + 2 * 16  # final conv with bias; attention not counted
    assert rep.gmacs == pytest.approx((backbone + head) / 1e9)
    attn_all = 16 * 4 * 12 + 2 * 16 * 16 * 4 + 16 * 4 * 4
    assert rep.gmacs_all_ops == pytest.approx((27 * 4 * 16 + 4 * 2 * 16 + attn_all) / 1e9)
    assert rep.params == rep.params_backbone + rep.params_head


def test_hooks_removed_and_modes_restored():
    model = _TopDown()
    model.train()
    model.backbone[1].eval()  # e.g. a frozen BN inside a training model
    before = {name: m.training for name, m in model.named_modules()}
    complexity_report(model, (3, 8, 8))
    count_macs(model, (3, 8, 8))
    count_all_ops_flops(model, (3, 8, 8))
    assert _all_hooks(model) == 0
    assert {name: m.training for name, m in model.named_modules()} == before
    mha = getattr(torch.backends, "mha", None)
    assert mha is None or mha.get_fastpath_enabled()


def test_hooks_removed_when_forward_fails():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 1)
            self.keypoint_head = nn.Conv2d(5, 2, 1)  # channel mismatch

        def forward(self, x):
            return self.keypoint_head(self.backbone(x))

    model = Broken().train()
    with pytest.raises(RuntimeError):
        complexity_report(model, (3, 4, 4))
    assert _all_hooks(model) == 0
    assert model.training and model.backbone.training


def test_complexity_report_needs_backbone_and_head():
    with pytest.raises(TypeError, match="backbone"):
        complexity_report(nn.Sequential(nn.Conv2d(3, 4, 1)), (3, 4, 4))
    no_head = nn.Module()
    no_head.backbone = nn.Conv2d(3, 4, 1)
    with pytest.raises(TypeError, match="keypoint_head"):
        complexity_report(no_head, (3, 4, 4))
