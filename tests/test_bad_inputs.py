"""Bad inputs and faults, one row per input class, through the `srpose` command as a user meets them (#24).

Every row expects what the README's "Errors" section promises: exit status 2 (130 for Ctrl-C), one line
`srpose COMMAND: error: ...` naming the file, key or value and the fix, no traceback, and nothing half-written in
the output folder. Classes: checkpoints, graphs, cards, annotations, detections, images, options, output paths,
interrupts; served requests and the server are tested in test_triton_repository.py / test_triton_server.py and at
the end of this module (the detections validator the offline and the served paths share, `srpose serve`'s ports,
its empty repositories and its signal handling).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _export_utils import cached_export, tiny_config, tiny_model

from conftest import shared_path
from srpose import save_checkpoint
from srpose.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The files the rows use: a tiny model (config, checkpoints good and bad), graphs, the COCO sample and damaged
    copies of its annotations, detections and images."""
    coco = shared_path("data", "coco")
    d = tmp_path_factory.mktemp("bad")
    cfg = tiny_config("hrnet", "sr")
    (d / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    model = tiny_model(cfg)
    save_checkpoint(model, d / "good.pth")
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] = float("nan")
    save_checkpoint(model, d / "nan.pth")
    (d / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    torch.save(torch.nn.Linear(2, 2), d / "module.pth")
    (d / "empty.pth").write_bytes(b"")
    ann = json.loads((coco / "test_coco.json").read_text())
    (d / "dog.json").write_text(json.dumps({**ann, "categories": [{"id": 18, "name": "dog"}],
                                            "annotations": [{**a, "category_id": 18} for a in ann["annotations"]]}))
    dets = json.loads((coco / "test_coco_det_AP_H_56.json").read_text())
    for name, change in (("nan_score", dict(score=float("nan"))), ("neg_box", dict(bbox=[10, 10, -5, 40])),
                         ("outside", dict(bbox=[900, 10, 50, 40]))):
        (d / f"{name}.json").write_text(json.dumps([{**dets[0], **change}, *dets[1:]]))
    for name, damage in (("trunc", lambda b: b[: len(b) // 3]), ("zero", lambda b: b""),
                         ("random", lambda b: bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)))):
        (d / name).mkdir()
        for f in coco.glob("*.jpg"):
            shutil.copy(f, d / name / f.name)
        first = d / name / "000000000785.jpg"
        first.write_bytes(damage(first.read_bytes()))
    (d / "afile").write_text("a file, not a folder")
    (d / "adir").mkdir()
    graph = cached_export("hrnet", "sr")[0]
    flip_graph = cached_export("hrnet", "sr", flip=True)[0]
    import onnx

    bare = onnx.load(str(graph))
    del bare.metadata_props[:]
    onnx.save(bare, str(d / "nocard.onnx"))
    broken = onnx.load(str(graph))
    for prop in broken.metadata_props:
        prop.value = "{not json" if prop.key == "input_size" else prop.value
    onnx.save(broken, str(d / "badcard.onnx"))
    return dict(d=d, cfg=d / "cfg.json", coco=coco, ann=coco / "test_coco.json", images=coco,
                det=coco / "test_coco_det_AP_H_56.json", graph=graph, flip_graph=flip_graph)


def _argv(row: list[str], ws: dict[str, Any], out: Path) -> list[str]:
    keys = {k: str(v) for k, v in ws.items()} | {"out": str(out), "d": str(ws["d"])}
    return [a.format(**keys) for a in row]


EVAL = ["eval", "{cfg}", "--checkpoint", "{d}/good.pth", "--ann", "{ann}", "--images", "{images}", "--quiet"]
GT = ["--gt-bbox", "--workers", "0"]

#: (input class, argv, the message's words); every row exits 2 with one error line and writes nothing under {out}
ROWS = [
    # checkpoints
    ("checkpoint", ["export", "{cfg}", "--checkpoint", "{d}/nan.pth", "--out-dir", "{out}", "--no-simplify"],
     "weight 'backbone.conv1.weight' holds 1 of 1728 values that are NaN or infinite"),
    ("checkpoint", [*EVAL[:3], "{d}/nan.pth", *EVAL[4:], *GT], "NaN or infinite"),
    ("checkpoint", [*EVAL[:3], "{d}/random.pth", *EVAL[4:], *GT], "is corrupt or not a PyTorch checkpoint file"),
    ("checkpoint", [*EVAL[:3], "{d}/module.pth", *EVAL[4:], *GT],
     "holds pickled Python objects (e.g. torch.nn.modules.linear.Linear), which srpose does not load"),
    ("checkpoint", [*EVAL[:3], "{d}/empty.pth", *EVAL[4:], *GT], "is empty (0 bytes)"),
    # graphs
    ("graph", ["eval", "--model", "{d}/afile", "--ann", "{ann}", "--images", "{images}", "--gt-bbox"],
     "expected an .onnx graph or a TensorRT .engine/.plan"),
    ("graph", ["parity", "--models", "{d}/nosuch.onnx", "--ann", "{ann}", "--images", "{images}", "--gt-bbox"],
     "nosuch.onnx does not exist"),
    ("graph", ["bench", "{graph}", "--batch", "100000", "--quiet"], "outside the graph's profile 1..4"),
    ("graph", ["eval", "--model", "{flip_graph}", "--ann", "{ann}", "--images", "{images}", "--no-flip", *GT],
     "--no-flip cannot be honoured: tiny_hrnet_sr_flip.onnx has the flip test in its graph"),
    ("graph", ["export", "{cfg}", "--out-dir", "{out}", "--input-size", "70x100", "--no-simplify"],
     "cannot run at the input size 70x100 (The size of tensor"),
    # cards
    ("card", ["eval", "--model", "{d}/nocard.onnx", "--ann", "{ann}", "--images", "{images}", *GT],
     "nocard.onnx has no srpose card (input size, normalisation, codec): export it with `srpose export`"),
    ("card", ["eval", "--model", "{d}/badcard.onnx", "--ann", "{ann}", "--images", "{images}", *GT],
     "badcard.onnx: the srpose card is damaged (ValueError: invalid literal for int()"),
    # annotations
    ("annotation", [*EVAL[:5], "{d}/dog.json", *EVAL[6:], *GT], "has no person category (id 1), which the keypoint "
                                                                "results are scored as; its categories: 18 'dog'"),
    ("annotation", [*EVAL[:5], "{d}/good.pth", *EVAL[6:], *GT], "is not valid JSON"),
    # detections
    ("detections", [*EVAL, "--det", "{d}/nan_score.json", "--workers", "0"],
     "entry 0 (image_id 785) (x, y, w, h, score) = (277.118, 45.6997, 225.091, 333.56, nan) must be finite"),
    ("detections", [*EVAL, "--det", "{d}/neg_box.json", "--workers", "0"],
     "= (10, 10, -5, 40, 0.999973) must be finite with w, h > 0 (and a finite score): fix or drop that detection"),
    ("detections", [*EVAL, "--det", "{d}/outside.json", "--workers", "0"], "lies outside the 640x425 image"),
    # images
    ("image", [*EVAL[:7], "{d}/trunc", *EVAL[8:], *GT], "cannot decode image '{d}/trunc/000000000785.jpg' "
                                                         "(44558 bytes): the file is empty, truncated or not an image"),
    ("image", [*EVAL[:7], "{d}/zero", *EVAL[8:], "--gt-bbox", "--workers", "2"], "000000000785.jpg' (0 bytes)"),
    ("image", [*EVAL[:7], "{d}/random", *EVAL[8:], "--gt-bbox", "--workers", "2"], "(4000 bytes): the file is"),
    ("image", [*EVAL[:7], "{ann}", *EVAL[8:], *GT], "is a file, not a folder: pass the folder that holds the images"),
    # options: refused while parsing or before any work
    ("option", ["quantize", "{cfg}", "--out-dir", "{out}", "--max-ap-drop", "0.01", "--calib-ann", "{ann}",
                "--calib-images", "{images}", "--val-ann", "{ann}", "--val-images", "{images}", "--threads", "-2"],
     "argument --threads: must be >= 1, got -2"),
    ("option", ["pipeline", "{cfg}", "--checkpoint", "{d}/good.pth", "--ann", "{ann}", "--images", "{images}",
                "--out", "{out}", "--max-ap-drop", "-1"], "--max-ap-drop must be >= 0"),
    ("option", [*EVAL, *GT, "--batch", "0"], "argument --batch: must be >= 1, got 0"),
    ("option", ["bench", "{graph}", "--duration-s", "nan"], "argument --duration-s: must be a finite number > 0"),
    ("option", ["serve", "{d}/adir", "--http-port", "-5"], "argument --http-port: must be >= 0"),
    # output paths: checked before the work
    ("output path", [*EVAL, *GT, "--json", "{d}/adir"], "--json {d}/adir is a folder: name a file"),
    ("output path", [*EVAL, *GT, "--results", "{out}/r.json"], "its folder {out} does not exist"),
    ("output path", ["train", "{cfg}", "--train-ann", "{ann}", "--train-images", "{images}", "--work-dir",
                     "{d}/afile/w"], "cannot create --work-dir {d}/afile/w: {d}/afile is a file, not a folder"),
    ("output path", ["triton", "{graph}", "--out", "{d}/afile/r"], "{d}/afile is a file, not a folder"),
    ("output path", ["parity", "{cfg}", "--models", "{graph}", "--ann", "{ann}", "--images", "{images}",
                     "--gt-bbox", "--plot", "{d}/adir"], "--plot {d}/adir is a folder"),
    ("output path", ["generate", "--out", "{d}/afile", "--num-images", "1"], "--out {d}/afile exists and is not a folder"),
    ("output path", ["generate", "--video", "--out", "{d}/afile/v"], "{d}/afile is a file, not a folder"),
]


@pytest.mark.parametrize("kind, row, want", ROWS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(ROWS)])
def test_bad_input_gets_one_clear_line(kind: str, row: list[str], want: str, ws: dict, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = _argv(row, ws, out)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: the option is refused while parsing
        code = e.code
    err = capsys.readouterr().err
    want = want.format(d=ws["d"], out=out)
    assert code == 2 and want in err, (argv, err[-3000:])
    assert "Traceback" not in err and "\x1b[" not in err and "weights_only" not in err, err
    assert sum("error:" in line for line in err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


# ------------------------------------------------------------------------------------------------ images
def test_skip_bad_images_leaves_them_out_and_counts_them(ws: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """--skip-bad-images: the truncated image is named and counted in the report; the others are scored as if it
    were not in the annotation file."""
    argv = _argv([*EVAL[:7], "{d}/trunc", *EVAL[8:], *GT, "--json", "{out}.json", "--skip-bad-images"], ws,
                 tmp_path / "a")
    with pytest.warns(UserWarning, match=r"left out 1 image\(s\) that cannot be decoded: 000000000785.jpg"):
        assert main(argv) == 0
    got = json.loads((tmp_path / "a.json").read_text())
    assert got["bad_images"] == ["000000000785.jpg"] and got["num_images"] == 3
    from srpose.eval.evaluator import _scored_annotations
    from srpose.tasks import task_for

    ds = task_for(str(ws["cfg"])).dataset(ws["ann"], ws["images"], gt_bbox=True)
    from srpose.data.checks import without_bad_images

    kept, bad = without_bad_images(ds)
    assert bad == [] and kept is ds and _scored_annotations(ds) == str(ws["ann"])
    full = json.loads(ws["ann"].read_text())
    assert got["num_persons"] == sum(1 for r in ds.records if r["image_file"] != "000000000785.jpg")
    trunc = task_for(str(ws["cfg"])).dataset(ws["ann"], ws["d"] / "trunc", gt_bbox=True)
    kept, bad = without_bad_images(trunc, workers=2)
    scored = _scored_annotations(kept)
    assert bad == ["000000000785.jpg"] and len(scored["images"]) == len(full["images"]) - 1
    assert all(a["image_id"] != 785 for a in scored["annotations"])


def test_non_finite_json_is_refused_and_nothing_written(tmp_path: Path) -> None:
    from srpose._io import atomic_write_json, first_nonfinite

    with pytest.raises(ValueError, match=r"files\[1\]\.parity\.rel_l2 = inf is not a finite number"):
        atomic_write_json(tmp_path / "r.json", {"files": [{}, {"parity": {"rel_l2": float("inf")}}]})
    assert not list(tmp_path.iterdir())
    assert first_nonfinite({"a": np.array([[1.0, np.nan]])}) == "a[0][1] = nan"
    assert first_nonfinite({"a": [1, 2.5, "x", None, np.float32(3)]}) is None


def test_export_parity_fails_on_non_finite_outputs(ws: dict, tmp_path: Path) -> None:
    """A model whose weights hold a NaN (given as a module: no checkpoint to refuse) fails its parity check, naming
    the file and the output; nothing is published and no JSON holds NaN or Infinity."""
    from srpose.export import ExportOptions, export_model

    cfg = tiny_config("hrnet", "sr")
    model = tiny_model(cfg)
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"parity check of tiny_hrnet_sr.fp32.onnx, output 'heatmaps' on the random "
                                         r"inputs: the reference \(PyTorch\) holds non-finite values"):
        export_model(cfg, ExportOptions(out_dir=tmp_path / "o", simplify=False), model=model)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ output faults
def test_disk_full_publishes_nothing_and_says_so(ws: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while publishing the second file of an export: the earlier export stays as it was (no FP32 graph of
    this one, no report), one line names the full disk. The same on `eval --results`."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny_hrnet_sr.export.json").write_text("previous report")
    real, calls = shutil.copyfile, []

    def full(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", full)
    argv = ["export", str(ws["cfg"]), "--checkpoint", str(ws["d"] / "good.pth"), "--out-dir", str(out),
            "--precision", "fp32", "fp16", "--no-simplify"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: no space left on the device while writing" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["tiny_hrnet_sr.export.json"]
    assert (out / "tiny_hrnet_sr.export.json").read_text() == "previous report"
    monkeypatch.setattr(shutil, "copyfile", real)

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    assert main(_argv([*EVAL, *GT, "--results", "{out}/r.json"], ws, out)) == 2
    err = capsys.readouterr().err
    assert "error: no space left on the device" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["tiny_hrnet_sr.export.json"]


@pytest.mark.parametrize("row", [
    ["train", "{cfg}", "--train-ann", "{ann}", "--train-images", "{images}", "--work-dir", "{d}/ro/w"],
    ["triton", "{graph}", "--out", "{d}/ro/repo"],
    ["pipeline", "{cfg}", "--checkpoint", "{d}/good.pth", "--ann", "{ann}", "--images", "{images}", "--out",
     "{d}/ro/p"],
    [*EVAL, *GT, "--json", "{d}/ro/m.json"],
], ids=["train", "triton", "pipeline", "eval"])
def test_read_only_output_folders_are_refused_first(row: list[str], ws: dict, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only output folder (simulated: the tests may run as root, who writes anywhere) is named before any
    work, as export and eval name theirs."""
    ro = ws["d"] / "ro"
    ro.mkdir(exist_ok=True)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == ro else real(p, mode, *a, **k))
    import srpose.checkpoint

    monkeypatch.setattr(srpose.checkpoint, "build_with_weights", lambda *a, **k: pytest.fail("work before checks"))
    assert main(_argv(row, ws, ro)) == 2
    err = capsys.readouterr().err
    assert f"{ro} is not writable" in err or f"({ro} is read-only)" in err, err
    assert not any(ro.iterdir())


# ------------------------------------------------------------------------------------------------ interrupts
@pytest.mark.parametrize("command", ["export", "eval"])
def test_ctrl_c_is_one_line_exit_130_and_nothing_half_written(command: str, ws: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import srpose.eval.evaluator as evaluator
    import srpose.export.model_export as model_export

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    if command == "export":
        monkeypatch.setattr(model_export, "parity_report", interrupted)
        argv = ["export", str(ws["cfg"]), "--checkpoint", str(ws["d"] / "good.pth"), "--out-dir", str(out),
                "--no-simplify"]
    else:
        out.mkdir()
        monkeypatch.setattr(evaluator, "predict", interrupted)
        argv = _argv([*EVAL, *GT, "--json", "{out}/m.json", "--results", "{out}/r.json"], ws, out)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"srpose {command}: interrupted", err
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------------------------ cards
def test_triton_refuses_an_engine_its_sidecar_does_not_describe(ws: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """The sidecar's size and sha256 (what the TensorRT runtime checks) are checked before model.plan is written."""
    import hashlib

    from _triton_utils import fake_engine
    from srpose.card import read_card, write_sidecar

    engine = fake_engine(ws["graph"], tmp_path / "m.engine")
    card = read_card(engine)
    facts = {"bytes": 4, "sha256": hashlib.sha256(b"plan").hexdigest()}
    write_sidecar(engine, card.replace(engine={**card.engine, "engine": facts}))
    assert main(["triton", str(engine), "--out", str(tmp_path / "ok")]) == 0  # the engine it describes
    capsys.readouterr()
    engine.write_bytes(b"PLAN")  # same size, other bytes
    assert main(["triton", str(engine), "--out", str(tmp_path / "r1")]) == 2
    assert "is not the engine its sidecar m.engine.json describes (sha256" in capsys.readouterr().err
    engine.write_bytes(b"a longer plan")
    assert main(["triton", str(engine), "--out", str(tmp_path / "r2")]) == 2
    assert "has 13 bytes but its sidecar m.engine.json describes an engine of 4 bytes" in capsys.readouterr().err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


# ------------------------------------------------------------------------------------------------ detections
BAD_BOXES = {
    "nan score": ([10, 10, 40, 80, float("nan")], "must be finite"),
    "inf x": ([float("inf"), 10, 40, 80, 0.9], "must be finite"),
    "negative width": ([10, 10, -40, 80, 0.9], "w, h > 0"),
    "zero height": ([10, 10, 40, 0, 0.9], "w, h > 0"),
    "outside": ([700, 10, 40, 80, 0.9], "lies outside the 640x425 image"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_one_detection_check_offline_and_served(case: str, ws: dict, tmp_path: Path) -> None:
    """The same box is refused with the same words by the offline dataset (crop graphs and image graphs read its
    records) and by the served pre-processing (RequestError: the server answers and keeps serving)."""
    from srpose.serve._triton import RequestError
    from srpose.serve.preprocess import boxes_to_center_scale, check_boxes
    from srpose.tasks import task_for

    box, want = BAD_BOXES[case]
    dets = json.loads(ws["det"].read_text())
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{**dets[0], "bbox": box[:4], "score": box[4]}]))
    with pytest.raises(ValueError, match="detection file .* entry 0 \\(image_id 785\\) \\(x, y, w, h, score\\)") as off:
        task_for(str(ws["cfg"])).dataset(ws["ann"], ws["images"], det=det)
    assert want in str(off.value)
    for served in (lambda b: check_boxes(b, (425, 640)), lambda b: boxes_to_center_scale(b, (425, 640), (64, 64))):
        with pytest.raises(RequestError) as e:
            served(np.array([box]))
        assert want in str(e.value) and str(e.value).split(") ", 1)[1] in str(off.value), (str(e.value), off.value)


# ------------------------------------------------------------------------------------------------ srpose serve
def _repo(ws: dict, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    assert main(["triton", str(ws["graph"]), "--out", str(repo), "--runtime", "python-onnxruntime",
                 "--crop-input"]) == 0
    return repo


def test_serve_refuses_ports_in_use_and_empty_repositories(ws: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """Another server holds the HTTP port (it would answer our readiness probe): refused before starting, no URL
    printed. An empty repository is refused too."""
    import http.server
    import threading

    repo = _repo(ws, tmp_path)
    capsys.readouterr()

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    try:
        assert main(["serve", str(repo), "--http-port", str(port), "--grpc-port", "0"]) == 2
    finally:
        other.shutdown()
        other.server_close()
    cap = capsys.readouterr()
    assert cap.out == "" and f"--http-port {port} is in use on 127.0.0.1" in cap.err, cap
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty"), "--http-port", "0", "--grpc-port", "0"]) == 2
    assert "holds no model (no MODEL/config.pbtxt)" in capsys.readouterr().err


_SERVE_SIGNAL = r"""
import os, signal, sys, threading
sys.path.insert(0, sys.argv[1])
import srpose.serve.server as server

class Fake:  # a server that starts at once and stays alive; SIGTERM comes on the 5th check at the latest
    def __init__(self, options):
        self.http_url, self.grpc_url, self.log_path = "http://x", "grpc://x", "log"
        self.install = type("I", (), {"source": "fake"})()
        self.checks = 0
    def start(self): return self
    def alive(self):
        self.checks += 1
        if self.checks == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return True
    def close(self): pass

server.TritonServer = Fake
real = threading.Event

class Racing(real):
    # the worst moment for a signal: while Event.wait holds the Event's lock (the deadlock of #24 item 8)
    def wait(self, timeout=None):
        if sys._getframe(1).f_globals.get("__name__") == "srpose.cli.serve":
            with self._cond:
                os.kill(os.getpid(), signal.SIGTERM)
        return super().wait(timeout)

threading.Event = Racing
from srpose.cli import main
sys.exit(main(["serve", sys.argv[2], "--http-port", "0", "--grpc-port", "0"]))
"""


def test_serve_stops_on_a_signal_whenever_it_arrives(ws: dict, tmp_path: Path) -> None:
    """SIGTERM delivered while the serving loop's wait holds a lock: `srpose serve` still stops (exit 0) rather than
    deadlocking in its signal handler."""
    repo = _repo(ws, tmp_path)
    try:
        run = subprocess.run([sys.executable, "-c", _SERVE_SIGNAL, str(REPO), str(repo)], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("srpose serve hung on SIGTERM")
    assert run.returncode == 0 and "srpose serve: stopping" in run.stderr, run.stderr[-2000:]
    assert run.stdout.splitlines()[:2] == ["http://x", "grpc://x"]



def test_a_failed_server_start_names_its_cause_first_and_only_its_own_ports_count(tmp_path: Path) -> None:
    """The failure summary lists the port in use before a CPU machine's CUDA lines; readiness counts only once this
    run of the server logged that it listens on its ports (not an earlier run's lines in a reused --log file)."""
    from srpose.serve.server import TritonServer

    srv = object.__new__(TritonServer)
    srv.log_path = tmp_path / "log"
    srv.log_path.write_text("E1206 07:38:33.1 1 cuda_memory_manager.cc] CUDA driver: no CUDA-capable device\n"
                            "E1206 07:38:33.2 1 grpc_server.cc] Failed to bind 127.0.0.1:8001: Address already in use\n")
    summary = srv.log_summary()
    assert summary.index("Address already in use") < summary.index("no CUDA-capable device")
    srv.http_port, srv.grpc_port = 8000, 8001
    ours = ('I1 http_server.cc] "Started HTTPService at 127.0.0.1:8000"\n'
            'I1 grpc_server.cc] "Started GRPCInferenceService at 127.0.0.1:8001"\n')
    srv.log_path.write_text(ours)
    srv._log_start = srv.log_path.stat().st_size  # those lines are an earlier run's
    assert not srv._listening()
    with open(srv.log_path, "a") as f:
        f.write(ours)
    assert srv._listening()
