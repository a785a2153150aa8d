"""Parity, one code path for both tasks: PyTorch against exported models (FP32, FP16, decode + flip graphs) on the
same data (``run_parity -> ParityReport``), its Markdown / PNG, the AP-drop gate and ``srpose parity``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _export_utils import cached_export, tiny_bottom_up_config, tiny_config, tiny_model

from srpose import save_checkpoint
from srpose.cli import main as cli_main
from srpose.engines.base import Backend
from srpose.eval.parity import (ParityOptions, ParityProbe, ParityReport, config_for_models, config_of_models,
                                run_parity)
from srpose.eval.report import parity_markdown, plot_parity
from srpose.export.fp16 import convert_fp16
from srpose.export.onnx_export import export_onnx
from srpose.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("top-down", "bottom-up")
#: what ``items`` counts and what a decoded graph outputs, per task
UNIT = {"top-down": "person", "bottom-up": "image"}
DECODED_KIND = {"top-down": "keypoints", "bottom-up": "bottomup_candidates"}


@pytest.fixture(scope="module", params=TASKS)
def files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The raw FP32 graph, the decode + in-graph flip graph and the FP16 graph of a tiny model, its config file and
    checkpoint."""
    d = tmp_path_factory.mktemp("parity")
    if request.param == "top-down":
        fp32, model, cfg = cached_export("hrnet", "srpose")
        both, _, _ = cached_export("hrnet", "srpose", decode=True, flip=True)
    else:
        fp32, model, cfg = cached_export("bottom-up", "sr")
        both, _, _ = cached_export("bottom-up", "sr", decode=True, flip=True)
    convert_fp16(fp32, d / "m.fp16.onnx")
    (d / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(model, d / "m.pth")
    return dict(kind=request.param, dir=d, cfg=cfg, model=model, fp32=fp32, both=both, fp16=d / "m.fp16.onnx")


def _dataset(files: dict, coco_sample: dict):
    task = task_for(files["cfg"])
    return task, task.gt_dataset(coco_sample["ann"], coco_sample["images"])


def _opts(**kw) -> ParityOptions:
    return ParityOptions(**{"batch_size": 8, "workers": 0, **kw})


def test_parity_report(files: dict, coco_sample: dict, tmp_path: Path) -> None:
    kind = files["kind"]
    task, ds = _dataset(files, coco_sample)
    rep = run_parity(task, files["model"], [files["fp32"], files["both"], files["fp16"]], ds, _opts(flip=True))
    assert isinstance(rep, ParityReport) and rep.task == kind and rep.unit == UNIT[kind]
    assert rep.primary_metric == "AP" and rep.items == len(ds) and rep.images == 4 and rep.flip is True
    ref = rep.reference
    assert ref["people"] > 0 and ref["items_per_s"] > 0 and ref["backend_ms_per_item"] > 0
    fp32, both, fp16 = rep.models
    assert (fp32["precision"], both["output_kind"], fp16["precision"]) == ("fp32", DECODED_KIND[kind], "fp16")
    assert both["flip_in_graph"] and both["flip"] and fp32["flip"] and not fp32["flip_in_graph"]
    for m in (fp32, both):
        assert all(abs(v) < 1e-9 for v in m["delta"].values()), m["delta"]
        assert m["people"] == ref["people"] and m["error_items"] == len(ds)
        assert m["output_error"]["cosine"] > 0.999999
        assert m["items_per_s"] > 0 and m["backend_ms_per_item"] > 0
        if kind == "top-down":
            assert m["mean_kpt_px"] < 1e-3
        else:
            assert m["mean_kpt_px"] is None  # no per-item keypoints to compare
    assert fp32["output_error"]["rel_l2"] < 1e-5
    assert 0 < fp16["output_error"]["rel_l2"] < 1e-2
    md = parity_markdown(rep)
    assert "| PyTorch | fp32 |" in md and "| m.fp16.onnx | fp16 |" in md and f"| {fp32['name']} | fp32 |" in md
    assert f"{len(ds)} {UNIT[kind]}s" in md and f"| {UNIT[kind]}s/s |" in md
    png = plot_parity(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = rep.to_dict()
    assert d["failed"] == [] and d["unit"] == UNIT[kind] and d["models"][0]["name"] == fp32["name"]
    json.dumps(d)  # JSON-friendly
    rep.max_ap_drop = 0.0
    assert rep.failed == []
    rep.models[2]["delta"]["AP"] = -0.05
    rep.max_ap_drop = 0.01
    assert rep.failed == ["m.fp16.onnx"] and rep.to_dict()["failed"] == ["m.fp16.onnx"]
    rep.max_ap_drop = 0.1
    assert rep.failed == []


def test_parity_report_failed_gate() -> None:
    def report(drops, gate, metric="AP"):
        models = [dict(name=f"m{i}", delta={metric: -d}) for i, d in enumerate(drops)]
        return ParityReport(model="x", task="top-down", dataset="coco", unit="person", items=1, images=1, flip=False,
                            primary_metric=metric, input_size=[64, 64], reference={}, models=models,
                            max_ap_drop=gate)

    assert report([0.5, 0.2], None).failed == []  # no gate, no failure
    assert report([0.0, 0.01, 0.0100001, -0.2], 0.01).failed == ["m2"]  # exactly the bound passes
    assert report([0.002], 0.0).failed == ["m0"] and report([-0.002], 0.0).failed == []
    assert report([0.02], 0.01, metric="Mean").failed == ["m0"]  # MPII: PCKh Mean is the primary metric
    with pytest.raises(ValueError, match="max_ap_drop must be >= 0"):
        ParityOptions(max_ap_drop=-0.1).check()


def test_probe_counts_items_not_host_flip_passes() -> None:
    """With the flip test on the host every item runs twice: throughput and the comparison bound count items."""
    class Echo(Backend):
        name, output_names = "echo", ["outputs"]

        def infer(self, images, meta=None):
            self.last_timing_ms = 2.0
            return {"outputs": images}

    probe = ParityProbe(Echo(), task_for(tiny_bottom_up_config()), lambda x: {"outputs": x}, max_items=3, passes=2)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    for _ in range(5):  # items 1..3 are compared (both passes), 4 and 5 only run
        probe.infer(x)
        probe.infer(np.ascontiguousarray(x[..., ::-1]))
    assert probe.items == 5 and probe.compared == 3 and probe.backend_ms == 20.0
    assert probe.errors.result()["max_abs"] == 0.0


def test_parity_cli(files: dict, coco_sample: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = files["dir"]
    kind = files["kind"]
    argv = ["parity", str(d / "cfg.json"), "--checkpoint", str(d / "m.pth"), "--models", str(files["fp32"]),
            str(files["both"]), "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]),
            "--batch", "8", "--workers", "0", "--quiet", "--max-ap-drop", "0", "--json", str(tmp_path / "p.json"),
            "--markdown", str(tmp_path / "p.md"), "--plot", str(tmp_path / "p.png")]
    assert cli_main(argv + (["--gt-bbox"] if kind == "top-down" else [])) == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["failed"] == [] and rep["max_ap_drop"] == 0 and len(rep["models"]) == 2
    assert rep["task"] == kind and rep["unit"] == UNIT[kind] and rep["items"] == len(_dataset(files, coco_sample)[1])
    assert rep["models"][1]["output_kind"] == DECODED_KIND[kind]
    assert all((m["mean_kpt_px"] is None) == (kind == "bottom-up") for m in rep["models"])
    text = (tmp_path / "p.md").read_text()
    assert text.startswith(f"### Parity: {files['cfg'].name} (coco, {kind}, ") and (tmp_path / "p.png").stat().st_size
    assert f"| {Path(files['both']).name} | fp32 |" in text
    if kind == "bottom-up":  # whole images: person boxes are refused
        assert cli_main(argv + ["--det", str(coco_sample["det"])]) == 2
    # no name: the config comes from the first model's card, with the same figures
    unnamed = [str(tmp_path / "q.json") if a == str(tmp_path / "p.json") else a for a in argv
               if a != str(d / "cfg.json")]
    assert cli_main(unnamed + (["--gt-bbox"] if kind == "top-down" else [])) == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "q.json").read_text())
    assert again["model"] == rep["model"] and again["reference"]["metrics"] == rep["reference"]["metrics"]
    assert [m["metrics"] for m in again["models"]] == [m["metrics"] for m in rep["models"]]
    with pytest.raises(ValueError, match="none of the model files carries its config"):
        config_of_models(["grpc://127.0.0.1:1/m", str(tmp_path / "p.json")])


def test_parity_rejects_mixed_input_sizes_and_tasks(files: dict, coco_sample: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    if files["kind"] == "top-down":
        cfg = tiny_config("hrnet", "srpose", size=(64, 96))
        other = export_onnx(tiny_model(cfg), cfg, tmp_path / "small.onnx")
        argv = ["parity", str(files["dir"] / "cfg.json"), "--models", str(files["fp32"]), str(other), "--ann",
                str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--gt-bbox", "--quiet"]
        assert cli_main(argv) == 2
        assert "different input sizes" in capsys.readouterr().err
    else:  # a bottom-up graph compared against a top-down config
        with pytest.raises(ValueError, match="is a bottom-up model but tiny_hrnet_srpose is top-down"):
            config_for_models(task_for(tiny_config("hrnet", "srpose")), [files["fp32"]])


def test_parity_error_items_bound_the_comparison_not_the_ap(files: dict, coco_sample: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    kind = files["kind"]
    task, ds = _dataset(files, coco_sample)
    assert len(ds) > 3
    full = run_parity(task, files["model"], [files["fp16"]], ds, _opts(flip=False, batch_size=4))
    part = run_parity(task, files["model"], [files["fp16"]], ds, _opts(flip=False, batch_size=4, error_items=3,
                                                                        reference_results=tmp_path / "ref.json"))
    (f,), (p,) = full.models, part.models
    compared = 4 if kind == "top-down" else 3  # whole batches: the first batch of 4 crops / 3 single images
    assert f["error_items"] == len(ds) and p["error_items"] == compared
    assert p["metrics"] == f["metrics"] and p["output_error"] != f["output_error"]
    results = json.loads((tmp_path / "ref.json").read_text())
    assert len(results) == (len(ds) if kind == "top-down" else part.reference["people"])
    unit = UNIT[kind]
    assert f"over the first {compared} {unit}s" in parity_markdown(part)
    assert "over the first" not in parity_markdown(full)
    with pytest.raises(ValueError, match="error_items must be >= 1"):
        run_parity(task, files["model"], [files["fp16"]], ds, _opts(error_items=0))
    d = files["dir"]
    argv = ["parity", str(d / "cfg.json"), "--models", str(files["fp32"]), "--ann", str(coco_sample["ann"]),
            "--images", str(coco_sample["images"]), "--quiet", "--error-persons", "0"]
    with pytest.raises(SystemExit) as e:  # refused while parsing, before any work
        cli_main(argv + (["--gt-bbox"] if kind == "top-down" else []))
    assert e.value.code == 2 and "argument --error-persons: must be >= 1, got 0" in capsys.readouterr().err
