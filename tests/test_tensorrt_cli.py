"""``srpose build`` (srpose/cli/build.py) on the fake TensorRT: argv -> BuildOptions -> build_engine -> report."""
from __future__ import annotations

import argparse
import json

import pytest
from _fake_trt import make_onnx, tiny_card

from srpose.card import read_card, sidecar_path
from srpose.cli import build as cli_build
from srpose.engines.tensorrt import _compat


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    cli_build.add_arguments(p)
    return p


def test_arguments_map_to_build_options():
    args = _parser().parse_args(["m.onnx", "--out", "m.engine", "--batch", "1,4,8", "--legacy-int8",
                                 "--workspace", "2", "--opt-level", "5", "--device", "1", "--skip-onnx-check"])
    o = cli_build.options_from_args(args)
    assert (o.batch, o.legacy, o.calib_cache, o.workspace_gib, o.opt_level, o.device, o.check_onnx) == \
        ((1, 4, 8), "int8", "m.engine.calib", 2.0, 5, 1, False)
    assert _parser().parse_args(["m.onnx", "--out", "m.engine", "--batch", "8"]).batch == (8, 8, 8)


def test_bad_batch_names_the_option_and_the_fix(capsys):
    for bad, why in (("8,4,1", "1 <= min <= opt <= max"), ("1,x,3", "MIN,OPT,MAX integers")):
        with pytest.raises(SystemExit):
            _parser().parse_args(["m.onnx", "--out", "m.engine", "--batch", bad])
        err = capsys.readouterr().err
        assert "--batch" in err and why in err


def test_without_tensorrt_clear_error(monkeypatch):
    monkeypatch.setattr(_compat, "trt", None)
    monkeypatch.setattr(_compat, "TRT_IMPORT_ERROR", ImportError("No module named 'tensorrt'"))
    args = _parser().parse_args(["m.onnx", "--out", "m.engine", "--legacy-fp16"])
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        cli_build.run(args)


def test_run_builds_and_reports(tmp_path, fake, capsys):
    state, install = fake
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=True)
    out = tmp_path / "cmd.engine"
    assert cli_build.run(_parser().parse_args([str(onnx_path), "--out", str(out), "--batch", "2"])) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}") and "fp16, TensorRT 10.16.1.11, Fake GPU sm 8.9" in line
    assert "batch 2..2 (opt 2)" in line
    assert read_card(out).engine["profile"]["max"][0] == 2
    assert json.loads(sidecar_path(out).read_text())["engine"]["build"]["opt_level"] == 3


def test_onnx_check_error_lists_node_and_op(tmp_path, fake):
    import onnx
    from onnx import helper

    path = make_onnx(tmp_path / "m.onnx", card=True)
    m = onnx.load(str(path))
    m.graph.node[1].CopyFrom(helper.make_node("Relu", ["c"], ["heatmaps"], name="my_relu", domain="com.acme"))
    onnx.save(m, str(path))
    args = _parser().parse_args([str(path), "--out", str(tmp_path / "m.engine")])
    with pytest.raises(ValueError, match=r"node 'my_relu' \(Relu\): custom domain 'com.acme'"):
        cli_build.run(args)
    assert cli_build.run(_parser().parse_args([str(path), "--out", str(tmp_path / "m.engine"),
                                               "--skip-onnx-check"])) == 0


def test_legacy_int8_needs_calibration_and_is_refused_on_11(tmp_path, fake, monkeypatch):
    state, install = fake
    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=tiny_card(precision="fp32"))
    out = tmp_path / "cmd.engine"
    with pytest.raises(ValueError, match="--calib-ann"):
        cli_build.run(_parser().parse_args([str(onnx_path), "--out", str(out), "--legacy-int8"]))
    args = _parser().parse_args([str(onnx_path), "--out", str(out), "--legacy-int8", "--calib-ann", "a.json",
                                 "--calib-images", str(tmp_path)])
    with pytest.raises(ValueError, match="no srpose card with the model config"):  # tiny_card has no config
        cli_build.run(args)
    install(version="11.4.0.106", weak=False)
    called = []
    monkeypatch.setattr(cli_build, "calibration_batches", lambda *a: called.append(a) or [])
    with pytest.raises(RuntimeError, match="srpose export --precision int8"):
        cli_build.run(args)
    assert called == []  # refused before reading calibration images


def test_build_wraps_top_down_crop_graphs_into_image_graphs(tmp_path, fake, capsys):
    """#20: srpose build makes the image-to-keypoints engine of a top-down crop graph unless --crop-input."""
    from _export_utils import cached_export

    src, _, _ = cached_export("hrnet", "srpose")
    out = tmp_path / "m.engine"
    assert cli_build.run(_parser().parse_args([str(src), "--out", str(out), "--batch", "1,8,16"])) == 0
    text = capsys.readouterr().out
    assert "image-to-keypoints graph" in text and "persons 1..16 (opt 8)" in text
    card = read_card(out)
    assert card.image_input and card.flip and [i["name"] for i in card.engine["inputs"]] == ["images", "boxes",
                                                                                             "box_image"]
    assert sorted(card.engine["profile"]["inputs"]) == ["box_image", "boxes", "images"]
    assert card.engine["onnx"]["path"] == str(tmp_path / "m.image.onnx") and (tmp_path / "m.image.onnx").is_file()
    crop = tmp_path / "c.engine"
    assert cli_build.run(_parser().parse_args([str(src), "--out", str(crop), "--crop-input"])) == 0
    assert not read_card(crop).image_input and not (tmp_path / "c.image.onnx").exists()
