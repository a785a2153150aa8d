"""Tests for the TransPose-R backbone (srpose/models/backbones/transpose.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from srpose.models.backbones.transpose import TransPoseR, convert_transpose_checkpoint, sine_position_embedding

# A tiny configuration: 64 x 32 (H x W) input -> 8 x 4 tokens.
TINY = dict(layers=(1, 1), d_model=32, dim_feedforward=64, nhead=4, num_encoder_layers=2, image_size=(32, 64))


def _tiny(**kw) -> TransPoseR:
    torch.manual_seed(0)
    return TransPoseR(**{**TINY, **kw}).eval()


def _reference_sine(h: int, w: int, d_model: int) -> torch.Tensor:
    """The original TransPose `_make_sine_position_embedding` formula (cumsum form)."""
    area = torch.ones(1, h, w)
    y = area.cumsum(1)
    x = area.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    half = d_model // 2
    dim_t = 10000 ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
    return pos.flatten(2).permute(2, 0, 1)


def _reference_encoder(model: TransPoseR, tokens: torch.Tensor) -> torch.Tensor:
    """TransPose's sequence-first encoder (nn.MultiheadAttention, forward_post) with ``model``'s weights."""
    x = tokens.transpose(0, 1)  # L x N x E
    pos = model.pos_embedding
    for layer in model.global_encoder.layers:
        mha = nn.MultiheadAttention(model.d_model, layer.self_attn.num_heads).eval()
        mha.load_state_dict(layer.self_attn.state_dict())
        q = x + pos
        x = layer.norm1(x + mha(q, q, value=x)[0])
        x = layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))
    return x.transpose(0, 1)


def test_sine_embedding_matches_original_formula():
    got = sine_position_embedding(32, 24, 256)
    assert got.shape == (768, 1, 256)
    torch.testing.assert_close(got, _reference_sine(32, 24, 256), rtol=0, atol=1e-6)


def test_official_names_shapes_and_param_counts():
    model = TransPoseR()
    sd = model.state_dict()
    # Original TransPose-R-A4 state dict has 202 entries, 8 of which belong to the deconv head.
    assert len(sd) == 194
    expected = {
        "pos_embedding": (768, 1, 256),
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_var": (64,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.2.conv3.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.1.bias": (512,),
        "layer2.3.bn3.weight": (512,),
        "reduce.weight": (256, 512, 1, 1),
        "global_encoder.layers.0.self_attn.in_proj_weight": (768, 256),
        "global_encoder.layers.0.self_attn.in_proj_bias": (768,),
        "global_encoder.layers.3.self_attn.out_proj.weight": (256, 256),
        "global_encoder.layers.3.self_attn.out_proj.bias": (256,),
        "global_encoder.layers.3.linear1.weight": (1024, 256),
        "global_encoder.layers.3.linear2.bias": (256,),
        "global_encoder.layers.3.norm2.weight": (256,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer3.0.conv1.weight" not in sd and "global_encoder.layers.4.linear1.weight" not in sd
    # SRPose paper: TransPose-R-A4 backbone 4.93M parameters (the fixed sine embedding included).
    assert sum(p.numel() for p in model.parameters()) == 4_931_648
    assert not model.pos_embedding.requires_grad
    torch.testing.assert_close(model.pos_embedding.data, _reference_sine(32, 24, 256), rtol=0, atol=1e-6)


def test_encoder_matches_multihead_attention_reference():
    model = _tiny(out_indices=(1, 2))
    with torch.no_grad():
        c3, out = model(torch.randn(2, 3, 64, 32))
        tokens = model.reduce(c3).flatten(2).transpose(1, 2)
        ref = _reference_encoder(model, tokens).transpose(1, 2).reshape(out.shape)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_indices, shapes", [
    ((2,), [(2, 32, 8, 4)]),
    (2, [(2, 32, 8, 4)]),
    ((0,), [(2, 256, 16, 8)]),
    ((0, 2), [(2, 256, 16, 8), (2, 32, 8, 4)]),
    ((2, 1, 0), [(2, 256, 16, 8), (2, 512, 8, 4), (2, 32, 8, 4)]),
])
def test_out_indices(out_indices, shapes):
    model = _tiny(out_indices=out_indices)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
    if len(shapes) == 1:
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == shapes[0]
    else:
        assert isinstance(out, list) and [tuple(o.shape) for o in out] == shapes


def test_wrong_input_size_is_rejected():
    model = _tiny()
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(1, 3, 64, 40))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        model(torch.randn(1, 1, 64, 32))


@pytest.mark.parametrize("kw", [
    dict(out_indices=(3,)), dict(out_indices=()), dict(out_indices=(2, 2)), dict(pos_embedding="cosine"),
    dict(image_size=(30, 64)), dict(layers=(3,)), dict(nhead=5),
])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        TransPoseR(**{**TINY, **kw})


def test_position_embedding_variants_and_training_step():
    learn = _tiny(pos_embedding="learnable")
    assert learn.pos_embedding.requires_grad and learn.pos_embedding.shape == (32, 1, 32)
    none = _tiny(pos_embedding="none")
    assert none.pos_embedding is None and "pos_embedding" not in none.state_dict()
    model = _tiny().train()
    model(torch.randn(2, 3, 64, 32)).sum().backward()
    assert model.global_encoder.layers[0].self_attn.in_proj_weight.grad is not None
    assert model.pos_embedding.grad is None


def test_init_weights_runs():
    model = _tiny()
    model.init_weights()
    assert float(model.conv1.weight.detach().std()) < 0.01
    assert torch.all(model.bn1.weight == 1)


def test_convert_transpose_checkpoint():
    orig = {k: torch.zeros(1) for k in [
        "pos_embedding", "conv1.weight", "layer2.3.bn3.running_mean", "reduce.weight",
        "global_encoder.layers.0.self_attn.in_proj_weight", "deconv_layers.0.weight", "deconv_layers.1.weight",
        "deconv_layers.1.num_batches_tracked", "final_layer.weight", "final_layer.bias"]}
    conv = convert_transpose_checkpoint(orig)
    assert sorted(conv) == sorted([
        "backbone.pos_embedding", "backbone.conv1.weight", "backbone.layer2.3.bn3.running_mean",
        "backbone.reduce.weight", "backbone.global_encoder.layers.0.self_attn.in_proj_weight",
        "keypoint_head.deconv_layers.0.weight", "keypoint_head.deconv_layers.1.weight",
        "keypoint_head.deconv_layers.1.num_batches_tracked", "keypoint_head.final_layer.weight",
        "keypoint_head.final_layer.bias"])
    assert convert_transpose_checkpoint(conv) == conv  # idempotent
    assert convert_transpose_checkpoint({"module.final_layer.bias": orig["final_layer.bias"]}) == {
        "keypoint_head.final_layer.bias": orig["final_layer.bias"]}
    with pytest.raises(ValueError, match="already produced"):
        convert_transpose_checkpoint({"conv1.weight": orig["conv1.weight"],
                                      "backbone.conv1.weight": orig["conv1.weight"]})
    # A converted full state dict loads strictly into the backbone.
    model = TransPoseR()
    sd = {k[len("backbone."):]: v for k, v in convert_transpose_checkpoint(model.state_dict()).items()}
    model.load_state_dict(sd, strict=True)


def test_mmcv_macs_count_only_encoder_linears():
    from srpose.complexity import count_macs

    model = TransPoseR()
    # mmcv convention: ResNet-S + reduce convs/BN/ReLU/pool, plus linear1/linear2 and LayerNorms of the encoder;
    # the attention projections and matmuls count zero, as with nn.MultiheadAttention.
    assert count_macs(model, (3, 256, 192)) == 3_515_056_128


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_dynamic_batch_matches_torch():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _tiny(out_indices=(0, 2))
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 64, 32),), buf, opset_version=17, dynamo=False,
                      input_names=["img"], output_names=["c2", "enc"],
                      dynamic_axes={"img": {0: "n"}, "c2": {0: "n"}, "enc": {0: "n"}})
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (1, 2):
        x = torch.randn(n, 3, 64, 32)
        with torch.no_grad():
            ref = [t.numpy() for t in model(x)]
        got = sess.run(None, {"img": x.numpy()})
        for r, g in zip(ref, got):
            assert g.shape == r.shape
            assert float(np.abs(g - r).max()) < 1e-4
