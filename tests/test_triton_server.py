"""Serving through a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver and python backend, on
the CPU; `make serve-deps` installs it, the tests skip without it): started with `srpose serve` on free loopback
ports, with a top-down and a bottom-up repository written by `srpose triton --runtime python-onnxruntime`.

- parity: AP (PCKh) and keypoints through the server equal `srpose eval --backend onnxruntime` on the COCO,
  CrowdPose (MPII) samples;
- load: 8 concurrent clients x 25 requests, all answered once, as sequential requests, merged by the batcher;
- bad requests: clear errors, and the server goes on serving;
- the CLI: eval, bench and parity with a Triton URL; `srpose serve` stops cleanly on SIGINT/SIGTERM.

The server's log is kept in pytest's temporary folder (a warning names it when a test of this module failed).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from _export_utils import cached_export
from _triton_utils import mean_pose_graph, request_set, server_python, tiny_graph
from conftest import shared_path
from srpose.cli import main

pytestmark = pytest.mark.slow


def _start_serve(repo: Path, log: Path, python: Path) -> tuple[subprocess.Popen, str, str]:
    """`srpose serve REPO --http-port 0 --grpc-port 0`: (process, http URL, grpc URL) from its first two lines."""
    proc = subprocess.Popen([sys.executable, "-m", "srpose.cli", "serve", str(repo), "--http-port", "0",
                             "--grpc-port", "0", "--python", str(python), "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend([proc.stdout.readline(), proc.stdout.readline()]),
                              daemon=True)
    reader.start()
    reader.join(timeout=240)
    if len(lines) < 2 or not lines[1].strip():
        proc.kill()
        err = proc.stderr.read()[-3000:] if proc.stderr else ""
        log_text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"srpose serve did not print its URLs; stderr:\n{err}\nserver log {log}:\n{log_text}")
    return proc, lines[0].strip(), lines[1].strip()


def _stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return -999


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A server of a top-down (flip test in the ensemble, AP > 0) and a bottom-up (decoded, flip in the graph)
    model, their graphs and tasks."""
    from srpose.engines import open_backend
    from srpose.eval.bench import task_of_backend

    python = server_python()
    coco = shared_path("data", "coco")
    root = tmp_path_factory.mktemp("triton")
    td_src = cached_export("hrnet", "sr", batch=(1, 8, 32))[0]
    td_task = task_of_backend(open_backend(td_src))
    gt = td_task.dataset(coco / "test_coco.json", coco, gt_bbox=True)
    td = mean_pose_graph(td_src, root / "td.onnx", td_task, gt, weight=0.02)
    bu = cached_export("bottom-up", "sr", decode=True, flip=True)[0]
    mpii_dir = shared_path("data", "mpii")
    mpii_src = tiny_graph(root / "mpii_src.onnx", "mpii")
    mpii_task = task_of_backend(open_backend(mpii_src))
    mpii_ds = mpii_task.dataset(mpii_dir / "test_mpii.json", mpii_dir)
    mpii = mean_pose_graph(mpii_src, root / "mpii.onnx", mpii_task, mpii_ds, weight=0.02)
    cp_dir = shared_path("data", "crowdpose")
    cp_src = tiny_graph(root / "crowdpose_src.onnx", "crowdpose")
    cp_task = task_of_backend(open_backend(cp_src))
    cp = mean_pose_graph(cp_src, root / "crowdpose.onnx", cp_task,
                         cp_task.dataset(cp_dir / "test_crowdpose.json", cp_dir, gt_bbox=True), weight=0.02)
    repo = root / "repo"
    for f in (td, bu, mpii, cp):  # crop graphs as they are: the python pre/post-processing path
        assert main(["triton", str(f), "--out", str(repo), "--runtime", "python-onnxruntime", "--crop-input"]) == 0
    from srpose.export.image_graph import write_image_graph

    images = {}  # image-to-keypoints graphs: the network crops, flips and decodes
    for key, f, task in (("td", td, td_task), ("mpii", mpii, mpii_task)):
        images[key] = write_image_graph(f, root / f"{key}_image.onnx")
        assert main(["triton", str(images[key]), "--out", str(repo), "--runtime", "python-onnxruntime", "--name",
                     f"{task.cfg.name}_image"]) == 0
    log = root / "tritonserver.log"
    failed = request.session.testsfailed
    t0 = time.perf_counter()
    proc, http, grpc = _start_serve(repo, log, python)
    start_s = time.perf_counter() - t0
    bu_task = task_of_backend(open_backend(bu))
    yield dict(http=http, grpc=grpc, repo=repo, log=log, td=td, bu=bu, td_task=td_task, bu_task=bu_task,
               td_name=td_task.cfg.name, bu_name=bu_task.cfg.name, coco=coco, python=python, start_s=start_s,
               mpii=mpii, mpii_task=mpii_task, mpii_ds=mpii_ds, cp=cp, cp_task=cp_task, cp_dir=cp_dir, images=images)
    code = _stop(proc, signal.SIGTERM)
    if request.session.testsfailed > failed:
        warnings.warn(f"a Triton server test failed: the server's log is kept at {log}", stacklevel=1)
    assert code == 0, f"srpose serve exited with {code} on SIGTERM; log {log}:\n{log.read_text()[-3000:]}"


def _datasets(s: dict[str, Any]) -> dict[str, Any]:
    coco = s["coco"]
    t = s["td_task"]
    return {"gt": t.dataset(coco / "test_coco.json", coco, gt_bbox=True),
            "det": t.dataset(coco / "test_coco.json", coco, det=coco / "test_coco_det_AP_H_56.json")}


def test_top_down_ap_through_the_server_equals_onnxruntime(served: dict[str, Any], tmp_path: Path) -> None:
    """`srpose eval --backend triton` and `--backend onnxruntime` on the same graph: the same AP; the library
    evaluation gives the same keypoints, bit for bit, with GT boxes and with 118 detections (split into requests
    of at most max_persons boxes), over gRPC and HTTP."""
    from srpose.engines import open_backend
    from srpose.eval.evaluator import EvalOptions, evaluate

    s, coco = served, served["coco"]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(s["td_task"].cfg.to_dict()))
    common = [str(cfg), "--ann", str(coco / "test_coco.json"), "--images", str(coco), "--gt-bbox", "--quiet",
              "--workers", "0"]
    assert main(["eval", *common, "--backend", "onnxruntime", "--model", str(s["td"]), "--json",
                 str(tmp_path / "ort.json")]) == 0
    assert main(["eval", *common, "--backend", "triton", "--url", s["grpc"], "--json", str(tmp_path / "tr.json")]) == 0
    ort, tr = (json.loads((tmp_path / f).read_text()) for f in ("ort.json", "tr.json"))
    assert tr["metrics"] == ort["metrics"] and ort["metrics"]["AP"] > 0, (tr["metrics"], ort["metrics"])
    assert tr["backend"] == "triton-grpc" and tr["flip"] and tr["num_persons"] == ort["num_persons"] == 12
    task = s["td_task"]
    local = open_backend(s["td"])
    for name, ds in _datasets(s).items():
        want = evaluate(task, local, ds, EvalOptions(progress=False, workers=0))
        for url in ((s["grpc"], s["http"]) if name == "gt" else (s["grpc"],)):
            with open_backend(f"{url}/{s['td_name']}") as remote:
                got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=4))
            np.testing.assert_array_equal(got.keypoints, want.keypoints, err_msg=f"{name} {url}")
            assert got.metrics == want.metrics and got.num_persons == want.num_persons == len(ds)


@pytest.mark.parametrize("key", ["td", "mpii"])
def test_image_graph_through_the_server_equals_its_evaluation(served: dict[str, Any], key: str) -> None:
    """#20: the repository of an image-to-keypoints graph (the python models only decode and check; the network
    crops, flips and decodes) gives `srpose eval --model` of the same graph: the same AP / PCKh and keypoints (the
    evaluator pads images into batches, which moves the bilinear weights by float rounding only); COCO with GT boxes
    and with 118 detections, MPII with CENTER_SCALE rows."""
    from srpose.engines import open_backend
    from srpose.eval.evaluator import EvalOptions, evaluate

    s = served
    task = s["td_task"] if key == "td" else s["mpii_task"]
    sets = _datasets(s) if key == "td" else {"mpii": s["mpii_ds"]}
    local = open_backend(s["images"][key])
    for name, ds in sets.items():
        want = evaluate(task, local, ds, EvalOptions(progress=False, workers=0))
        with open_backend(f"{s['grpc']}/{task.cfg.name}_image") as remote:
            assert remote.card.image_input and remote.flip_in_graph and sorted(remote.model_names()) == [
                "ensemble", "network", "preprocess"]
            got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=4))
        assert got.num_persons == want.num_persons == len(ds)
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3, err_msg=name)
        assert got.metrics == pytest.approx(want.metrics, abs=1e-6), name
        primary = "AP" if "AP" in want.metrics else "Mean"
        assert want.metrics[primary] > 0, want.metrics


def test_bottom_up_ap_through_the_server_equals_onnxruntime(served: dict[str, Any]) -> None:
    from srpose.engines import open_backend
    from srpose.eval.evaluator import EvalOptions, evaluate

    s, coco, task = served, served["coco"], served["bu_task"]
    ds = task.dataset(coco / "test_coco.json", coco)
    want = evaluate(task, open_backend(s["bu"]), ds, EvalOptions(progress=False, workers=0))
    with open_backend(f"{s['grpc']}/{s['bu_name']}") as remote:
        assert remote.card.task == "bottom-up" and remote.flip_in_graph
        got = evaluate(task, remote, ds, EvalOptions(progress=False))
    assert got.num_persons == want.num_persons > 0
    np.testing.assert_array_equal(got.keypoints, want.keypoints)
    assert got.metrics == want.metrics


def test_mpii_pckh_through_the_server_equals_onnxruntime(served: dict[str, Any]) -> None:
    """MPII persons have a centre and scale, no box: the client sends CENTER_SCALE rows; PCKh and keypoints equal
    the evaluator's."""
    from srpose.engines import open_backend
    from srpose.eval.evaluator import EvalOptions, evaluate

    s, task, ds = served, served["mpii_task"], served["mpii_ds"]
    want = evaluate(task, open_backend(s["mpii"]), ds, EvalOptions(progress=False, workers=0))
    with open_backend(f"{s['grpc']}/{task.cfg.name}") as remote:
        got = evaluate(task, remote, ds, EvalOptions(progress=False))
    assert got.metrics == want.metrics and want.metrics["Mean"] > 0
    np.testing.assert_array_equal(got.keypoints, want.keypoints)


def test_crowdpose_ap_through_the_server_equals_onnxruntime(served: dict[str, Any]) -> None:
    """CrowdPose (14 joints, AP easy/medium/hard) with its detections: the same AP and keypoints as the
    evaluator's."""
    from srpose.engines import open_backend
    from srpose.eval.evaluator import EvalOptions, evaluate

    s, task, d = served, served["cp_task"], served["cp_dir"]
    ds = task.dataset(d / "test_crowdpose.json", d, det=d / "test_crowdpose_det_AP_40.json")
    want = evaluate(task, open_backend(s["cp"]), ds, EvalOptions(progress=False, workers=0))
    with open_backend(f"{s['grpc']}/{task.cfg.name}") as remote:
        got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=2))
    assert got.num_persons == want.num_persons == len(ds) > 0
    assert got.metrics == want.metrics and want.metrics["AP"] > 0, (got.metrics, want.metrics)
    assert {"AP_E", "AP_M", "AP_H"} <= set(want.metrics), want.metrics
    np.testing.assert_array_equal(got.keypoints, want.keypoints)


def _network_stats(backend: Any, name: str) -> dict[str, Any]:
    """Triton's statistics of model ``name``, once they have settled (the server records a request's statistics
    just after answering it)."""
    last = None
    for _ in range(40):
        stats = backend.statistics(name)["model_stats"][0]
        now = {"requests": int(stats["inference_stats"]["success"]["count"]),
               "executions": int(stats["execution_count"]),
               "batches": {int(b["batch_size"]): int(b["compute_infer"]["count"])
                           for b in stats.get("batch_stats", [])}}
        if now == last:
            return now
        last = now
        time.sleep(0.1)
    return last


def test_load_8_clients_x_25_requests(served: dict[str, Any]) -> None:
    """200 concurrent requests (8 clients x 25, each client in its own order): every one answered exactly once
    with what the same request gets alone, and the dynamic batcher merged crops of different requests."""
    from srpose.engines import open_backend

    s = served
    backend = open_backend(f"{s['grpc']}/{s['td_name']}")
    requests = request_set(s["td_task"], _datasets(s)["det"], max_persons=4, n=25)
    alone = [backend.infer_request(r) for r in requests]
    names = backend.model_names()
    before = _network_stats(backend, names["network"]), _network_stats(backend, names["ensemble"])
    answers: dict[int, list[tuple[int, dict]]] = {}
    errors: list[str] = []

    def client(c: int) -> None:
        order = np.random.default_rng(c).permutation(len(requests))
        got = []
        for i in order:
            try:
                got.append((int(i), backend.infer_request(requests[i])))
            except Exception as e:  # every failure is a lost request: reported below
                errors.append(f"client {c} request {i}: {e}")
        answers[c] = got

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    assert sorted(answers) == list(range(8)) and all(len(a) == 25 for a in answers.values())
    for c, got in answers.items():
        assert sorted(i for i, _ in got) == list(range(25)), f"client {c} lost or duplicated requests"
        for i, out in got:
            np.testing.assert_array_equal(out["keypoints"], alone[i]["keypoints"], err_msg=f"client {c} req {i}")
            np.testing.assert_array_equal(out["scores"], alone[i]["scores"])
    net, ens = _network_stats(backend, names["network"]), _network_stats(backend, names["ensemble"])
    assert ens["requests"] - before[1]["requests"] == 200  # the ensemble answered each request once
    assert net["requests"] - before[0]["requests"] == 200
    executions = net["executions"] - before[0]["executions"]
    assert executions < 200, f"no request was batched with another ({executions} executions for 200 requests)"
    biggest_request = 2 * 4  # 4 boxes and their mirrors
    assert any(b > biggest_request for b in net["batches"]), net["batches"]
    backend.close()


def _raw_infer(url: str, model: str, **tensors: np.ndarray) -> Any:
    import tritonclient.grpc as g

    client = g.InferenceServerClient(url.split("://")[1])
    inputs = []
    for name, (dtype, value) in tensors.items():
        t = g.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        inputs.append(t)
    try:
        return client.infer(model, inputs)
    finally:
        client.close()


def test_bad_requests_get_clear_errors_and_the_server_goes_on(served: dict[str, Any]) -> None:
    from tritonclient.utils import InferenceServerException

    s, name = served, served["td_name"]
    image = np.frombuffer((s["coco"] / "000000000785.jpg").read_bytes(), np.uint8)
    box = np.array([[277.1, 45.7, 225.1, 333.6, 0.99]])
    good = _raw_infer(s["grpc"], name, IMAGE=("UINT8", image), BOXES=("FP64", box)).as_numpy("KEYPOINTS")
    too_many = np.repeat(box, 17, axis=0)
    cases = {
        "cannot decode": dict(IMAGE=("UINT8", np.frombuffer(b"\xff\xd8 not a jpeg" * 40, np.uint8)),
                              BOXES=("FP64", box)),
        "holds no person": dict(IMAGE=("UINT8", image), BOXES=("FP64", np.zeros((0, 5)))),
        "lies outside the 640x425 image": dict(IMAGE=("UINT8", image), BOXES=("FP64", box + [900, 0, 0, 0, 0])),
        "FP64": dict(IMAGE=("UINT8", image), BOXES=("FP32", box.astype(np.float32))),
        "unexpected shape for input 'BOXES'": dict(IMAGE=("UINT8", image), BOXES=("FP64", box[:, :4].copy())),
        "'IMAGE' is missing": dict(BOXES=("FP64", box)),
        "send the persons as 'BOXES'": dict(IMAGE=("UINT8", image)),
        "send at most 16 per request": dict(IMAGE=("UINT8", image), BOXES=("FP64", too_many)),
        "must be finite": dict(IMAGE=("UINT8", image), BOXES=("FP64", box * [1, 1, -1, 1, 1])),
    }
    for want, tensors in cases.items():
        with pytest.raises(InferenceServerException) as e:
            _raw_infer(s["grpc"], name, **tensors)
        assert want in str(e.value), (want, str(e.value))
        again = _raw_infer(s["grpc"], name, IMAGE=("UINT8", image), BOXES=("FP64", box)).as_numpy("KEYPOINTS")
        np.testing.assert_array_equal(again, good)
    from srpose.engines import open_backend

    with open_backend(f"{s['http']}/{name}") as remote:
        with pytest.raises(RuntimeError, match="cannot decode"):
            remote.infer_image(b"garbage" * 30, box)
        np.testing.assert_array_equal(remote.infer_image(image.tobytes(), box)["keypoints"], good)


def test_bench_and_parity_take_a_triton_url(served: dict[str, Any], tmp_path: Path) -> None:
    """`srpose bench --backend triton` sweeps concurrency (table, JSON, PNG); `run_parity` compares a served model
    with PyTorch."""
    from srpose.eval.parity import ParityOptions, run_parity
    from srpose.eval.report import parity_markdown

    s, coco = served, served["coco"]
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "triton", "--url", f"{s['grpc']}/{s['td_name']}", "--concurrency", "1", "4",
                 "--warmup-s", "0.2", "--duration-s", "1", "--ann", str(coco / "test_coco.json"), "--images",
                 str(coco), "--gt-bbox", "--json", str(out), "--plot", str(tmp_path / "bench.png"), "--quiet"]) == 0
    rows = json.loads(out.read_text())
    assert [r["concurrency"] for r in rows] == [1, 4] and all(r["errors"] == 0 and r["persons_per_s"] > 0
                                                              for r in rows)
    assert {"median_ms", "p90_ms", "p99_ms", "images_per_s"} <= set(rows[0]) and (tmp_path / "bench.png").stat().st_size
    task = s["bu_task"]
    model = cached_export("bottom-up", "sr", decode=True, flip=True)[1]
    ds = task.dataset(coco / "test_coco.json", coco)
    report = run_parity(task, model, [f"{s['grpc']}/{s['bu_name']}"], ds, ParityOptions(workers=0))
    row = report.models[0]
    assert row["people"] > 0 and row["output_kind"] == "people" and set(row["delta"]) == set(row["metrics"])
    assert "triton" not in row["name"] or row["name"].startswith("grpc://")
    assert s["bu_name"] in parity_markdown(report)


def test_no_flip_is_refused_where_the_server_flips(served: dict[str, Any], capsys) -> None:
    """The top-down repository runs the flip test in its ensemble: `--no-flip` cannot be honoured, and says how to
    get a repository without it (#24)."""
    s, coco = served, served["coco"]
    argv = ["eval", "--url", f"{s['grpc']}/{s['td_name']}", "--ann", str(coco / "test_coco.json"), "--images",
            str(coco), "--gt-bbox", "--quiet", "--no-flip"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"the served model {s['td_name']} runs the flip test" in err and "--no-flip" in err, err


def test_the_server_log_holds_no_traceback(served: dict[str, Any]) -> None:
    """After the requests of the tests above (good and bad, every model kind): no exception in the server's log
    (#24: a DLPack capsule destructor logged one per output tensor)."""
    log = served["log"].read_text(errors="replace")
    assert "Started HTTPService" in log and "Traceback" not in log, log[log.find("Traceback"):][:2000]


def test_serve_stops_cleanly_on_sigint(served: dict[str, Any], tmp_path: Path) -> None:
    """A second `srpose serve` (the bottom-up model alone): ready, serving, and exit status 0 on Ctrl-C."""
    from srpose.engines import open_backend

    repo = tmp_path / "repo"
    assert main(["triton", str(served["bu"]), "--out", str(repo), "--runtime", "python-onnxruntime"]) == 0
    proc, http, grpc = _start_serve(repo, tmp_path / "log.txt", served["python"])  # (bottom-up: no wrapping)
    assert http.startswith("http://127.0.0.1:") and grpc.startswith("grpc://127.0.0.1:")
    with open_backend(http) as remote:  # the only srpose ensemble: found without a name
        assert remote.model == served["bu_name"]
        image = (served["coco"] / "000000040083.jpg").read_bytes()
        assert remote.infer_image(image)["keypoints"].ndim == 3
    assert _stop(proc, signal.SIGINT) == 0


def test_a_model_that_fails_to_load_is_named_and_the_log_kept(served: dict[str, Any], tmp_path: Path) -> None:
    """A repository whose network model raises while loading: the start fails with Triton's error lines (the cause
    first, not just the log's end), and the temporary log outlives close(); a server that started and was stopped
    leaves no log behind."""
    from srpose.serve.server import ServeOptions, TritonServer

    good, bad = tmp_path / "good", tmp_path / "bad"
    for repo in (good, bad):
        assert main(["triton", str(served["mpii"]), "--out", str(repo), "--runtime", "python-onnxruntime",
                     "--crop-input"]) == 0
    name = served["mpii_task"].cfg.name
    with open(bad / f"{name}_network" / "1" / "model.py", "a") as f:
        f.write('\nraise RuntimeError("broken on purpose")\n')
    opts = dict(http_port=0, grpc_port=0, python=str(served["python"]))
    server = TritonServer(ServeOptions(repos=[bad], **opts))
    with pytest.raises(RuntimeError, match="has these error lines") as err:
        server.start()
    server.close()
    text = str(err.value)
    assert f"failed to load '{name}_network'" in text and "broken on purpose" in text.split("and ends with")[0]
    assert server.log_path.is_file() and str(server.log_path) in text
    server.log_path.unlink()
    with TritonServer(ServeOptions(repos=[good], **opts)) as ok:
        assert ok.alive() and ok.log_path.is_file()
    assert not ok.log_path.exists() and not ok.workdir.exists()


def test_predict_through_the_server_equals_the_graph(served: dict[str, Any], tmp_path: Path) -> None:
    """#21: `srpose.Pose` with a Triton URL (one request per frame, sent as PNG) gives the keypoints of the same
    image graph run in ONNX Runtime, on the COCO sample with its detections; and `srpose predict --model URL` runs."""
    from srpose.eval.predict import Pose

    s, coco = served, served["coco"]
    det = coco / "test_coco_det_AP_H_56.json"
    images = sorted(str(p) for p in coco.glob("*.jpg"))
    remote = Pose(f"{s['grpc']}/{s['td_name']}_image", boxes=det)
    local = Pose(s["images"]["td"], boxes=det)
    for a, b in zip(remote(images), local(images)):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    remote.close()
    assert main(["predict", *images[:2], "--model", f"{s['grpc']}/{s['td_name']}_image", "--boxes", str(det),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) > 0
