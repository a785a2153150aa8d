"""TensorRT layer for bottom-up exports on the fake ``trt``: dynamic H/W optimisation profile from the card's
``hw_profile``, per-call input shapes, every output of multi-output (decoded) engines, bounded CUDA graphs."""
from __future__ import annotations

import numpy as np
import pytest
from _fake_trt import bottom_up_card, fake_outputs, make_dynamic_onnx

from srpose.engines import tensorrt as trt_layer
from srpose.engines.tensorrt import BuildOptions

FLAT_HW = {"batch_min": 1, "batch_opt": 1, "batch_max": 2, "height_min": 64, "height_opt": 64, "height_max": 128,
           "width_min": 64, "width_opt": 128, "width_max": 192}


def test_build_profile_from_the_cards_hw_profile(tmp_path, fake):
    state, _ = fake
    onnx_path = make_dynamic_onnx(tmp_path / "bu.onnx", card=True)
    card = trt_layer.build_engine(onnx_path, tmp_path / "bu.engine")
    assert state.profiles == [{"input": ((1, 3, 64, 64), (1, 3, 64, 128), (2, 3, 128, 192))}]
    assert card.engine["profile"] == {"input": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 128],
                                      "max": [2, 3, 128, 192]}
    assert card.task == "bottom-up" and card.output_kind == "bottomup_candidates"
    state.profiles.clear()
    trt_layer.build_engine(onnx_path, tmp_path / "bu2.engine", BuildOptions(batch=(1, 2, 4)))
    assert state.profiles == [{"input": ((1, 3, 64, 64), (2, 3, 64, 128), (4, 3, 128, 192))}]


def test_card_less_dynamic_hw_uses_flat_profile_keys(tmp_path, fake):
    state, _ = fake
    card = trt_layer.build_engine(make_dynamic_onnx(tmp_path / "bu.onnx", metadata=FLAT_HW), tmp_path / "bu.engine")
    assert card.engine["onnx"]["card"] == "derived" and card.task == "bottom-up"
    assert card.hw_profile == ((64, 64), (64, 128), (128, 192)) and card.batch == (1, 1, 2)
    assert state.profiles == [{"input": ((1, 3, 64, 64), (1, 3, 64, 128), (2, 3, 128, 192))}]


def test_dynamic_hw_without_profile_is_refused(tmp_path, fake):
    meta = {k: v for k, v in FLAT_HW.items() if not k.startswith(("height", "width"))}
    with pytest.raises(ValueError, match="dynamic height/width.*--shape-profile"):
        trt_layer.build_engine(make_dynamic_onnx(tmp_path / "bu.onnx", metadata=meta), tmp_path / "bu.engine")
    with pytest.raises(ValueError, match="dynamic height but its card has no hw_profile"):
        trt_layer.build_engine(make_dynamic_onnx(tmp_path / "c.onnx", card=bottom_up_card(hw_profile=None)),
                               tmp_path / "c.engine")
    bad = make_dynamic_onnx(tmp_path / "bad.onnx", metadata={**FLAT_HW, "height_min": 256})
    with pytest.raises(ValueError, match="min <= opt <= max"):
        trt_layer.build_engine(bad, tmp_path / "bad.engine")
    assert not list(tmp_path.glob("*.engine*"))


def _ref(x):
    n = x.shape[0]
    return fake_outputs(x, {"heatmaps": x.shape, "candidates": (n, 3, 1, 1)})


def test_backend_dynamic_hw_all_outputs_and_bounded_graphs(tmp_path, fake):
    state, _ = fake
    trt_layer.build_engine(make_dynamic_onnx(tmp_path / "bu.onnx", card=True), tmp_path / "bu.engine")
    be = trt_layer.TensorRTBackend(tmp_path / "bu.engine", cuda_graph=True, slots=1)  # one context: one graph at most
    rng = np.random.default_rng(0)
    shapes = ((1, 3, 64, 128), (2, 3, 128, 64), (1, 3, 64, 128), (1, 3, 96, 96), (1, 3, 96, 96), (1, 3, 96, 96))
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        out = be.infer(x)
        assert sorted(out) == ["candidates", "heatmaps"]
        for name, ref in _ref(x).items():
            np.testing.assert_allclose(out[name], ref, rtol=1e-5, atol=1e-5)
        assert len(state.live_graphs) <= 1
    # images of changing size are never captured; a repeated size is captured once and replayed
    assert state.captures == 1 and state.replays == 2 and state.undefined_replays == 0
    assert be.output_kind == "bottomup_candidates" and be.flip_in_graph and be.decoded and be.dynamic_hw
    with pytest.raises(ValueError, match="H in 64..128 and W in 64..192"):
        be.infer(np.ones((1, 3, 64, 256), np.float32))
    with pytest.raises(ValueError, match="outside the engine's profile 1..2"):
        be.infer(np.ones((3, 3, 64, 64), np.float32))
    be.close()
