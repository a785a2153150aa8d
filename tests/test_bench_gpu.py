"""scripts/bench_gpu.py end to end at tiny sizes: --device cpu --quick here, --device cuda --quick on a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_gpu.py"
SECTIONS = ("accuracy", "decoder", "latency", "e2e", "ort", "floors", "image")


def _run(device: str, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", device, "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"bench_gpu.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "[bench_gpu]" in proc.stderr  # progress lines
    assert (out / "bench_gpu.md").is_file()
    return json.loads((out / "bench_gpu.json").read_text())


def _ok(section: dict) -> list:
    return [r for r in section["rows"] if r["status"] == "ok"]


def _check_common(res: dict) -> None:
    m = res["machine"]
    for key in ("date_utc", "cpu", "cpu_count", "torch", "onnxruntime", "python", "gpu"):
        assert key in m
    assert m["date_utc"].endswith("+00:00")
    secs = res["sections"]
    assert set(secs) == set(SECTIONS)
    for name, sec in secs.items():
        assert sec["status"] == "ok", f"{name}: {sec.get('reason')}"
        assert sec["rows"], name
        for r in sec["rows"]:
            assert r["status"] in ("ok", "skipped", "unavailable"), (name, r)
            assert r["status"] == "ok" or r["reason"], (name, r)
    dec = secs["decoder"]["rows"]
    assert {(r["kind"], r["data"]) for r in dec} == {(k, d) for k in ("srpose", "simple") for d in ("random", "ties")}
    assert all(r["same"] and r["max_abs_px"] <= 1e-3 for r in dec)
    assert all(r["numpy_ms"] > 0 and r["torch_ms"] > 0 for r in dec if r["data"] == "random")
    lat = _ok(secs["latency"])
    assert lat and all(r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] and r["images_per_s"] > 0 for r in lat)
    assert {r["batch"] for r in lat} == {1, 2}
    floor = secs["floors"]["rows"][0]
    for key in ("gmacs_per_image", "mac_rate_tmacs", "bandwidth_gbs", "weight_bytes", "activation_bytes",
                "compute_floor_ms", "memory_floor_ms", "measured_ms"):
        assert floor[key] > 0, key
    assert floor["total_bytes"] == floor["weight_bytes"] + floor["input_bytes"] + floor["activation_bytes"]
    # a floor is a lower bound: the measured time may not beat it by much (timer noise and a peak we may miss)
    assert floor["measured_ms"] >= 0.3 * max(floor["compute_floor_ms"], floor["memory_floor_ms"])
    e2e = _ok(secs["e2e"])
    assert e2e and all(r["images_per_s"] > 0 and r["persons"] > 0 for r in e2e)
    image = _ok(secs["image"])  # #20: the image-to-keypoints graph on the device, latency and end to end
    lat_rows = [r for r in image if r["kind"] == "latency"]
    assert {r["persons"] for r in lat_rows} == {1, 4} and all(r["persons_per_s"] > 0 for r in lat_rows)
    e2e_rows = [r for r in image if r["kind"] == "e2e"]
    assert e2e_rows and all(r["image_persons_per_s"] > 0 and r["host_persons_per_s"] > 0 and r["persons"] == 118
                            for r in e2e_rows)


def test_bench_gpu_cpu_quick(tmp_path: Path, coco_sample: dict) -> None:  # coco_sample: skips without ../shared
    res = _run("cpu", tmp_path)
    _check_common(res)
    secs = res["sections"]
    assert res["machine"]["gpu"] is None and res["settings"]["device"] == "cpu"
    acc = secs["accuracy"]["rows"]
    models = {r["model"] for r in acc}
    assert len(models) == 6 and {m.split("_")[0] for m in models} == {"res50", "hrnet", "hrt"}
    for r in acc:  # fp32 runs (against itself: 0); what needs CUDA says so
        if r["precision"] == "fp32":
            assert r["status"] == "ok" and r["rel_l2"] == 0.0 and r["kpt_max_px"] == 0.0 and r["crops"] > 0
        else:
            assert r["status"] == "skipped" and "CUDA" in r["reason"]
    lat = secs["latency"]["rows"]
    assert all(r["latency_source"] == "wall" for r in _ok(secs["latency"]))
    assert all(r["status"] == "skipped" and "CUDA" in r["reason"] for r in lat if r["mode"] == "cuda_graph")
    assert all(r["status"] == "skipped" for r in lat if r["mode"] == "compile")
    assert all(r["status"] == "skipped" for r in lat if r["precision"] != "fp32")
    ort = secs["ort"]["rows"]
    assert {r["precision"] for r in ort} == {"fp32", "fp16"}
    assert all(r["status"] == "skipped" and "CUDA" in r["reason"] and r["onnx_bytes"] > 0 for r in ort)
    assert secs["floors"]["rows"][0]["precision"] == "fp32"
    md = (tmp_path / "bench_gpu.md").read_text()
    assert "CPU run" in md and "### Compute and memory floors" in md and "skipped: " in md


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_gpu_cuda_quick(tmp_path: Path, coco_sample: dict) -> None:
    res = _run("cuda", tmp_path)
    _check_common(res)
    secs = res["sections"]
    assert res["machine"]["gpu"]["name"] and res["machine"]["gpu"]["driver"]
    acc = _ok(secs["accuracy"])
    assert {r["precision"] for r in acc} == {"fp32", "fp16", "fp16-weights", "bf16"}
    assert all(0 <= r["rel_l2"] < 0.5 and r["kpt_mean_px"] >= 0 for r in acc)  # sane, not a target: random weights
    lat = _ok(secs["latency"])
    assert all(r["latency_source"] == "device" for r in lat)
    assert {r["mode"] for r in lat} >= {"eager", "cuda_graph"}
    assert {r["precision"] for r in lat} == {"fp32", "fp16-weights"}
    assert all(r["copy_ms"] > 0 for r in secs["decoder"]["rows"] if r["data"] == "random")
    assert secs["floors"]["rows"][0]["precision"] == "fp16-weights"
    assert {r["precision"] for r in _ok(secs["image"])} == {"fp32", "fp16"}
