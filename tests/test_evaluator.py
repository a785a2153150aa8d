"""The evaluation loop end to end on the shared samples with the oracle backend, flip test, errors and the CLI."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srpose.engines.base import Backend
from srpose.eval.backends import OracleBackend, TorchBackend
from srpose.eval.evaluator import evaluate, predict_heatmaps, shift_right
from srpose.config import make_data_cfg
from srpose.data import TopDownCocoDataset, TopDownCrowdPoseDataset, TopDownMpiiDataset

TEST_CFG = dict(flip_test=True, shift_heatmap=True, post_process="default", modulate_kernel=11)
SR_CFG = make_data_cfg("coco", image_size=(192, 256), heatmap_size=(192, 256), sigma=8, decoder="srpose")
SIMPLE_CFG = make_data_cfg("coco", image_size=(192, 256), heatmap_size=(48, 64), sigma=2, decoder="simple")


def _run(backend, ds, cfg, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return evaluate(backend, ds, cfg, kw.pop("test_cfg", TEST_CFG), **kw)


def _pixel_errors(res, ds) -> np.ndarray:
    gt = np.stack([r["joints"] for r in ds.records])
    vis = gt[..., 2] > 0
    return np.linalg.norm(res.keypoints[..., :2] - gt[..., :2], axis=-1)[vis]


@pytest.fixture(scope="module")
def coco_gt():
    d = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco"
    if not d.is_dir():
        pytest.skip(f"{d} is absent (the shared sample data lives beside the repo as ../shared)")
    return dict(sr=TopDownCocoDataset(d / "test_coco.json", d, SR_CFG),
                simple=TopDownCocoDataset(d / "test_coco.json", d, SIMPLE_CFG), dir=d)


def test_oracle_ap_srpose_full_resolution(coco_gt):
    ds = coco_gt["sr"]
    res = _run(OracleBackend(SR_CFG), ds, SR_CFG)  # flip test with the heatmap shift, as the SRPose config
    assert res.metrics["AP"] >= 0.99 and res.flip and res.num_persons == len(ds) == 12 and res.num_images == 4
    assert res.images_per_s > 0 and res.backend_ms_per_person > 0
    plain = _run(OracleBackend(SR_CFG), ds, SR_CFG, flip=False)
    no_shift = _run(OracleBackend(SR_CFG), ds, SR_CFG, test_cfg=dict(TEST_CFG, shift_heatmap=False))
    # at stride 1 the flipped oracle is exact: flip test without shift changes nothing
    np.testing.assert_array_equal(no_shift.keypoints, plain.keypoints)
    assert _pixel_errors(plain, ds).mean() < 0.6


def test_oracle_simple_decoder_is_coarser(coco_gt):
    sr = _run(OracleBackend(SR_CFG), coco_gt["sr"], SR_CFG, flip=False)
    simple = _run(OracleBackend(SIMPLE_CFG), coco_gt["simple"], SIMPLE_CFG, flip=False, post=False)
    assert simple.post_process is None and simple.decoder == "simple"
    # AP saturates on these large persons; the localisation error shows the 4x coarser heatmap
    assert simple.metrics["AP"] <= sr.metrics["AP"]
    assert _pixel_errors(simple, coco_gt["simple"]).mean() > 3 * _pixel_errors(sr, coco_gt["sr"]).mean()


class _NoisyOracle(OracleBackend):
    """The oracle with joints moved by a fixed per-person offset, for non-trivial metrics."""

    def infer(self, images, meta=None):
        m = dict(meta)
        j = np.asarray(meta["joints"]).copy()
        rng = np.random.default_rng(int(np.asarray(meta["idx"])[0]))
        j[..., :2] += rng.normal(0, 6, j[..., :2].shape)
        m["joints"] = j
        return super().infer(images, m)


def test_metric_equals_pycocotools_on_results_file(coco_gt, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "results.json"
    res = _run(_NoisyOracle(SIMPLE_CFG), coco_gt["simple"], SIMPLE_CFG, flip=False, batch_size=5, results_file=out)
    assert 0.2 < res.metrics["AP"] < 0.99 and res.results_file == str(out)
    results = json.loads(out.read_text())
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_gt["dir"] / "test_coco.json"))
        ev = COCOeval(gt, gt.loadRes(str(out)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose(list(res.metrics.values()), ev.stats, atol=1e-12)


class _MaskModel(nn.Module):
    """Heatmap k = pooled grey image x mask k; paired joints get mirrored masks, so the model is flip-equivariant
    only together with the left/right channel swap."""

    def __init__(self, k: int, pairs, h: int, w: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        masks = torch.rand(k, h, w, generator=g)
        for left, right in pairs:
            masks[right] = masks[left].flip(-1)
        paired = {i for p in pairs for i in p}
        for i in set(range(k)) - paired:
            masks[i] = 0.5 * (masks[i] + masks[i].flip(-1))
        self.register_buffer("masks", masks)

    def forward(self, x):
        return F.avg_pool2d(x.mean(1, keepdim=True), 4) * self.masks


def test_flip_test_on_symmetric_input():
    pairs = SIMPLE_CFG["flip_pairs"]
    backend = TorchBackend(_MaskModel(17, pairs, 16, 12))
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1)).numpy()
    x = np.ascontiguousarray(x + x[..., ::-1])  # mirror-symmetric crops
    plain, _ = predict_heatmaps(backend, x, {}, flip=False, flip_pairs=pairs, shift_heatmap=False)
    flipped, _ = predict_heatmaps(backend, x, {}, flip=True, flip_pairs=pairs, shift_heatmap=False)
    np.testing.assert_allclose(flipped, plain, rtol=1e-6, atol=1e-7)
    shifted, _ = predict_heatmaps(backend, x, {}, flip=True, flip_pairs=pairs, shift_heatmap=True)
    np.testing.assert_allclose(shifted, 0.5 * (plain + shift_right(plain)), rtol=1e-6, atol=1e-7)
    # without the left/right channel swap the flipped pass disagrees: the swap is what makes the two match
    unswapped, _ = predict_heatmaps(backend, x, {}, flip=True, flip_pairs=[], shift_heatmap=False)
    assert not np.allclose(unswapped, plain, rtol=1e-3)


def test_shift_right_keeps_first_column():
    h = np.arange(12, dtype=np.float32).reshape(1, 1, 2, 6)
    out = shift_right(h)
    np.testing.assert_array_equal(out[0, 0, 0], [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(h[0, 0, 0], [0, 1, 2, 3, 4, 5])


def test_crowdpose_oracle(crowdpose_sample):
    cfg = make_data_cfg("crowdpose", image_size=(192, 256), heatmap_size=(48, 64), sigma=2, decoder="simple")
    ds = TopDownCrowdPoseDataset(crowdpose_sample["ann"], crowdpose_sample["images"], cfg)
    res = _run(OracleBackend(cfg), ds, cfg, workers=2, batch_size=2)  # also runs the DataLoader workers
    m = res.metrics
    assert m["AP"] >= 0.99 and m["AP_M"] == m["AP"] and m["AP_E"] == m["AP_H"] == -1.0  # both images medium


def test_mpii_oracle(mpii_sample):
    cfg = make_data_cfg("mpii", image_size=(256, 256), heatmap_size=(64, 64), sigma=2, decoder="simple")
    ds = TopDownMpiiDataset(mpii_sample["ann"], mpii_sample["images"], cfg)
    res = _run(OracleBackend(cfg), ds, cfg)
    assert res.metrics["Mean"] >= 0.99 and res.metrics["Head"] >= 0.99 and len(res.per_joint) == 16
    assert set(res.metrics) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"}


class _KeypointBackend(Backend):
    """Decodes in the 'graph' (N x K x 3 heatmap pixels), as an exported model with an in-graph decoder."""

    name = "kp"
    output_kind = "keypoints"
    needs_meta = True

    def __init__(self, cfg, flip_in_graph=False):
        super().__init__()
        self.oracle = OracleBackend(cfg)
        self.flip_in_graph = flip_in_graph

    def infer(self, images, meta=None):
        from srpose.decode import decode_srpose_torch

        return decode_srpose_torch(torch.from_numpy(self.oracle.infer(images, meta))).numpy()


def test_keypoint_backends(coco_gt):
    ds, cfg = coco_gt["simple"], dict(SIMPLE_CFG, decoder="srpose")
    ref = _run(OracleBackend(cfg), ds, cfg, flip=False)
    res = _run(_KeypointBackend(cfg), ds, cfg, flip=False)
    np.testing.assert_allclose(res.keypoints, ref.keypoints, atol=1e-3)
    with pytest.raises(ValueError, match="cannot flip-test"):
        _run(_KeypointBackend(cfg), ds, cfg, flip=True)
    res = _run(_KeypointBackend(cfg, flip_in_graph=True), ds, cfg, flip=True)
    assert not res.flip


class _Const(Backend):
    name = "const"

    def __init__(self, shape, value=0.5):
        super().__init__()
        self.shape, self.value = shape, value

    def infer(self, images, meta=None):
        return np.full((len(images),) + self.shape, self.value, np.float32)


def test_evaluator_errors(coco_gt):
    ds = coco_gt["simple"]
    with pytest.raises(ValueError, match=r"expected 5 x 17 x H x W"):
        _run(_Const((16, 64, 48)), ds, SIMPLE_CFG, flip=False, batch_size=5)
    with pytest.raises(ValueError, match="96x128 heatmaps but the config says heatmap_size 48x64"):
        _run(_Const((17, 128, 96)), ds, SIMPLE_CFG, flip=False)
    with pytest.raises(ValueError, match="non-finite keypoints for 12 of 12"):
        _run(_Const((17, 64, 48), np.nan), ds, SIMPLE_CFG, flip=False)
    with pytest.raises(ValueError, match="precision .fp16. needs a CUDA device"):
        TorchBackend(nn.Identity(), fp16=True)


def test_oracle_needs_gt_boxes(coco_sample):
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], SIMPLE_CFG, det_file=coco_sample["det"])
    with pytest.raises(ValueError, match="needs ground-truth joints.*--gt-bbox"):
        _run(OracleBackend(SIMPLE_CFG), ds, SIMPLE_CFG)


# ------------------------------------------------------------------------------------------ CLI


def _coco_json_config(tmp_path):
    from srpose import get_config, list_models

    names = [n for n in list_models() if "srpose" in n and "coco" in n]
    if not names:
        pytest.skip("no SRPose COCO preset registered")
    cfg = get_config(names[0]).to_dict()
    cfg["data"].update(make_data_cfg("coco", image_size=(96, 128), heatmap_size=(24, 32), sigma=1, decoder="simple"))
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    return p


def test_cli_eval_oracle(coco_sample, tmp_path, capsys):
    from srpose.cli import main

    cfg = _coco_json_config(tmp_path)
    out, res = tmp_path / "m.json", tmp_path / "r.json"
    rc = main(["eval", str(cfg), "--backend", "oracle", "--ann", str(coco_sample["ann"]), "--images",
               str(coco_sample["images"]), "--gt-bbox", "--workers", "0", "--quiet", "--no-flip",
               "--json", str(out), "--results", str(res)])
    text = capsys.readouterr().out
    assert rc == 0 and "AP50" in text and "12 persons in 4 images" in text
    summary = json.loads(out.read_text())
    direct = __import__("srpose.eval.metrics", fromlist=["x"]).coco_keypoint_eval(coco_sample["ann"], res)
    assert summary["metrics"] == direct and summary["backend"] == "oracle" and summary["flip"] is False
    assert summary["metrics"]["AP"] >= 0.9 and summary["images_per_s"] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries


def test_cli_eval_errors(coco_sample, tmp_path, capsys):
    from srpose.cli import main

    cfg = _coco_json_config(tmp_path)
    base = ["eval", str(cfg), "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--quiet"]
    assert main(base + ["--backend", "oracle"]) == 2
    assert "pass --det DET.json or --gt-bbox" in capsys.readouterr().err
    assert main(base + ["--backend", "nope", "--gt-bbox"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err
    assert main(base + ["--backend", "oracle", "--det", str(coco_sample["det"])]) == 2
    assert "needs ground-truth joints" in capsys.readouterr().err
