"""``srpose parity``: PyTorch against exported models on the same crops; reports and the AP-drop gate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _export_utils import cached_export, tiny_config, tiny_model

from srpose.eval.parity import models_over_drop, plot_parity, run_parity_check, to_markdown
from srpose.export.fp16 import convert_fp16
from srpose.export.onnx_export import export_onnx
from srpose import save_checkpoint
from srpose.cli import main as cli_main
from srpose.data import TopDownCocoDataset


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("parity")
    fp32, model, cfg = cached_export("hrnet", "srpose")
    both, _, _ = cached_export("hrnet", "srpose", decode=True, flip=True)
    convert_fp16(fp32, d / "m.fp16.onnx")
    (d / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(model, d / "m.pth")
    return dict(dir=d, cfg=cfg, model=model, fp32=fp32, both=both, fp16=d / "m.fp16.onnx")


def test_parity_report(files: dict, coco_sample: dict, tmp_path: Path) -> None:
    cfg = files["cfg"]
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], cfg.data, use_gt_bbox=True)
    rep = run_parity_check(files["model"], cfg, [files["fp32"], files["both"], files["fp16"]], ds, flip=True,
                           batch_size=8, workers=0)
    assert rep["primary_metric"] == "AP" and rep["persons"] == len(ds) and rep["flip"] is True
    fp32, both, fp16 = rep["models"]
    assert (fp32["precision"], both["output_kind"], fp16["precision"]) == ("fp32", "keypoints", "fp16")
    assert both["flip_in_graph"] and both["flip"] and fp32["flip"]
    for m in (fp32, both):
        assert all(abs(v) < 1e-9 for v in m["delta"].values()), m["delta"]
        assert m["output_error"]["cosine"] > 0.999999 and m["mean_kpt_px"] < 1e-3
        assert m["persons_per_s"] > 0
    assert fp32["output_error"]["rel_l2"] < 1e-5
    assert 0 < fp16["output_error"]["rel_l2"] < 1e-2
    md = to_markdown(rep)
    assert "| PyTorch | fp32 |" in md and "| m.fp16.onnx | fp16 |" in md and f"| {fp32['name']} | fp32 |" in md
    png = plot_parity(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert models_over_drop(rep, 0.0) == []
    rep["models"][2]["delta"]["AP"] = -0.05
    assert models_over_drop(rep, 0.01) == ["m.fp16.onnx"] and models_over_drop(rep, 0.1) == []


def test_parity_cli(files: dict, coco_sample: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = files["dir"]
    argv = ["parity", str(d / "cfg.json"), "--checkpoint", str(d / "m.pth"), "--models", str(files["fp32"]),
            "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--gt-bbox", "--batch", "8",
            "--workers", "0", "--quiet", "--max-ap-drop", "0", "--json", str(tmp_path / "p.json"),
            "--markdown", str(tmp_path / "p.md"), "--plot", str(tmp_path / "p.png")]
    assert cli_main(argv) == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "p.json").read_text())
    assert rep["failed"] == [] and rep["max_ap_drop"] == 0 and len(rep["models"]) == 1
    assert (tmp_path / "p.md").read_text().startswith("### Parity") and (tmp_path / "p.png").stat().st_size > 0


def test_parity_rejects_mixed_input_sizes(files: dict, coco_sample: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config("hrnet", "srpose", size=(64, 96))
    other = export_onnx(tiny_model(cfg), cfg, tmp_path / "small.onnx")
    argv = ["parity", str(files["dir"] / "cfg.json"), "--models", str(files["fp32"]), str(other), "--ann",
            str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--gt-bbox", "--quiet"]
    assert cli_main(argv) == 2
    assert "different input sizes" in capsys.readouterr().err


def test_parity_error_persons_bounds_the_comparison_not_the_ap(files: dict, coco_sample: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    cfg = files["cfg"]
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], cfg.data, use_gt_bbox=True)
    assert len(ds) > 4
    full = run_parity_check(files["model"], cfg, [files["fp16"]], ds, flip=False, batch_size=4, workers=0)
    part = run_parity_check(files["model"], cfg, [files["fp16"]], ds, flip=False, batch_size=4, workers=0,
                            error_persons=3, reference_results=tmp_path / "ref.json")
    (f,), (p,) = full["models"], part["models"]
    assert f["error_persons"] == len(ds) and p["error_persons"] == 4  # whole batches: the first batch of 4
    assert p["metrics"] == f["metrics"] and p["output_error"] != f["output_error"]
    assert len(json.loads((tmp_path / "ref.json").read_text())) == len(ds)
    assert "over the first 4 persons" in to_markdown(part) and "over the first" not in to_markdown(full)
    with pytest.raises(ValueError, match="error_persons must be >= 1"):
        run_parity_check(files["model"], cfg, [files["fp16"]], ds, error_persons=0)
    d = files["dir"]
    argv = ["parity", str(d / "cfg.json"), "--models", str(files["fp32"]), "--ann", str(coco_sample["ann"]),
            "--images", str(coco_sample["images"]), "--gt-bbox", "--quiet", "--error-persons", "0"]
    assert cli_main(argv) == 2 and "--error-persons must be >= 1" in capsys.readouterr().err
