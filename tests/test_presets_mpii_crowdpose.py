"""The paper's MPII and CrowdPose presets (srpose/presets/mpii_crowdpose.py): their configs against mmpose 0.x's
and the COCO SRPose recipe, the full configs through the evaluator (oracle, `srpose eval NAME`), and every preset at
reduced width (tests/_dataset_presets.py) through build, checkpoints, export, evaluation and parity on the shared
samples (PCKh on MPII, AP on CrowdPose), training and the INT8 search. Their complexity is in test_paper_table.py,
serving through Triton in test_presets_serving.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _dataset_presets import (PRESETS, PRIMARY, SMALL, mean_pose_model, sample_dataset, sample_sets, self_labelled,
                              small_preset)
from conftest import SHARED_DATA, shared_path

from srpose import get_config, list_models, load_checkpoint, save_checkpoint
from srpose.cli import main
from srpose.keypoints import dataset_meta
from srpose.presets import PAPER_TABLE_DATASETS
from srpose.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = list(PRESETS)
#: mmpose 0.x's test_cfg of the baselines (and of the COCO SRPose configs)
MMPOSE_TEST_CFG = dict(flip_test=True, post_process="default", shift_heatmap=True, modulate_kernel=11)
#: what mmpose 0.x's data_cfg and train pipeline say per dataset (configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/
#: {mpii,crowdpose}/{res50,hrnet_w32}_*.py): input (w, h), boxes, half-body augmentation, samples per GPU
MMPOSE_DATA = {
    "mpii": dict(image_size=[256, 256], use_gt_bbox=True, half_body=None, batch=64),
    "crowdpose": dict(image_size=[192, 256], use_gt_bbox=False, half_body=(6, 0.3), batch=64, oks_thr=0.9,
                      vis_thr=0.2, det_bbox_thr=0.0, soft_nms=False),
}


# ------------------------------------------------------------------------------------------ the configs
def test_every_row_of_the_papers_tables_is_a_listed_preset(capsys: pytest.CaptureFixture) -> None:
    assert set(PAPER_TABLE_DATASETS) == set(PRESETS)
    assert set(list_models("*_mpii_*")) == {n for n, (d, _) in PRESETS.items() if d == "mpii"}
    assert set(list_models("*_crowdpose_*")) == {n for n, (d, _) in PRESETS.items() if d == "crowdpose"}
    for dataset in ("mpii", "crowdpose"):
        assert main(["list", dataset]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert sorted(line.split()[0] for line in lines) == sorted(n for n, (d, _) in PRESETS.items() if d == dataset)
        joints = len(dataset_meta(dataset)["joints"])
        assert all(line.split()[1:3] == [dataset, f"({joints})"] for line in lines), lines
    assert {v[:2] for v in PAPER_TABLE_DATASETS.values()} == {("mpii", "PCKh@0.5"), ("crowdpose", "AP")}


@pytest.mark.parametrize("name", NAMES)
def test_config_follows_mmpose(name: str) -> None:
    """Dataset, joints, flip pairs, sizes, sigma, decoder, test settings, boxes and training recipe."""
    dataset, _ = PRESETS[name]
    cfg, ref = get_config(name), MMPOSE_DATA[dataset]
    srpose = "_srpose_" in name
    meta = dataset_meta(dataset)
    d = cfg.data
    assert d["dataset"] == dataset and cfg.num_joints == len(meta["joints"]) == {"mpii": 16, "crowdpose": 14}[dataset]
    assert cfg.flip_pairs == [tuple(p) for p in meta["flip_pairs"]]
    assert d["image_size"] == ref["image_size"]
    w, h = ref["image_size"]
    assert d["heatmap_size"] == ([w, h] if srpose else [w // 4, h // 4])
    assert d["sigma"] == (8.0 if srpose else 2.0) and d["decoder"] == ("srpose" if srpose else "simple")
    assert task_for(cfg).codec.name == d["decoder"]
    assert cfg.model["type"] == ("TopDownHigher" if srpose else "TopDown") and cfg.test_cfg == MMPOSE_TEST_CFG
    assert d["use_gt_bbox"] is ref["use_gt_bbox"]
    assert all(d[k] == ref[k] for k in ("oks_thr", "vis_thr", "det_bbox_thr", "soft_nms") if k in ref)
    t = cfg.train
    if ref["half_body"] is None:
        assert t["prob_half_body"] == 0.0
    else:
        assert (t["num_joints_half_body"], t["prob_half_body"]) == ref["half_body"]
    assert (t["optimizer"], t["lr"], t["warmup_iters"], tuple(t["lr_steps"]), t["epochs"]) == (
        "Adam", 5e-4, 500, (170, 200), 210)
    assert (t["rot_factor"], t["scale_factor"], t["flip_prob"]) == (40, 0.5, 0.5)
    assert t["batch_size"] == (32 if srpose else ref["batch"])  # the COCO SRPose configs: 32 per GPU
    assert cfg.name == name and cfg.source == "preset"


@pytest.mark.parametrize("name", NAMES)
def test_model_is_the_coco_one_with_the_datasets_joints(name: str) -> None:
    """mmpose's MPII / CrowdPose baselines differ from its COCO ones only in the output channels; the SRPose presets
    are the official COCO SRPose model with the dataset's joints."""
    dataset, coco = PRESETS[name]
    model, want = get_config(name).model, get_config(coco).model
    key = "num_joints" if "_srpose_" in name else "out_channels"
    assert want["keypoint_head"][key] == 17
    want["keypoint_head"][key] = len(dataset_meta(dataset)["joints"])
    assert json.loads(json.dumps(model)) == json.loads(json.dumps(want))


def test_configs_round_trip_as_json(tmp_path: Path) -> None:
    from srpose.config import PoseConfig

    for name in NAMES:
        cfg = get_config(name)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg.to_dict()))
        again = get_config(str(path))
        assert again.to_dict() == PoseConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict()
        assert again.data["dataset"] == cfg.data["dataset"] and again.flip_pairs == cfg.flip_pairs


@pytest.mark.parametrize("name", NAMES)
def test_srpose_eval_of_the_preset_name_with_the_oracle(name: str, tmp_path: Path) -> None:
    """`srpose eval NAME --backend oracle` on the sample: the full preset config through the dataset, its codec at
    the preset's sizes, flip test and protocol scores (near) perfectly."""
    dataset, _ = PRESETS[name]
    d = shared_path("data", dataset)
    out = tmp_path / "r.json"
    argv = ["eval", name, "--backend", "oracle", "--ann", str(d / f"test_{dataset}.json"), "--images", str(d),
            "--json", str(out), "--quiet", "--workers", "0"]
    assert main(argv + (["--gt-bbox"] if dataset == "crowdpose" else [])) == 0
    res = json.loads(out.read_text())
    assert res["model"] == name and res["flip"] is True and res["num_persons"] == len(
        sample_dataset(task_for(get_config(name)), SHARED_DATA, det=False))
    assert res["metrics"][PRIMARY[dataset]] >= 0.99, res["metrics"]


# ------------------------------------------------------------------------------------------ reduced width
_SMALL: dict[str, dict[str, Any]] = {}


def _small(name: str, tmp: Path) -> dict[str, Any]:
    """The reduced preset, its task, sample dataset and mean-pose model, exported once per session."""
    from srpose.export.onnx_export import export_onnx

    if name not in _SMALL:
        cfg = small_preset(name)
        task = task_for(cfg)
        ds = sample_dataset(task, shared_path("data"))
        model = mean_pose_model(cfg, task, ds)
        onnx = export_onnx(model, cfg, tmp / f"{cfg.name}.onnx", batch=(1, 4, 8))
        _SMALL[name] = dict(cfg=cfg, task=task, ds=ds, model=model, onnx=onnx)
    return _SMALL[name]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    shared_path("data")
    tmp = tmp_path_factory.mktemp("dataset_presets")
    return lambda name: _small(name, tmp)


@pytest.mark.parametrize("name", NAMES)
def test_reduced_preset_builds_trains_forward_and_round_trips(name: str, tmp_path: Path) -> None:
    from srpose import build_model

    cfg = small_preset(name)
    k, (hw, hh) = cfg.num_joints, cfg.heatmap_size
    torch.manual_seed(0)
    model = build_model(cfg, init=False)
    x = torch.randn(2, 3, SMALL[1], SMALL[0])
    with torch.no_grad():
        y = model.eval()(x)
    assert tuple(y.shape) == (2, k, hh, hw) and torch.isfinite(y).all()
    outs = model.train()(x)
    head = cfg.model["keypoint_head"]
    assert len(outs) == (1 + sum(head["supervises"]) if "_srpose_" in name else 1)
    assert all(o.shape[1] == k for o in outs) and tuple(outs[-1].shape[2:]) == (hh, hw)
    save_checkpoint(model, tmp_path / "m.pth")
    again = build_model(cfg, init=True)
    load_checkpoint(again, tmp_path / "m.pth", strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_export_eval_and_parity_on_the_sample(name: str, exports) -> None:
    """The exported graph carries the dataset (card and config) and passes TensorRT's ONNX parser rules; ONNX
    Runtime scores the sample exactly as PyTorch (PCKh on MPII; AP on CrowdPose with GT boxes and with detections)
    and the metric is above 0."""
    from srpose.card import read_card
    from srpose.engines.tensorrt.onnx_check import check_onnx_for_tensorrt
    from srpose.eval.parity import ParityOptions, run_parity

    s = exports(name)
    dataset = PRESETS[name][0]
    card = read_card(s["onnx"])
    assert card.num_joints == s["cfg"].num_joints and card.config["data"]["dataset"] == dataset
    assert card.flip_pairs == [list(p) for p in s["cfg"].flip_pairs] and card.codec["name"] == s["task"].codec.name
    assert [str(p) for p in check_onnx_for_tensorrt(s["onnx"])] == []
    for ds in sample_sets(s["task"], SHARED_DATA):
        rep = run_parity(s["task"], s["model"], [s["onnx"]], ds, ParityOptions(batch_size=8, workers=0))
        assert rep.primary_metric == PRIMARY[dataset] and rep.dataset == dataset and rep.items == len(ds)
        assert rep.reference["metrics"][PRIMARY[dataset]] > 0, rep.reference["metrics"]
        (m,) = rep.models
        assert all(abs(v) < 1e-9 for v in m["delta"].values()), m["delta"]
        assert m["mean_kpt_px"] < 1e-3 and m["output_error"]["rel_l2"] < 1e-5 and rep.failed == []


@pytest.mark.parametrize("name", ["hrnet_w32_srpose_mpii_256x256", "hrnet_w32_srpose_crowdpose_256x192"])
def test_decode_and_flip_in_the_graph(name: str, exports, tmp_path: Path) -> None:
    """The graph with the SRPose decoder and the flip test inside (each dataset's flip pairs; the baselines' in-graph
    flip and decode run in test_presets_serving.py's image graphs): the same keypoints as the evaluator's host-side
    flip and decode."""
    from srpose.engines import open_backend
    from srpose.engines.tensorrt.onnx_check import check_onnx_for_tensorrt
    from srpose.eval import EvalOptions, evaluate
    from srpose.export.onnx_export import export_onnx

    s = exports(name)
    both = export_onnx(s["model"], s["cfg"], tmp_path / "both.onnx", batch=(1, 4, 8), decode=True, flip=True)
    assert [str(p) for p in check_onnx_for_tensorrt(both)] == []
    opts = EvalOptions(progress=False, workers=0)
    host = evaluate(s["task"], open_backend(s["onnx"]), s["ds"], opts)
    graph = evaluate(s["task"], open_backend(both), s["ds"], opts)
    assert graph.metrics == host.metrics and host.flip and graph.flip
    np.testing.assert_allclose(graph.keypoints[..., :2], host.keypoints[..., :2], atol=1e-3)


def test_srpose_eval_of_an_exported_file(exports, tmp_path: Path) -> None:
    """`srpose eval --model FILE` needs no name for these models: MPII (PCKh per joint group), CrowdPose with
    detections (AP easy / medium / hard)."""
    for name in ("hrnet_w32_srpose_mpii_256x256", "res50_crowdpose_256x192"):
        s = exports(name)
        dataset = s["cfg"].data["dataset"]
        d = SHARED_DATA / dataset
        argv = ["eval", "--model", str(s["onnx"]), "--ann", str(d / f"test_{dataset}.json"), "--images", str(d),
                "--json", str(tmp_path / "r.json"), "--quiet", "--workers", "0"]
        if dataset == "crowdpose":
            argv += ["--det", str(d / "test_crowdpose_det_AP_40.json")]
        assert main(argv) == 0
        res = json.loads((tmp_path / "r.json").read_text())
        assert res["model"] == s["cfg"].name and res["backend"] == "onnxruntime-fp32"
        assert res["metrics"][PRIMARY[dataset]] > 0
        want = {"mpii": {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"},
                "crowdpose": {"AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_E", "AP_M", "AP_H"}}[dataset]
        assert set(res["metrics"]) == want


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("name", ["hrnet_w32_srpose_mpii_256x256", "res50_crowdpose_256x192"])
def test_training_on_the_sample_with_evaluation(name: str, tmp_path: Path) -> None:
    """A short run on MPII- / CrowdPose-format data with the dataset's own evaluation each epoch: the best
    checkpoint is chosen by the protocol's metric (PCKh for MPII, AP for CrowdPose) and loads strictly."""
    from srpose import build_model
    from srpose.eval.train_hooks import make_eval_fn
    from srpose.train import train

    dataset = PRESETS[name][0]
    d = shared_path("data", dataset)
    ann, images = d / f"test_{dataset}.json", d
    cfg = small_preset(name)
    cfg.data["sigma"] = 2.0
    cfg.train.update(warmup_iters=2, lr_steps=(2,), lr=1e-3)
    res = train(cfg, train_ann=ann, train_images=images, work_dir=tmp_path, epochs=2, batch_size=2, workers=0,
                progress=False, seed=1, eval_every=1, eval_fn=make_eval_fn(cfg, str(ann), str(images), batch_size=4))
    assert res.epochs == 2 and res.iters >= 2 and all(np.isfinite(h["loss"]) for h in res.history)
    assert res.best is not None and res.best_metric is not None and 0 <= res.best_metric <= 1
    meta = load_checkpoint(build_model(cfg), res.best, strict=True)
    assert meta["config"]["data"]["dataset"] == dataset and PRIMARY[dataset] in meta


# ------------------------------------------------------------------------------------------ INT8 search
@pytest.mark.parametrize("name", ["res50_mpii_256x256", "res50_crowdpose_256x192"])
def test_srpose_quantize_budgets_the_datasets_metric(name: str, tmp_path: Path) -> None:
    """`srpose quantize` on self-labelled samples (FP32 scores 1): the search measures PCKh on MPII, AP on
    CrowdPose, writes the mixed graph (14 / 16 joints) and names the metric in its report."""
    from srpose import build_model
    from srpose.card import read_card
    from srpose.engines.tensorrt.onnx_check import check_onnx_for_tensorrt

    dataset = PRESETS[name][0]
    cfg = small_preset(name)
    task = task_for(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, init=False).eval()
    ann = self_labelled(task, model, shared_path("data"), tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(model, tmp_path / "m.pth")
    images = str(SHARED_DATA / dataset)
    argv = ["quantize", str(tmp_path / "cfg.json"), "--checkpoint", str(tmp_path / "m.pth"), "--out-dir",
            str(tmp_path / "out"), "--max-ap-drop", "0.05", "--calib-ann", str(ann), "--calib-images", images,
            "--calib-num", "8", "--val-ann", str(ann), "--val-images", images, "--no-flip", "--threads", "1",
            "--max-evals", "2", "--json", str(tmp_path / "q.json"), "--quiet"]
    assert main(argv) == 0
    rep = json.loads((tmp_path / "q.json").read_text())
    metric = {"mpii": "PCKh", "crowdpose": "AP"}[dataset]
    assert rep["metric"] == metric and rep["dataset"] == dataset and rep["val_persons"] == len(
        sample_dataset(task, SHARED_DATA))
    assert rep["graphs"]["fp32"]["metrics"][metric] == 1.0
    assert all(metric in g["metrics"] for g in rep["graphs"].values())
    assert all(metric in p for p in rep["path"] + rep["measured"])
    assert rep["chosen"]["ap_drop"] == pytest.approx(1.0 - rep["chosen"]["metrics"][metric])
    md = (tmp_path / "out" / f"{cfg.name}.quantize.md").read_text()
    assert md.startswith(f"### {metric}-guided INT8: {cfg.name} ({dataset}, ")
    card = read_card(rep["files"]["mixed"])
    assert card.precision == "mixed" and card.num_joints == cfg.num_joints
    assert card.precision_details["mixed"]["search"]["metric"] == metric
    assert [str(p) for p in check_onnx_for_tensorrt(rep["files"]["mixed"])] == []
