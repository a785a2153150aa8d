"""``srpose export`` / ``bench`` / ``parity`` on exported files, one code path for both tasks: the report and the
card, the batch profile (the task's default, or exactly ``--batch``), bottom-up dynamic graphs and FP16, options
refused before any work, failures leaving nothing behind, bench of an exported file, bottom-up parity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _export_utils import BU_PROFILE, TASKS, cached_export, tiny_bottom_up_config, tiny_config, tiny_model

from srpose import save_checkpoint
from srpose.card import read_card
from srpose.cli import main as cli_main
from srpose.export.onnx_export import read_metadata

pytestmark = pytest.mark.usefixtures("one_thread")  # the bottom-up models are large for 2 cores


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Per task: a tiny SR-head config as a .json file and its checkpoint (top-down: tiny_hrnet_sr, the project's
    format; bottom-up: tiny_bu, a plain ``{"state_dict": ...}``)."""
    d = tmp_path_factory.mktemp("cli")
    out = {}
    for task, cfg in (("top-down", tiny_config("hrnet", "sr")), ("bottom-up", tiny_bottom_up_config("sr", "tiny_bu"))):
        cfg_path = d / f"{cfg.name}.json"
        cfg_path.write_text(json.dumps(cfg.to_dict()))
        ckpt = d / f"{cfg.name}.pth"
        if task == "top-down":
            save_checkpoint(tiny_model(cfg), ckpt)
        else:
            torch.save({"state_dict": tiny_model(cfg).state_dict()}, ckpt)
        out[task] = dict(cfg=cfg_path, ckpt=ckpt, name=cfg.name)
    return out


@pytest.fixture(scope="module")
def bu(tiny: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny bottom-up model through ``srpose export``: raw FP32 + FP16 graphs, and a decoded FP32 one."""
    t = tiny["bottom-up"]
    out = tmp_path_factory.mktemp("bu_cli") / "out"
    base = ["export", str(t["cfg"]), "--checkpoint", str(t["ckpt"]), "--out-dir", str(out), "--shape-profile",
            BU_PROFILE, "--no-simplify"]
    assert cli_main(base + ["--precision", "fp32", "fp16"]) == 0
    assert cli_main(base + ["--decode", "--name", "tiny_bu_dec"]) == 0
    return dict(out=out, raw=out / "tiny_bu.fp32.onnx", fp16=out / "tiny_bu.fp16.onnx",
                dec=out / "tiny_bu_dec.fp32.onnx", **t)


def _fails(argv: list[str], capsys: pytest.CaptureFixture, match: str) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err


# ------------------------------------------------------------------------------------------- export: reports
def test_cli_export_writes_files_and_complete_report(tiny: dict, tmp_path: Path, coco_sample: dict,
                                                      capsys: pytest.CaptureFixture) -> None:
    t = tiny["top-down"]
    out = tmp_path / "new" / "out"
    rc = cli_main(["export", str(t["cfg"]), "--checkpoint", str(t["ckpt"]), "--out-dir", str(out), "--precision",
                   "fp32", "fp16", "int8", "--batch", "1,2,4", "--calib-ann", str(coco_sample["ann"]),
                   "--calib-images", str(coco_sample["images"]), "--calib-num", "6", "--calib-batch", "3",
                   "--parity-crops", "4"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "tiny_hrnet_sr.export.json").read_text())
    assert [f["precision"] for f in rep["files"]] == ["fp32", "fp16", "int8"] and rep["task"] == "top-down"
    for f in rep["files"]:
        assert (out / f["file"]).stat().st_size == f["bytes"] > 0
        assert f["inputs"] == [dict(name="input", shape=["batch", 3, 64, 64], dtype="float32")]
        assert f["outputs"] == [dict(name="heatmaps", shape=["batch", 17, 64, 64], dtype="float32")]
        assert set(f["parity"]) == {"random", "real"}  # {group: {output name: errors}}
        for group in ("random", "real"):
            assert set(f["parity"][group]["heatmaps"]) >= {"max_abs", "rel_l2", "cosine"}
        assert read_card(out / f["file"]).precision == f["precision"]
    fp32 = rep["files"][0]["parity"]
    assert fp32["random"]["heatmaps"]["rel_l2"] < 1e-5 and fp32["real"]["heatmaps"]["cosine"] > 0.99999
    assert rep["files"][2]["int8"]["calibration_crops"] == 6 and rep["parity_inputs"] == dict(random=4, real=4)
    assert rep["batch"] == dict(min=1, opt=2, max=4) and len(rep["checkpoint_sha256"]) == 64
    card = read_card(out / "tiny_hrnet_sr.fp32.onnx")
    assert card.checkpoint_sha256 == rep["checkpoint_sha256"] and card.batch == (1, 2, 4)
    # a re-export reuses the calibration cache
    rc = cli_main(["export", str(t["cfg"]), "--checkpoint", str(t["ckpt"]), "--out-dir", str(out), "--precision",
                   "int8", "--batch", "1,2,4", "--calib-ann", str(coco_sample["ann"]), "--calib-images",
                   str(coco_sample["images"]), "--calib-num", "6", "--calib-batch", "3", "--parity-crops", "0"])
    assert rc == 0
    assert json.loads((out / "tiny_hrnet_sr.export.json").read_text())["files"][0]["int8"]["cache_hit"] is True


def test_cli_export_writes_dynamic_bottom_up_graphs_in_fp32_and_fp16(bu: dict) -> None:
    raw, fp16, dec = read_card(bu["raw"]), read_card(bu["fp16"]), read_card(bu["dec"])
    assert raw.task == "bottom-up" and raw.decode is False and raw.output_kind == "heatmaps"
    assert raw.codec["name"] == "associative_embedding" and raw.precision == "fp32"
    assert raw.input_shapes() == ((1, 3, 64, 64), (1, 3, 64, 128), (4, 3, 128, 128))  # bottom-up batch 1,1,4
    meta = read_metadata(bu["raw"])
    assert (meta["height_max"], meta["width_opt"]) == (128, 128)
    assert dec.decode is True and dec.output_kind == "bottomup_candidates" and dec.flip is True
    assert fp16.precision == "fp16" and fp16.hw_profile == raw.hw_profile and "fp16" in fp16.precision_details
    report = json.loads((bu["out"] / "tiny_bu.export.json").read_text())
    assert report["task"] == "bottom-up" and report["batch"] == dict(min=1, opt=1, max=4)
    assert report["shape_profile"] == [[64, 64], [128, 64], [128, 128]]  # W x H min, opt, max
    assert [f["precision"] for f in report["files"]] == ["fp32", "fp16"]
    for f in report["files"]:
        assert f["inputs"] == [dict(name="input", shape=["batch", 3, "height", "width"], dtype="float32")]
        assert set(f["parity"]) == {"64x64", "128x64"} and all(set(g) == {"outputs"} for g in f["parity"].values())
    fp32_parity, fp16_parity = (f["parity"] for f in report["files"])
    assert all(v["max_abs"] < 1e-3 for size in fp32_parity.values() for v in size.values())
    assert all(0 < size["outputs"]["rel_l2"] < 5e-3 for size in fp16_parity.values())  # float16, emulated
    dec_report = json.loads((bu["out"] / "tiny_bu_dec.export.json").read_text())
    assert dec_report["output"] == "bottomup_candidates"
    assert all(set(g) == {"heatmaps", "tags", "candidates"} for g in dec_report["files"][0]["parity"].values())


@pytest.mark.parametrize("task,extra,want", [
    ("bottom-up", ["--batch", "1,8,32"], (1, 8, 32)),  # was silently replaced by 1,1,4
    ("bottom-up", [], (1, 1, 4)),
    ("top-down", [], (1, 32, 64)),
    ("top-down", ["--batch", "2"], (2, 2, 2)),
])
def test_cli_export_stores_the_batch_profile(task: str, extra: list[str], want: tuple, tiny: dict,
                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--batch`` is stored as given for either task; without it, the task's default."""
    t = tiny[task]
    out = tmp_path / "out"
    argv = ["export", str(t["cfg"]), "--checkpoint", str(t["ckpt"]), "--out-dir", str(out), "--no-simplify"]
    if task == "bottom-up":
        argv += ["--shape-profile", BU_PROFILE]
    assert cli_main(argv + extra) == 0, capsys.readouterr().err
    card = read_card(out / f"{t['name']}.fp32.onnx")
    assert card.batch == want and [s[0] for s in card.input_shapes()] == list(want)
    meta = read_metadata(out / f"{t['name']}.fp32.onnx")
    assert (meta["batch_min"], meta["batch_opt"], meta["batch_max"]) == want
    report = json.loads((out / f"{t['name']}.export.json").read_text())
    assert report["batch"] == dict(zip(("min", "opt", "max"), want))


def test_cli_export_flip_flags_of_a_decoded_bottom_up_graph(bu: dict, tmp_path: Path) -> None:
    """One ``--flip/--no-flip`` for both tasks: a decoded bottom-up graph folds the flip test in by default (the
    config's flip_test, see the ``bu`` fixture) and leaves it out with ``--no-flip``."""
    assert read_card(bu["dec"]).flip is True
    out = tmp_path / "out"
    assert cli_main(["export", str(bu["cfg"]), "--checkpoint", str(bu["ckpt"]), "--out-dir", str(out),
                     "--shape-profile", BU_PROFILE, "--no-simplify", "--decode", "--no-flip"]) == 0
    card = read_card(out / "tiny_bu.fp32.onnx")
    assert card.decode is True and card.flip is False and card.output_kind == "bottomup_candidates"


# ------------------------------------------------------------------------------------------- export: refusals
@pytest.mark.parametrize("task,extra,match", [
    ("bottom-up", ["--precision", "int8"], "bottom-up models export fp32, fp16 (INT8 calibration of bottom-up"),
    ("bottom-up", ["--calib-ann", "a.json", "--calib-images", "."], "bottom-up models have no INT8 export"),
    ("bottom-up", ["--input-size", "128x128"], "--input-size does not apply to bottom-up"),
    ("bottom-up", ["--flip"], "needs --decode"),
    ("bottom-up", ["--shape-profile", "64x64,32x32,128x128"], "multiples of 64"),
    ("top-down", ["--shape-profile", BU_PROFILE], "add --image-input to bound its image sizes"),
    ("top-down", ["--image-batch", "1,2,4"], "--image-batch applies to image-input graphs"),
    ("top-down", ["--image-input", "--decode"], "--image-input graphs always decode"),
    ("top-down", ["--image-input", "--opset", "15"], "--image-input needs --opset 16"),
    ("top-down", ["--image-input", "--shape-profile", "64x64,32x32,128x128"], "min <= opt <= max"),
    ("bottom-up", ["--image-input", "--image-batch", "1,2,4"], "bottom-up ones take one image a call"),
    ("top-down", ["--calib-ann", "a.json"], "give both --calib-ann and --calib-images"),
    ("top-down", ["--opset", "11"], "--opset 11 is not supported"),
    ("bottom-up", ["--opset", "11"], "--opset 11 is not supported"),
    ("top-down", ["--name", "a/b"], "must be a plain file name"),
    ("bottom-up", ["--name", "a/b"], "must be a plain file name"),
])
def test_cli_export_refuses_bad_options(task: str, extra: list[str], match: str, tiny: dict, tmp_path: Path,
                                        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import srpose.checkpoint

    def no_work(*a, **k):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr(srpose.checkpoint, "build_with_weights", no_work)  # refused before any work
    _fails(["export", str(tiny[task]["cfg"]), "--out-dir", str(tmp_path / "x")] + extra, capsys, match)
    assert not (tmp_path / "x").exists()


def test_cli_export_bad_batch_is_an_argument_error(tiny: dict, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["export", str(tiny["bottom-up"]["cfg"]), "--out-dir", "x", "--batch", "8,1,32"])
    assert e.value.code == 2 and "1 <= min <= opt <= max" in capsys.readouterr().err


@pytest.mark.parametrize("task", TASKS)
def test_cli_export_bad_inputs_leave_nothing(task: str, tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import srpose.checkpoint

    monkeypatch.setattr(srpose.checkpoint, "find_matching_presets", lambda sd: [])  # skip the slow preset scan
    cfg, out = str(tiny[task]["cfg"]), tmp_path / "out"
    other = tiny["bottom-up" if task == "top-down" else "top-down"]["ckpt"]  # the other task's weights
    _fails(["export", cfg, "--checkpoint", str(other), "--out-dir", str(out)], capsys, "does not fit")
    _fails(["export", cfg, "--checkpoint", str(tmp_path / "missing.pth"), "--out-dir", str(out)], capsys,
           "does not exist")
    (tmp_path / "afile").write_text("x")
    _fails(["export", cfg, "--out-dir", str(tmp_path / "afile" / "sub")], capsys, "cannot create")
    if task == "top-down":
        _fails(["export", "res50_srpose_coco_256x19", "--out-dir", str(out)], capsys, "unknown model")
        empty = tmp_path / "noimages"
        empty.mkdir()
        _fails(["export", cfg, "--out-dir", str(out), "--precision", "int8", "--calib-ann", cfg, "--calib-images",
                str(empty)], capsys, "holds no images")
        _fails(["export", cfg, "--out-dir", str(out), "--precision", "int8"], capsys, "needs calibration data")
    assert not out.exists()


@pytest.mark.parametrize("task", TASKS)
def test_cli_export_failing_midway_publishes_nothing(task: str, tiny: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are staged and published only once every graph and its parity check succeeded."""
    import srpose.export.model_export as model_export

    real = model_export.parity_report

    def broken(path, *a, **k):  # the FP32 graph passes, its FP16 conversion breaks
        if ".fp16." in Path(path).name:
            raise RuntimeError(f"parity of {Path(path).name} broke")
        return real(path, *a, **k)

    monkeypatch.setattr(model_export, "parity_report", broken)
    t = tiny[task]
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{t['name']}.export.json").write_text("previous report")
    argv = ["export", str(t["cfg"]), "--checkpoint", str(t["ckpt"]), "--out-dir", str(out), "--no-simplify",
            "--precision", "fp32", "fp16"]
    _fails(argv, capsys, f"parity of {t['name']}.fp16.onnx broke")
    assert sorted(p.name for p in out.iterdir()) == [f"{t['name']}.export.json"]
    assert (out / f"{t['name']}.export.json").read_text() == "previous report"


# ------------------------------------------------------------------------------------------- bench, parity
@pytest.mark.parametrize("task", TASKS)
def test_bench_cli_times_an_exported_file(task: str, bu: dict, tmp_path: Path) -> None:
    path = bu["dec"] if task == "bottom-up" else cached_export("hrnet", "sr")[0]
    common = ["--warmup-s", "0", "--duration-s", "0.05", "--threads", "1", "--quiet"]
    out = tmp_path / "rows.json"
    assert cli_main(["bench", str(path), "--backend", "onnxruntime", "--json", str(out)] + common) == 0
    rows = json.loads(out.read_text())
    # the task's default: 1 bottom-up; 1, 8, 32 top-down, within the graph's profile (1..4 here), and its max
    assert [r["batch"] for r in rows] == ([1] if task == "bottom-up" else [1, 4])
    assert all(r["backend"] == "onnxruntime-fp32" and r["input_shape"][1:] == [3, 64, 64] for r in rows)
    # the backend follows from the file; `--model FILE` as in `srpose eval`
    for argv in (["bench", str(path)], ["bench", "--model", str(path)]):
        out.unlink()
        assert cli_main(argv + ["--batch", "1", "--json", str(out)] + common) == 0
        assert json.loads(out.read_text())[0]["backend"] == "onnxruntime-fp32"
    e2e = ["bench", str(path), "--backend", "onnxruntime", "--end-to-end", "--batch", "2", "--json", str(out)]
    if task == "top-down":  # crops + decoding timed too
        assert cli_main(e2e + common) == 0 and json.loads(out.read_text())[0]["end_to_end"] is True
    else:  # whole images: no person crops to time
        assert cli_main(e2e + common) == 2


def test_bench_cli_bottom_up_sizes_and_torch(bu: dict, tiny: dict, tmp_path: Path) -> None:
    common = ["--warmup-s", "0", "--duration-s", "0.05", "--threads", "1", "--quiet"]
    for model, backend in ((bu["dec"], "onnxruntime"), (bu["cfg"], "torch")):
        out = tmp_path / f"{backend}.json"
        assert cli_main(["bench", str(model), "--backend", backend, "--input-size", "128x64", "--json", str(out)]
                        + common) == 0
        rows = json.loads(out.read_text())
        assert [r["batch"] for r in rows] == [1] and rows[0]["input_shape"] == [1, 3, 64, 128]  # batch 1, W x H
    # a fixed-size (top-down) model has no --input-size
    assert cli_main(["bench", str(tiny["top-down"]["cfg"]), "--input-size", "128x64"] + common) == 2
