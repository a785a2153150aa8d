"""Training: losses against hand cases, a short run that learns and checkpoints, exact resume, two-process DDP."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import srpose
from srpose.train import (LOW_RES_STAGE_WEIGHT, JointsMSELoss, ShardedEval, lr_at, multi_stage_loss, spawn_train,
                          stage_weights_for, train)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- losses


def test_joints_mse_matches_hand_computation() -> None:
    out = torch.zeros(2, 3, 2, 2)
    tgt = torch.zeros(2, 3, 2, 2)
    tgt[0, 0, 0, 0] = 1.0  # one pixel wrong in joint 0 of sample 0
    tgt[1, 2] = 0.5  # joint 2 of sample 1 off by 0.5 everywhere, but its weight is 0
    w = torch.ones(2, 3, 1)
    w[1, 2] = 0
    loss = JointsMSELoss(use_target_weight=True)(out, tgt, w)
    # joint 0: mean over 2 samples x 4 pixels of squared error = 1/8; joints 1, 2: 0; mean over 3 joints
    assert loss.item() == pytest.approx((1 / 8) / 3)
    unweighted = JointsMSELoss(use_target_weight=False)(out, tgt, w)
    assert unweighted.item() == pytest.approx((1 / 8 + 0.25 * 4 / 8) / 3)


def test_multi_stage_loss_pools_target_and_weights_low_res_stage() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, :2, :2] = 1.0  # top-left quadrant
    low = torch.zeros(1, 1, 2, 2)  # the pooled target is [[1, 0], [0, 0]]
    full = target.clone()
    weight = torch.ones(1, 1, 1)
    weights = stage_weights_for("TopDownSRPoseHead", 2)
    assert weights == [LOW_RES_STAGE_WEIGHT, 1.0] and LOW_RES_STAGE_WEIGHT == 1e-4
    total, parts = multi_stage_loss([low, full], target, weight, weights)
    assert parts[0].item() == pytest.approx(1e-4 * 1 / 4)  # one of 4 low-res pixels is off by 1
    assert parts[1].item() == 0 and total.item() == pytest.approx(parts[0].item())
    # a zero weight removes the joint from both stages
    total0, _ = multi_stage_loss([low, full * 0], target, torch.zeros(1, 1, 1), weights)
    assert total0.item() == 0
    assert stage_weights_for("TopDownSimpleHead", 1) == [1.0]
    with pytest.raises(ValueError, match="stage weights"):
        multi_stage_loss([low, full], target, weight, [1.0])


def test_lr_schedule_follows_mmcv() -> None:
    tc = dict(lr=1e-3, warmup_iters=10, warmup_ratio=0.001, lr_steps=(2, 4), lr_gamma=0.1)
    assert lr_at(tc, 0, 0) == pytest.approx(1e-6)
    assert lr_at(tc, 0, 5) == pytest.approx(1e-3 * (1 - 0.5 * 0.999))
    assert lr_at(tc, 1, 10) == pytest.approx(1e-3)
    assert lr_at(tc, 2, 100) == pytest.approx(1e-4) and lr_at(tc, 4, 100) == pytest.approx(1e-5)


# --------------------------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from srpose.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("train_data"), num_images=8, image_size=(128, 96),
                            people=(1, 2), seed=0)


def _cfg(name: str = "res50_srpose_coco_256x192") -> srpose.PoseConfig:
    """A small ResNet-18 variant of a preset at 64x64, so a step takes a fraction of a second."""
    cfg = srpose.get_config(name).with_input_size(64, 64)
    cfg.model["backbone"].update(depth=18, base_channels=8, stem_channels=8)
    head = cfg.model["keypoint_head"]
    if head["type"] == "TopDownSRPoseHead":
        head.update(in_channels=[64, 32, 16, 8], out_channels=[32, 16, 8, 8])
    else:
        head.update(in_channels=64, num_deconv_filters=(16, 16, 16))
    cfg.data["sigma"] = 2.0
    cfg.train.update(warmup_iters=4, lr_steps=(2,), lr=3e-3)
    return cfg


def _run(cfg: srpose.PoseConfig, data: dict[str, Path], work: Path, **kw) -> srpose.train.TrainResult:
    args = dict(train_ann=data["ann"], train_images=data["images"], work_dir=work, batch_size=4, workers=0,
                progress=False, seed=1)
    args.update(kw)
    return train(cfg, **args)


def test_short_run_lowers_loss_and_checkpoint_loads_strictly(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg()
    calls = []

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        model.eval()  # as the eval layer's TorchBackend does; the trainer must switch back to training
        calls.append(1)
        return {"AP": 0.1 * len(calls)}

    res = _run(cfg, data, tmp_path, epochs=3, eval_fn=eval_fn, eval_every=1, log_every=1)
    first = res.history[0]["loss"]
    assert res.history[-1]["loss"] < first
    assert res.epochs == 3 and len(calls) == 3 and res.best_epoch == 3 and res.best_metric == pytest.approx(0.3)
    assert len(res.history[0]["stage_losses"]) == 5  # SRPose: low-res + 4 stages
    model = srpose.build_model(cfg)
    meta = srpose.load_checkpoint(model, res.latest, strict=True)
    assert meta["epoch"] == 3 and meta["iter"] == res.iters and meta["config"]["name"] == cfg.name
    assert srpose.load_checkpoint(srpose.build_model(cfg), res.best)["epoch"] == 3
    assert (tmp_path / "epoch_1.pth").is_file() and (tmp_path / "best.pth").is_file()
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    it = [x for x in lines if x["mode"] == "train"]
    keys = {"epoch", "iter", "lr", "loss", "stage_losses", "time", "data_time", "data_time_share", "timestamp"}
    assert it and keys <= set(it[0])
    assert [x["epoch"] for x in lines if x["mode"] == "epoch"] == [1, 2, 3]


def test_channels_last_trains_the_same_model_and_saves_the_usual_layout(data: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    cfg = _cfg()
    ref = _run(cfg, data, tmp_path / "nchw", epochs=1, max_iters=3)
    nhwc = _run(cfg, data, tmp_path / "nhwc", epochs=1, max_iters=3, channels_last=True)
    assert nhwc.history[0]["loss"] == pytest.approx(ref.history[0]["loss"], rel=1e-3)  # same maths, other layout
    sd, _ = srpose.read_state_dict(nhwc.latest)
    assert all(v.is_contiguous() for v in sd.values())
    model = srpose.build_model(cfg)
    srpose.load_checkpoint(model, nhwc.latest, strict=True)
    assert srpose.get_config("res18w16_srpose_coco_96x64").train["channels_last"] is True


def test_resume_continues_schedule_exactly(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg("res50_coco_256x192")
    full = _run(cfg, data, tmp_path / "full", epochs=3)
    part = _run(cfg, data, tmp_path / "part", epochs=2, keep_epoch_checkpoints=False)
    assert part.epochs == 2
    resumed = _run(cfg, data, tmp_path / "part", epochs=3, resume=part.latest)
    assert resumed.iters == full.iters and resumed.epochs == 3
    for a, b in zip(full.history, resumed.history):
        assert a["epoch"] == b["epoch"] and a["lr"] == pytest.approx(b["lr"]) and a["iter"] == b["iter"]
    # same data order and augmentation: the resumed epoch is the uninterrupted run's epoch
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-4)
    assert resumed.weights_digest == full.weights_digest


def test_mid_epoch_stop_resumes_at_epoch_start(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg("res50_coco_256x192")
    stopped = _run(cfg, data, tmp_path, epochs=2, max_iters=2)
    assert stopped.iters == 2 and stopped.epochs == 0
    meta = torch.load(stopped.latest, weights_only=True)
    assert meta["meta"]["epoch"] == 0 and meta["trainer"]["partial_epoch_iters"] == 2
    again = _run(cfg, data, tmp_path, epochs=1, resume=stopped.latest)
    assert again.epochs == 1 and again.history[-1]["iter"] == again.iters


def test_bad_settings_fail_clearly(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg()
    with pytest.raises(ValueError, match="amp"):
        _run(cfg, data, tmp_path, epochs=1, amp=True)
    with pytest.raises(ValueError, match="batch_size"):
        _run(cfg, data, tmp_path, epochs=1, batch_size=0)
    with pytest.raises(FileNotFoundError, match="resume"):
        _run(cfg, data, tmp_path, epochs=1, resume=tmp_path / "nope.pth")


# --------------------------------------------------------------------------------------------- distributed


def _toy_predict(model: torch.nn.Module, indices: list[int]) -> list[float]:
    # a deterministic function of the weights and the item index
    s = float(sum(p.detach().double().sum() for p in model.parameters()))
    return [s + i for i in indices]


def _toy_score(results: list[float]) -> dict[str, float]:
    # order-sensitive, so a wrong gather order changes the number
    return {"AP": float(sum(r * (i + 1) for i, r in enumerate(results)) % 1.0), "n": float(len(results))}


def test_two_process_gloo_ranks_agree(data: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg()
    ev = ShardedEval(num_items=5, predict=_toy_predict, score=_toy_score)
    results = spawn_train(2, cfg, train_ann=data["ann"], train_images=data["images"], work_dir=tmp_path,
                          epochs=1, batch_size=2, workers=0, progress=False, seed=1, eval_fn=ev)
    assert [r.rank for r in results] == [0, 1] and all(r.world_size == 2 for r in results)
    assert results[0].weights_digest == results[1].weights_digest
    assert results[0].metrics == results[1].metrics and results[0].metrics["n"] == 5
    # the gathered score equals the single-process score of the final weights
    model = srpose.build_model(cfg)
    srpose.load_checkpoint(model, tmp_path / "best.pth")
    assert results[0].metrics["AP"] == pytest.approx(_toy_score(_toy_predict(model, list(range(5))))["AP"])
    assert (tmp_path / "latest.pth").is_file() and results[0].log_file and results[1].log_file is None


# --------------------------------------------------------------------------------------------- command layer


def test_train_and_generate_commands(tmp_path: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import srpose.eval.train_hooks
    from srpose.cli import generate as gen_cli
    from srpose.cli import train as train_cli

    gp = argparse.ArgumentParser()
    gen_cli.add_arguments(gp)
    assert gen_cli.run(gp.parse_args(["--out", str(tmp_path / "d"), "--num-images", "3", "--seed", "2",
                                      "--image-size", "128x96"])) == 0
    tp = argparse.ArgumentParser()
    train_cli.add_arguments(tp)
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps(_cfg("res50_coco_256x192").to_dict()))
    argv = [str(cfg_file), "--train-ann", str(tmp_path / "d" / "annotations.json"),
            "--train-images", str(tmp_path / "d" / "images"), "--work-dir", str(tmp_path / "w"),
            "--input-size", "64x64", "--batch", "2", "--max-iters", "1", "--workers", "0", "--quiet"]
    assert train_cli.run(tp.parse_args(argv)) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["iters"] == 1 and summary["latest"]
    assert (tmp_path / "w" / "latest.pth").is_file()
    # with --val-ann/--val-images the command builds the eval layer's hook itself
    seen = []

    def hook(cfg: srpose.PoseConfig, a: argparse.Namespace):
        seen.append((cfg.image_size, a.val_ann))
        return lambda model: {"AP": 0.5}

    monkeypatch.setattr(srpose.eval.train_hooks, "eval_fn_from_args", hook)
    args = tp.parse_args(argv + ["--val-ann", "a.json", "--val-images", "imgs", "--work-dir", str(tmp_path / "v")])
    assert train_cli.run(args) == 0
    assert seen == [((64, 64), "a.json")]
    with pytest.raises(ValueError, match="give both --val-ann and --val-images"):
        train_cli.run(tp.parse_args(argv + ["--val-ann", "a.json"]))
    with pytest.raises(ValueError, match="--eval-every 1 needs --val-ann and --val-images"):
        train_cli.run(tp.parse_args(argv + ["--eval-every", "1"]))
    with pytest.raises(SystemExit):
        tp.parse_args(argv + ["--input-size", "65x64"])
    # the console command reaches the same code
    assert srpose.cli.main(["generate", "--out", str(tmp_path / "e"), "--num-images", "1", "--image-size",
                            "64x64"]) == 0
    assert (tmp_path / "e" / "annotations.json").is_file()


def test_epoch_line_reports_loss_speed_and_best_metric() -> None:
    from srpose.train.trainer import _epoch_line

    s = dict(epoch=3, loss=0.00512, lr=3e-4, seconds=61.2, images_per_s=65.3, data_time_share=0.031,
             metrics={"AP": 0.7123})
    line = _epoch_line(s, 6, "AP", best_epoch=3)
    assert line.startswith("epoch 3/6  loss 0.00512") and "65.3 img/s" in line and "AP 0.7123 (best)" in line
    assert "(best)" not in _epoch_line(s, 6, "AP", best_epoch=2)
    assert "AP" not in _epoch_line({**s, "metrics": {}}, 6, "AP", best_epoch=None).replace("lr", "")
