"""The one evaluation loop (``evaluate(task, backend, dataset, options)``) for both tasks on the shared samples: the
oracle, the host flip test, results files, torch vs ONNX Runtime, bad inputs refused, the ``srpose eval`` CLI."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _export_utils import cached_export, tiny_bottom_up_config, tiny_model
from torch import nn

from srpose import get_config
from srpose.codecs import MSRAHeatmap, SRPoseHeatmap
from srpose.config import PoseConfig, make_data_cfg
from srpose.engines import open_backend
from srpose.engines.base import Backend
from srpose.eval import EvalOptions, OracleBackend, TorchBackend, evaluate
from srpose.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")

TEST_CFG = dict(flip_test=True, shift_heatmap=True, post_process="default", modulate_kernel=11)
TASKS = ("top-down", "bottom-up")


def _td_cfg(dataset: str = "coco", image_size=(192, 256), heatmap_size=(48, 64), sigma: float = 2,
            decoder: str = "simple", test: dict | None = None, **data) -> PoseConfig:
    """A top-down config of the given data settings (the oracle needs no model weights)."""
    model = dict(type="TopDownHigher" if decoder == "srpose" else "TopDown", test_cfg=dict(TEST_CFG, **(test or {})))
    return PoseConfig(name=f"oracle_{dataset}_{decoder}", model=model,
                      data=make_data_cfg(dataset, image_size=image_size, heatmap_size=heatmap_size, sigma=sigma,
                                         decoder=decoder, **data))


SR = _td_cfg(image_size=(192, 256), heatmap_size=(192, 256), sigma=8, decoder="srpose")
SIMPLE = _td_cfg()


def _bu_cfg(name: str = "res50_sr_coco_512x512", size: int = 256) -> PoseConfig:
    return get_config(name).with_input_size(size, size)


def _opts(**kw) -> EvalOptions:
    return EvalOptions(**{"workers": 0, "progress": False, **kw})


def _run(task, backend, ds, **kw):
    return evaluate(task, backend, ds, _opts(**kw))


def _pixel_errors(res, ds) -> np.ndarray:
    gt = np.stack([r["joints"] for r in ds.records])
    vis = gt[..., 2] > 0
    return np.linalg.norm(res.keypoints[..., :2] - gt[..., :2], axis=-1)[vis]


def _gt(cfg: PoseConfig, coco: dict):
    task = task_for(cfg)
    return task, task.gt_dataset(coco["ann"], coco["images"])


# ------------------------------------------------------------------------------------------ the oracle


@pytest.mark.parametrize("kind", TASKS)
def test_oracle_scores_ap_one_on_the_coco_sample(kind: str, coco_sample: dict) -> None:
    """Top-down: GT boxes, flip test with the heatmap shift (as the SRPose config); bottom-up: whole images (short
    side 256), the SR head's full-resolution maps, no flip."""
    task, ds = _gt(SR if kind == "top-down" else _bu_cfg(), coco_sample)
    flip = kind == "top-down"
    res = _run(task, OracleBackend(task), ds, flip=flip)
    assert res.task == kind and res.decoder == task.codec.name and res.flip is flip
    assert res.num_persons == 12 and res.num_images == 4  # the 2 annotations without keypoints are not scored
    assert res.images_per_s > 0 and res.backend_ms_per_person > 0 and res.metrics["AP"] == pytest.approx(1.0)
    if kind == "top-down":
        assert len(ds) == 12  # person crops
    else:
        assert len(ds) == 4 and ds[0]["img"].shape[1] == 256  # whole images, shorter side 256


def test_oracle_top_down_flip_and_shift(coco_sample: dict) -> None:
    task, ds = _gt(SR, coco_sample)
    plain = _run(task, OracleBackend(task), ds, flip=False)
    no_shift = task_for(_td_cfg(image_size=(192, 256), heatmap_size=(192, 256), sigma=8, decoder="srpose",
                                test=dict(shift_heatmap=False)))
    res = _run(no_shift, OracleBackend(no_shift), ds, flip=True)
    # at stride 1 the flipped oracle is exact: flip test without shift changes nothing
    assert res.flip
    np.testing.assert_array_equal(res.keypoints, plain.keypoints)
    assert _pixel_errors(plain, ds).mean() < 0.6


def test_oracle_simple_decoder_is_coarser(coco_sample: dict) -> None:
    sr_task, sr_ds = _gt(SR, coco_sample)
    task, ds = _gt(SIMPLE, coco_sample)
    sr = _run(sr_task, OracleBackend(sr_task), sr_ds, flip=False)
    simple = _run(task, OracleBackend(task), ds, flip=False, post=False)
    assert simple.post_process is None and simple.decoder == "simple" and sr.post_process == "default"
    # AP saturates on these large persons; the localisation error shows the 4x coarser heatmap
    assert simple.metrics["AP"] <= sr.metrics["AP"]
    assert _pixel_errors(simple, ds).mean() > 3 * _pixel_errors(sr, sr_ds).mean()


def test_oracle_bottom_up_flip_and_the_simple_head(coco_sample: dict) -> None:
    """With the flip test a mirrored render lands on the next pixel when x is fractional, so the merged peak is a
    2-pixel plateau; the 1/4-resolution simple head loses AP to quantisation."""
    aps = {}
    for name in ("res50_sr_coco_512x512", "res50_coco_512x512"):
        task, ds = _gt(_bu_cfg(name), coco_sample)
        res = _run(task, OracleBackend(task), ds, flip=True)
        assert res.flip and res.num_persons == 12 and res.post_process == "adjust+refine"
        aps[name] = res.metrics["AP"]
    assert aps["res50_sr_coco_512x512"] >= 0.95
    assert 0.85 <= aps["res50_coco_512x512"] < aps["res50_sr_coco_512x512"]


class _NoisyOracle(OracleBackend):
    """The oracle with joints moved by a fixed per-person offset, for non-trivial metrics."""

    def infer(self, images, meta=None):
        m = dict(meta)
        j = np.asarray(meta["joints"]).copy()
        rng = np.random.default_rng(int(np.asarray(meta["idx"])[0]))
        j[..., :2] += rng.normal(0, 6, j[..., :2].shape)
        m["joints"] = j
        return super().infer(images, m)


def test_metric_equals_pycocotools_on_results_file(coco_sample: dict, tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "results.json"
    task, ds = _gt(SIMPLE, coco_sample)
    res = _run(task, _NoisyOracle(task), ds, flip=False, batch_size=5, results_file=out)
    assert 0.2 < res.metrics["AP"] < 0.99 and res.results_file == str(out)
    results = json.loads(out.read_text())
    assert all(r["category_id"] == 1 and len(r["keypoints"]) == 51 for r in results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_sample["ann"]))
        ev = COCOeval(gt, gt.loadRes(str(out)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose(list(res.metrics.values()), ev.stats, atol=1e-12)


def test_crowdpose_oracle(crowdpose_sample: dict) -> None:
    task = task_for(_td_cfg("crowdpose"))
    ds = task.dataset(crowdpose_sample["ann"], crowdpose_sample["images"], gt_bbox=True)
    res = _run(task, OracleBackend(task), ds, workers=2, batch_size=2)  # also runs the DataLoader workers
    m = res.metrics
    assert m["AP"] >= 0.99 and m["AP_M"] == m["AP"] and m["AP_E"] == m["AP_H"] == -1.0  # both images medium


def test_mpii_oracle(mpii_sample: dict) -> None:
    task = task_for(_td_cfg("mpii", image_size=(256, 256), heatmap_size=(64, 64)))
    ds = task.dataset(mpii_sample["ann"], mpii_sample["images"])
    res = _run(task, OracleBackend(task), ds)
    assert res.metrics["Mean"] >= 0.99 and res.metrics["Head"] >= 0.99 and len(res.per_joint) == 16
    assert set(res.metrics) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"}


def test_oracle_needs_gt_boxes(coco_sample: dict) -> None:
    task = task_for(SIMPLE)
    ds = task.dataset(coco_sample["ann"], coco_sample["images"], det=str(coco_sample["det"]))
    with pytest.raises(ValueError, match="needs ground-truth joints.*--gt-bbox"):
        _run(task, OracleBackend(task), ds)


# ------------------------------------------------------------------------------------------ the host flip test


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


def test_host_flip_test_on_symmetric_input() -> None:
    """``task.infer`` mirrors the batch and merges with the codec's ``flip_merge`` (channel swap, one-pixel shift)."""
    pairs = SIMPLE.data["flip_pairs"]
    backend = TorchBackend(_MaskModel(17, pairs, 16, 12))
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1)).numpy()
    batch = dict(img=np.ascontiguousarray(x + x[..., ::-1]))  # mirror-symmetric crops

    def heatmaps(flip: bool, shift: bool = False, **data) -> np.ndarray:
        task = task_for(_td_cfg(image_size=(48, 64), heatmap_size=(12, 16), test=dict(shift_heatmap=shift), **data))
        out, secs = task.infer(backend, batch, flip=flip)
        assert list(out) == ["heatmaps"] and secs > 0
        return out["heatmaps"]

    plain = heatmaps(False)
    np.testing.assert_allclose(heatmaps(True), plain, rtol=1e-6, atol=1e-7)
    shifted = plain.copy()
    shifted[..., 1:] = plain[..., :-1]
    np.testing.assert_allclose(heatmaps(True, shift=True), 0.5 * (plain + shifted), rtol=1e-6, atol=1e-7)
    # without the left/right channel swap the flipped pass disagrees: the swap is what makes the two match
    assert not np.allclose(heatmaps(True, flip_pairs=[]), plain, rtol=1e-3)


def test_flip_merge_shift_keeps_the_first_column() -> None:
    codec = MSRAHeatmap(num_joints=1, input_size=(24, 8), heatmap_size=(6, 2), shift_heatmap=True)
    h = np.arange(12, dtype=np.float32).reshape(1, 1, 2, 6)
    back = np.ascontiguousarray(h[..., ::-1])  # the mirrored pass of a perfect model
    out = codec.flip_merge(np.zeros_like(h), back)
    np.testing.assert_array_equal(2 * out[0, 0, 0], [0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(h[0, 0, 0], [0, 1, 2, 3, 4, 5])  # inputs untouched
    graph = codec.flip_merge_module()(torch.from_numpy(np.concatenate([np.zeros_like(h), back])))
    np.testing.assert_array_equal(graph.numpy(), out)  # the exported merge is the same


class _KeypointBackend(Backend):
    """Decodes in the 'graph' (N x K x 3 heatmap pixels), as an exported model with an in-graph decoder."""

    name = "kp"
    needs_meta = True

    def __init__(self, task, flip_in_graph=False):
        super().__init__()
        self.oracle, self.codec, self.calls = OracleBackend(task), task.codec, 0
        self.card = task.make_card(decode=True, flip=flip_in_graph, batch=(1, 8, 32))

    def infer(self, images, meta=None):
        self.calls += 1
        return {"keypoints": self.codec.decode(self.oracle.infer(images, meta)["heatmaps"])}


def test_keypoint_backends(coco_sample: dict) -> None:
    task, ds = _gt(_td_cfg(decoder="srpose"), coco_sample)
    assert isinstance(task.codec, SRPoseHeatmap)
    ref = _run(task, OracleBackend(task), ds, flip=False)
    res = _run(task, _KeypointBackend(task), ds, flip=False)
    np.testing.assert_allclose(res.keypoints, ref.keypoints, atol=1e-3)
    with pytest.raises(ValueError, match="cannot flip-test"):
        _run(task, _KeypointBackend(task), ds, flip=True)
    backend = _KeypointBackend(task, flip_in_graph=True)
    res = _run(task, backend, ds, flip=True, batch_size=32)
    assert res.flip and backend.calls == 1  # the graph flips: the host never runs the mirrored pass


# ------------------------------------------------------------------------------------------ backends and bad inputs


def _bu_export(tmp: Path) -> tuple:
    from srpose.export.onnx_export import export_onnx

    cfg = tiny_bottom_up_config()
    model = tiny_model(cfg)
    return export_onnx(model, cfg, tmp / f"{cfg.name}.onnx"), model, cfg


@pytest.mark.parametrize("kind", TASKS)
def test_torch_and_onnxruntime_give_the_same_people(kind: str, coco_sample: dict, tmp_path: Path) -> None:
    path, model, cfg = cached_export("hrnet", "srpose") if kind == "top-down" else _bu_export(tmp_path)
    task, ds = _gt(cfg, coco_sample)
    ref = _run(task, TorchBackend(model), ds, flip=True, batch_size=8)
    with open_backend(path) as ort:
        res = _run(task, ort, ds, flip=True, batch_size=8)
    assert res.task == ref.task == kind and res.flip and res.num_persons == ref.num_persons > 0
    np.testing.assert_allclose(res.keypoints, ref.keypoints, atol=1e-3)
    assert res.metrics == pytest.approx(ref.metrics, abs=1e-9)


class _Const(Backend):
    """Returns ``{name: value}`` arrays of ``shape(n, h, w)`` (or a bare array with ``bare``)."""

    name = "const"

    def __init__(self, shape, value=0.5, names=("heatmaps",), bare=False):
        super().__init__()
        self.shape, self.value, self.names, self.bare = shape, value, names, bare

    def infer(self, images, meta=None):
        n, _, h, w = images.shape
        a = np.full(self.shape(n, h, w), self.value, np.float32)
        return a if self.bare else {k: a for k in self.names}


BAD = {
    "top-down": [
        (_Const(lambda n, h, w: (n, 16, 64, 48)), ValueError, r"expected 5 x 17 x H x W"),
        (_Const(lambda n, h, w: (n, 17, 128, 96)), ValueError,
         "96x128 heatmaps but the config says heatmap_size 48x64"),
        (_Const(lambda n, h, w: (n, 17, 64, 48), np.nan), ValueError,  # the first person named, with its image
         r"non-finite heatmaps for 5 of 5 items of a batch, the first for item 0 \(image 000000000785.jpg\)"),
        (_Const(lambda n, h, w: (n, 17, 64, 48), names=("a", "b")), ValueError, "a top-down graph has one"),
        (_Const(lambda n, h, w: (n, 17, 64, 48), bare=True), TypeError, "backends return a dict"),
    ],
    "bottom-up": [
        (_Const(lambda n, h, w: (n, 20, h // 4, w // 4), names=("outputs",)), ValueError, r"returns 1 x \(K \+ L\)"),
        (_Const(lambda n, h, w: (n, 34, h // 4, w // 3)), ValueError, "not an integer downscale"),
        (_Const(lambda n, h, w: (n, 34, h // 4, w // 4), np.inf), ValueError,
         r"non-finite heatmaps and tags for 1 of 1 items of a batch, the first for item 0 \(image 0000"),
        (_Const(lambda n, h, w: (n, 34, h, w), names=("a", "b")), ValueError, "a raw bottom-up graph has one"),
        (_Const(lambda n, h, w: (n, 34, h, w), bare=True), TypeError, "backends return a dict"),
    ],
}


@pytest.mark.parametrize("kind", TASKS)
def test_bad_outputs_are_refused(kind: str, coco_sample: dict) -> None:
    task, ds = _gt(SIMPLE if kind == "top-down" else _bu_cfg("res50_coco_512x512"), coco_sample)
    for backend, error, match in BAD[kind]:
        with pytest.raises(error, match=match):
            _run(task, backend, ds, flip=False, batch_size=5)


def test_bad_options_are_refused(coco_sample: dict) -> None:
    for kw, match in ((dict(batch_size=0), "batch_size must be >= 1"), (dict(workers=-1), "workers must be >= 0")):
        with pytest.raises(ValueError, match=match):
            EvalOptions(**kw).check()
        with pytest.raises(ValueError, match=match):  # before any work: the dataset is never read
            evaluate(task_for(SIMPLE), OracleBackend(task_for(SIMPLE)), None, EvalOptions(**kw))
    EvalOptions().check()
    with pytest.raises(ValueError, match="precision .fp16. needs a CUDA device"):
        TorchBackend(nn.Identity(), fp16=True)
    with pytest.raises(ValueError, match="no person boxes"):
        task_for(_bu_cfg()).dataset(coco_sample["ann"], coco_sample["images"], gt_bbox=True)


# ------------------------------------------------------------------------------------------ CLI


def _cli_config(kind: str, tmp_path: Path) -> Path:
    if kind == "top-down":
        cfg = get_config("res50_srpose_coco_256x192").to_dict()
        cfg["data"].update(make_data_cfg("coco", image_size=(96, 128), heatmap_size=(24, 32), sigma=1,
                                         decoder="simple"))
    else:
        cfg = get_config("hrnet_w32_sr_coco_512x512").with_input_size(128, 128).to_dict()
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.parametrize("kind", TASKS)
def test_cli_eval_oracle(kind: str, coco_sample: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from srpose.eval.metrics import coco_keypoint_eval

    from srpose.cli import main

    cfg = _cli_config(kind, tmp_path)
    out, res = tmp_path / "m.json", tmp_path / "r.json"
    argv = ["eval", str(cfg), "--backend", "oracle", "--ann", str(coco_sample["ann"]), "--images",
            str(coco_sample["images"]), "--workers", "0", "--quiet", "--no-flip", "--json", str(out), "--results",
            str(res)]
    rc = main(argv + (["--gt-bbox"] if kind == "top-down" else []))
    text = capsys.readouterr().out
    unit = "persons" if kind == "top-down" else "images"
    assert rc == 0 and "AP50" in text and "12 people in 4 images" in text and f"coco {kind}" in text
    assert "flip off" in text and f"{unit}/s end to end" in text
    summary = json.loads(out.read_text())
    assert summary["metrics"] == coco_keypoint_eval(coco_sample["ann"], res) and summary["backend"] == "oracle"
    assert summary["protocol"] == summary["task"] == kind and summary["flip"] is False
    assert summary["metrics"]["AP"] >= 0.9 and summary["images_per_s"] > 0 and summary["num_persons"] == 12
    results = json.loads(res.read_text())
    assert len(results) == 12 and len(results[0]["keypoints"]) == 51
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries


@pytest.mark.parametrize("kind", TASKS)
def test_cli_eval_errors(kind: str, coco_sample: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from srpose.cli import main

    cfg = _cli_config(kind, tmp_path)
    base = ["eval", str(cfg), "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--quiet",
            "--workers", "0"]
    with pytest.raises(SystemExit):
        main(base + ["--backend", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    if kind == "top-down":
        assert main(base + ["--backend", "oracle"]) == 2
        assert "pass --det DET.json or --gt-bbox" in capsys.readouterr().err
        assert main(base + ["--backend", "oracle", "--det", str(coco_sample["det"])]) == 2
        assert "needs ground-truth joints" in capsys.readouterr().err
        assert main(base + ["--backend", "oracle", "--gt-bbox", "--bottom-up"]) == 2
        assert "is a top-down model" in capsys.readouterr().err
    else:
        assert main(base + ["--backend", "oracle", "--det", str(coco_sample["det"])]) == 2
        assert "no person boxes" in capsys.readouterr().err
        assert main(base + ["--backend", "oracle", "--dataset", "crowdpose"]) == 2
        assert "COCO protocol only" in capsys.readouterr().err


@pytest.mark.parametrize("kind", TASKS)
def test_cli_eval_of_a_model_file_needs_no_name(kind: str, coco_sample: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """`srpose eval --model FILE`: the backend follows from the file and the config from its card; the same figures
    as naming the config and the backend."""
    from srpose.cli import main

    path, _, cfg = cached_export("hrnet", "sr") if kind == "top-down" else cached_export("bottom-up", "sr")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    data = ["--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--quiet", "--workers", "0"]
    data += ["--gt-bbox"] if kind == "top-down" else []
    outs = [tmp_path / "named.json", tmp_path / "file.json"]
    assert main(["eval", str(cfg_file), "--backend", "onnxruntime", "--model", str(path), "--json", str(outs[0])]
                + data) == 0
    assert main(["eval", "--model", str(path), "--json", str(outs[1])] + data) == 0
    named, file = (json.loads(o.read_text()) for o in outs)
    assert file["backend"] == named["backend"] == "onnxruntime-fp32" and file["model"] == cfg.name
    assert file["metrics"] == named["metrics"] and file["num_persons"] == named["num_persons"] > 0
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "m.txt")] + data) == 2
    assert "expected an .onnx graph" in capsys.readouterr().err
    assert main(["eval"] + data) == 2
    assert "needs NAME_OR_CONFIG" in capsys.readouterr().err
