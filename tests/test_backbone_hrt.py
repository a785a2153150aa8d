"""Tests for the HRFormer backbone (``HRT``): structure, official names/counts, ISA padding, ONNX export."""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srpose.models.backbones._hrt_modules import InterlacedPoolAttention
from srpose.models.backbones.hrt import HRT


def _stage(n_branches: int, channels, heads, num_modules: int, num_blocks: int, **kw) -> dict:
    return dict(num_modules=num_modules, num_branches=n_branches, block="TRANSFORMER_BLOCK",
                num_blocks=(num_blocks,) * n_branches, num_channels=tuple(channels[:n_branches]),
                num_heads=list(heads[:n_branches]), num_mlp_ratios=[4] * n_branches,
                num_window_sizes=[7] * n_branches, **kw)


def hrt_extra(channels=(32, 64, 128, 256), heads=(1, 2, 4, 8), modules=(1, 4, 2), blocks=2,
              multiscale_output=False, drop_path_rate=0.1) -> dict:
    """``extra`` of configs/top_down/hrt/coco/hrt_small_coco_256x192.py (defaults) or a shrunken variant."""
    return dict(
        drop_path_rate=drop_path_rate,
        stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(2,), num_channels=(64,),
                    num_heads=[2], num_mlp_ratios=[4]),
        stage2=_stage(2, channels, heads, modules[0], blocks),
        stage3=_stage(3, channels, heads, modules[1], blocks),
        stage4=_stage(4, channels, heads, modules[2], blocks, multiscale_output=multiscale_output),
    )


def tiny_extra(multiscale_output: bool = True) -> dict:
    """Same topology as HRT-small (4 branches, 2 stage-4 modules) with fewer blocks and channels."""
    return hrt_extra(channels=(8, 16, 32, 64), modules=(1, 1, 2), blocks=1, multiscale_output=multiscale_output)


pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def small_single() -> HRT:
    torch.manual_seed(0)
    return HRT(hrt_extra(), norm_cfg=dict(type="SyncBN", requires_grad=True)).eval()


@pytest.fixture(scope="module")
def small_multi() -> HRT:
    torch.manual_seed(0)
    return HRT(hrt_extra(multiscale_output=True), norm_cfg=dict(type="SyncBN", requires_grad=True)).eval()


def test_param_counts_match_official_code(small_single: HRT, small_multi: HRT) -> None:
    # Counts of the official SRPose HRT built from the same configs (verified against the official module).
    assert _n_params(small_single) == 7_746_218
    assert _n_params(small_multi) == 7_891_050
    base = dict(channels=(78, 156, 312, 624), heads=(2, 4, 8, 16), drop_path_rate=0.2)
    assert _n_params(HRT(hrt_extra(**base))) == 43_210_434


def test_official_names_and_shapes(small_single: HRT, small_multi: HRT) -> None:
    sd = small_single.state_dict()
    assert len(sd) == 2074 and len(small_multi.state_dict()) == 2212
    expected = {
        "conv1.weight": (64, 3, 3, 3), "bn1.running_var": (64,), "bn2.num_batches_tracked": (),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.1.bn3.weight": (256,),
        "transition1.0.0.weight": (32, 256, 3, 3), "transition1.1.0.0.weight": (64, 256, 3, 3),
        "transition2.2.0.0.weight": (128, 64, 3, 3), "transition3.3.0.1.bias": (256,),
        "stage2.0.branches.0.0.attn.attn.q_proj.weight": (32, 32),
        "stage2.0.branches.1.1.attn.attn.out_proj.bias": (64,),
        "stage2.0.branches.0.0.attn.attn.relative_position_bias_table": (169, 1),
        "stage4.1.branches.3.1.attn.attn.relative_position_bias_table": (169, 8),
        "stage4.1.branches.3.1.attn.attn.relative_position_index": (49, 49),
        "stage3.3.branches.2.1.norm1.weight": (128,), "stage3.3.branches.2.1.norm2.bias": (128,),
        "stage3.0.branches.1.0.mlp.fc1.weight": (256, 64, 1, 1),
        "stage3.0.branches.1.0.mlp.dw3x3.weight": (256, 1, 3, 3),
        "stage3.0.branches.1.0.mlp.dw3x3.bias": (256,), "stage3.0.branches.1.0.mlp.norm3.running_mean": (64,),
        "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1), "stage2.0.fuse_layers.1.0.0.0.weight": (32, 1, 3, 3),
        "stage3.0.fuse_layers.2.0.0.3.weight": (32,), "stage3.0.fuse_layers.2.0.1.2.weight": (128, 32, 1, 1),
        "stage4.1.fuse_layers.0.3.1.weight": (32,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("stage4.1.fuse_layers.1.") for k in sd)  # multiscale_output=False
    assert "stage4.1.fuse_layers.3.2.0.3.weight" in small_multi.state_dict()
    assert not any("drop_path" in k or "downsample" in k and "layer1" not in k for k in sd)


def test_relative_position_bias_is_unused() -> None:
    torch.manual_seed(0)
    model = HRT(tiny_extra()).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        before = model(x)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.add_(10.0)
        after = model(x)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def _reference_window_attention(mod: InterlacedPoolAttention, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Window attention written out window by window, with centred zero padding, for comparison."""
    mha, ws, C = mod.attn, mod.window_size, mod.dim
    B = x.shape[0]
    pad_h, pad_w = math.ceil(H / ws) * ws - H, math.ceil(W / ws) * ws - W
    grid = F.pad(x.reshape(B, H, W, C), (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    out = torch.zeros_like(grid)
    nh, hd = mha.num_heads, C // mha.num_heads
    for b in range(B):
        for r in range(0, grid.shape[1], ws):
            for c in range(0, grid.shape[2], ws):
                t = grid[b, r:r + ws, c:c + ws].reshape(ws * ws, C)
                q = mha.q_proj(t).reshape(-1, nh, hd).transpose(0, 1) * hd ** -0.5
                k = mha.k_proj(t).reshape(-1, nh, hd).transpose(0, 1)
                v = mha.v_proj(t).reshape(-1, nh, hd).transpose(0, 1)
                o = torch.softmax(q @ k.transpose(1, 2), -1) @ v
                out[b, r:r + ws, c:c + ws] = mha.out_proj(o.transpose(0, 1).reshape(-1, C)).reshape(ws, ws, C)
    out = out[:, pad_h // 2:pad_h // 2 + H, pad_w // 2:pad_w // 2 + W]
    return out.reshape(B, H * W, C)


@pytest.mark.parametrize("hw", [(7, 14), (9, 10), (3, 2)])
def test_window_attention_with_padding_matches_reference(hw) -> None:
    torch.manual_seed(0)
    H, W = hw
    mod = InterlacedPoolAttention(16, num_heads=2, window_size=7).eval()
    x = torch.randn(2, H * W, 16)
    with torch.no_grad():
        torch.testing.assert_close(mod(x, H, W), _reference_window_attention(mod, x, H, W), atol=1e-5, rtol=1e-5)


def test_output_shapes() -> None:
    torch.manual_seed(0)
    multi, single = HRT(tiny_extra(True)).eval(), HRT(tiny_extra(False)).eval()
    with torch.no_grad():
        out = multi(torch.randn(1, 3, 256, 192))
        assert [tuple(t.shape) for t in out] == [(1, 8, 64, 48), (1, 16, 32, 24), (1, 32, 16, 12), (1, 64, 8, 6)]
        out = multi(torch.randn(2, 3, 64, 48))  # 4x3 and 2x2 maps: windows padded, fuse needs a second resize
        assert [tuple(t.shape) for t in out] == [(2, 8, 16, 12), (2, 16, 8, 6), (2, 32, 4, 3), (2, 64, 2, 2)]
        out = single(torch.randn(2, 3, 64, 48))
        assert [tuple(t.shape) for t in out] == [(2, 8, 16, 12)]


def test_small_forward_64x48(small_single: HRT, small_multi: HRT) -> None:
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        single, multi = small_single(x), small_multi(x)
    assert [tuple(t.shape) for t in single] == [(1, 32, 16, 12)]
    assert [tuple(t.shape) for t in multi] == [(1, 32, 16, 12), (1, 64, 8, 6), (1, 128, 4, 3), (1, 256, 2, 2)]
    assert all(torch.isfinite(t).all() for t in multi)


def test_eval_forward_is_deterministic_and_batch_independent() -> None:
    torch.manual_seed(0)
    extra = tiny_extra()
    extra["drop_path_rate"] = 0.5
    model = HRT(extra).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        a, b, one = model(x), model(x), model(x[1:])
    for ta, tb, t1 in zip(a, b, one):
        assert torch.equal(ta, tb)
        torch.testing.assert_close(ta[1:], t1, atol=1e-5, rtol=1e-5)


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    extra = tiny_extra(False)
    extra["drop_path_rate"] = 0.9
    model = HRT(extra)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    with torch.no_grad():
        a, b = model(x)[0], model(x)[0]
    assert not torch.equal(a, b)
    blocks = [m for m in model.modules() if type(m).__name__ == "GeneralTransformerBlock"]
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)  # rate 0 for the first block, as in the official code
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.9)


def test_norm_eval_and_requires_grad() -> None:
    model = HRT(tiny_extra(), norm_cfg=dict(type="BN", requires_grad=False), norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert model.conv1.training


def test_init_weights_zero_init_residual() -> None:
    model = HRT(tiny_extra(), zero_init_residual=True)
    model.init_weights()
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0
    assert float(model.conv1.weight.detach().std()) < 0.01


def test_bad_configs_raise_clear_errors() -> None:
    extra = tiny_extra()
    bad = copy.deepcopy(extra)
    bad["stage2"]["block"] = "BOTTLENECK"
    with pytest.raises(ValueError, match="TRANSFORMER_BLOCK"):
        HRT(bad)
    bad = copy.deepcopy(extra)
    del bad["stage3"]["num_window_sizes"]
    with pytest.raises(ValueError, match="num_window_sizes"):
        HRT(bad)
    bad = copy.deepcopy(extra)
    bad["stage3"]["num_heads"] = [1, 2]
    with pytest.raises(ValueError, match="num_heads"):
        HRT(bad)
    with pytest.raises(ValueError, match="GN"):
        HRT(extra, norm_cfg=dict(type="GN", num_groups=2))


def test_onnx_export_dynamic_batch_matches_pytorch() -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = HRT(tiny_extra(True)).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    names = [f"out{i}" for i in range(4)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 48),), buf, opset_version=17, dynamo=False,
                          input_names=["img"], output_names=names,
                          dynamic_axes={"img": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    proto = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in proto.graph.node}
    assert "LayerNormalization" in ops and "Pad" in ops
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        x = torch.randn(batch, 3, 64, 48)
        with torch.no_grad():
            ref = model(x)
        got = sess.run(None, {"img": x.numpy()})
        for r, g in zip(ref, got):
            assert g.shape == tuple(r.shape)
            assert np.abs(g - r.numpy()).max() < 1e-4
