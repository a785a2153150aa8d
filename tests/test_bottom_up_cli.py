"""Bottom-up models through the CLI: ``srpose export`` (dynamic H/W, ``--shape-profile``), ``srpose parity`` and
``srpose bench`` dispatch bottom-up configs to the bottom-up paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _export_utils import tiny_bottom_up_config

from srpose.export.onnx_export import read_metadata
from srpose import build_model
from srpose.cli import main

PROFILE = "64x64,128x64,128x128"


pytestmark = pytest.mark.usefixtures("one_thread")  # the bottom-up models are large for 2 cores


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny hrnet_w32_sr_coco_512x512 (one block per stage, 4..32 channels) at 64x64 as a .json config, its
    checkpoint, and the raw and decoded exports made through ``srpose export``."""
    d = tmp_path_factory.mktemp("bu_cli")
    cfg = tiny_bottom_up_config("sr", name="tiny_bu")
    cfg_path = d / "tiny_bu.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    torch.manual_seed(0)
    ckpt = d / "tiny_bu.pth"
    torch.save({"state_dict": build_model(cfg, init=False).state_dict()}, ckpt)
    out = d / "out"
    base = ["export", str(cfg_path), "--checkpoint", str(ckpt), "--out-dir", str(out), "--shape-profile", PROFILE,
            "--no-simplify"]
    assert main(base) == 0
    assert main(base + ["--decode", "--name", "tiny_bu_dec"]) == 0
    return dict(cfg=cfg_path, ckpt=ckpt, out=out, raw=out / "tiny_bu.fp32.onnx", dec=out / "tiny_bu_dec.fp32.onnx")


def test_export_cli_writes_dynamic_bottom_up_graphs(tiny: dict[str, Path]) -> None:
    meta = read_metadata(tiny["raw"])
    assert meta["bottom_up"] is True and meta["decode"] is False and meta["output_kind"] == "heatmaps"
    assert (meta["shape_min"], meta["shape_opt"], meta["shape_max"]) == ([1, 3, 64, 64], [1, 3, 64, 128],
                                                                         [4, 3, 128, 128])  # bottom-up batch 1,1,4
    assert (meta["height_max"], meta["width_opt"]) == (128, 128)
    dec = read_metadata(tiny["dec"])
    assert dec["decode"] is True and dec["output_kind"] == "bottomup_candidates" and dec["flip"] is True
    report = json.loads((tiny["out"] / "tiny_bu.export.json").read_text())
    assert report["shape_profile"] == {"min": [64, 64], "opt": [128, 64], "max": [128, 128]}
    assert set(report["parity"]) == {"64x64", "128x64"}
    assert all(v["max_abs"] < 1e-3 for size in report["parity"].values() for v in size.values())


@pytest.mark.parametrize("extra", [["--precision", "fp16"], ["--input-size", "128x128"], ["--no-flip"],
                                   ["--flip"], ["--shape-profile", "64x64,32x32,128x128"]])
def test_export_cli_refuses_options_without_bottom_up_meaning(tiny: dict[str, Path], tmp_path: Path,
                                                              extra: list[str], capsys) -> None:
    assert main(["export", str(tiny["cfg"]), "--out-dir", str(tmp_path / "x")] + extra) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_cli_top_down_refuses_shape_profile(tmp_path: Path) -> None:
    assert main(["export", "res50_coco_256x192", "--out-dir", str(tmp_path), "--shape-profile", PROFILE]) == 2


def test_parity_cli_bottom_up(tiny: dict[str, Path], coco_sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "parity.json"
    md = tmp_path / "parity.md"
    args = ["parity", str(tiny["cfg"]), "--checkpoint", str(tiny["ckpt"]), "--models", str(tiny["raw"]),
            str(tiny["dec"]), "--ann", str(coco_sample["ann"]), "--images", str(coco_sample["images"]), "--quiet",
            "--threads", "1", "--json", str(out), "--markdown", str(md), "--max-ap-drop", "0.01"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "bottom-up" and report["images"] == 4 and report["failed"] == []
    assert [m["name"] for m in report["models"]] == ["tiny_bu.fp32.onnx", "tiny_bu_dec.fp32.onnx"]
    assert report["models"][1]["output_kind"] == "bottomup_candidates"
    for m in report["models"]:
        assert abs(m["delta"]["AP"]) <= 0.01 and m["output_error"]["max_abs"] < 1e-3
    assert "Parity (bottom-up)" in md.read_text()
    assert main(args[:-2] + ["--det", str(coco_sample["det"])]) == 2  # no person boxes in bottom-up


def test_bench_cli_bottom_up(tiny: dict[str, Path], tmp_path: Path) -> None:
    common = ["--warmup-s", "0", "--duration-s", "0.05", "--threads", "1", "--quiet"]
    for model, backend in ((tiny["dec"], "onnxruntime"), (tiny["cfg"], "torch")):
        out = tmp_path / f"{backend}.json"
        assert main(["bench", str(model), "--backend", backend, "--input-size", "128x64", "--json", str(out)]
                    + common) == 0
        rows = json.loads(out.read_text())
        assert [r["batch"] for r in rows] == [1]  # bottom-up default: batch 1
    assert main(["bench", str(tiny["raw"]), "--backend", "onnxruntime", "--end-to-end"] + common) == 2
    assert main(["bench", "res50_coco_256x192", "--input-size", "128x64"] + common) == 2
