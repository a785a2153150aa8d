"""Every preset: builds, runs eval and training forwards, round-trips checkpoints, matches the paper's sizes."""
from __future__ import annotations

import functools

import pytest
import torch

import srpose
from srpose import CheckpointError, build_model, get_config, list_models, load_checkpoint, save_checkpoint

from srpose.models.bottom_up import is_bottom_up

# top-down presets here; the bottom-up ones have their own tests (tests/test_bottom_up_*.py)
PRESETS = [n for n in list_models() if not is_bottom_up(get_config(n))]
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
    assert tuple(y.shape) == (2, 17, hh, hw)
    assert torch.isfinite(y).all()
    full_res = cfg.data["decoder"] == "srpose"
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
