#!/usr/bin/env python
"""Measure every GPU claim of the project in one run: one JSON file and a Markdown report.

Sections (``--sections``): ``accuracy`` (torch backend fp32 / fp16 autocast / fp16 half weights / bf16 against the
CPU fp32 reference on the shared COCO sample: heatmap and keypoint error), ``decoder`` (torch decoder on the device
against the numpy decoder: same keypoints, time per batch of 32), ``latency`` (the six models, eager / CUDA graphs /
``torch.compile``, CUDA-event median and p99), ``e2e`` (images/s through the evaluator), ``ort`` (ONNX Runtime's CUDA
provider on the exported fp32 / fp16 graphs against torch CUDA), ``floors`` (compute and memory floors of
``res50_srpose_coco_256x192`` at batch 128 fp16 against the measured time) and ``image`` (the image-to-keypoints
graph: latency per persons in one 640x480 image, and persons/s through the evaluator against the host pipeline).

``--device cpu --quick`` runs every section end to end in seconds at tiny sizes: what needs CUDA is skipped with the
reason, the rest runs on honest CPU stand-ins (wall timing, fp32, the CPU matmul rate and copy bandwidth).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "coco"
for _p in (str(REPO), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _bench_gpu_measure import (TRAFFIC_NOTE, Runner, copy_bandwidth, device_model, dtype_of, errors,  # noqa: E402
                                forward_fn, heatmaps, is_cuda, log, make_input, matmul_rate, release, time_ms,
                                traffic_bytes)
from _bench_gpu_report import guarded, machine_info, skipped  # noqa: E402
import _bench_gpu_lib as lib  # noqa: E402
from _bench_gpu_report import SECTION, render  # noqa: E402



MODELS = ("res50_coco_256x192", "res50_srpose_coco_256x192", "hrnet_w32_coco_256x192",
          "hrnet_w32_srpose_coco_256x192", "hrt_small_coco_256x192", "hrt_small_srpose_coco_256x192")
FLOOR_MODEL = "res50_srpose_coco_256x192"
SECTIONS = ("accuracy", "decoder", "latency", "e2e", "ort", "floors", "image")
ACC_PRECISIONS = ("fp32", "fp16", "fp16-weights", "bf16")  # TorchBackend's names: autocast fp16, half weights
LAT_PRECISIONS = ("fp32", "fp16-weights")
MODES = ("eager", "cuda_graph", "compile")
QUICK_SIZE = (64, 64)  # width, height: multiples of 32 (HRNet's branches), whole 16-pixel SRPose decoder cells
NEEDS_CUDA = "needs CUDA (--device cpu)"


# ---- sections ----
def bench_accuracy(plan: SimpleNamespace) -> Dict[str, Any]:
    """Heatmap and keypoint error of each torch precision on the device against the CPU fp32 reference."""
    rows = []
    for name in plan.models:
        cfg, model = lib.build(name, plan.size)
        imgs, centers, scales = lib.sample_crops(cfg)
        kind = lib.decoder_kind(cfg)
        ref = lib.infer(lib.torch_backend(copy.deepcopy(model), "cpu", "fp32"), imgs)
        ref_kp = np.asarray(lib.decode(ref, centers, scales, kind)[0])
        for prec in ACC_PRECISIONS:
            row: Dict[str, Any] = {"model": name, "precision": prec, "crops": len(imgs), "status": "ok"}
            if not is_cuda(plan.device) and prec != "fp32":
                rows.append(skipped(row, f"{prec} {NEEDS_CUDA}"))
                continue
            backend = lib.torch_backend(copy.deepcopy(model), plan.device, prec)
            out = lib.infer(backend, imgs)
            backend.close()
            row.update(errors(ref, out, ref_kp, np.asarray(lib.decode(out, centers, scales, kind)[0])))
            if not is_cuda(plan.device):
                row["note"] = "CPU against itself: checks the pipeline, 0 by construction"
            rows.append(row)
            log(f"accuracy {name} {prec}: rel L2 {row['rel_l2']:.2e}, keypoints {row['kpt_mean_px']:.3f} px")
        release(plan.device)
    return {"status": "ok", "rows": rows, "notes": [
        "Crops: every GT person of the shared COCO sample (no flip). Reference: torch fp32 on the CPU. Keypoint "
        "error: distance between decoded keypoints in image pixels. fp16 = autocast, fp16-weights = half weights "
        "and inputs, bf16 = autocast bfloat16. Random weights (seed 0): the errors measure the arithmetic."]}


def bench_decoder(plan: SimpleNamespace) -> Dict[str, Any]:
    """Torch decoder on the device against the numpy decoder: same keypoints, median ms per batch of 32."""
    rows = []
    dev = plan.device
    for kind, name in (("srpose", "res50_srpose_coco_256x192"), ("simple", "res50_coco_256x192")):
        w, h = lib.config(name, plan.size).heatmap_size
        for data in ("random", "ties"):
            hm, center, scale = heatmaps((32, 17, int(h), int(w)), data, seed=len(rows))
            ht = torch.from_numpy(hm).to(dev)
            kp, sc = lib.decode(hm, center, scale, kind)
            kt, st = lib.decode(ht, center, scale, kind)
            diff = float(np.abs(np.asarray(kp) - kt.cpu().numpy()).max())
            same = diff <= 1e-3 and bool(np.array_equal(np.asarray(sc), st.cpu().numpy()))
            row: Dict[str, Any] = {"kind": kind, "data": data, "shape": f"32x17x{h}x{w}", "same": same,
                                   "max_abs_px": diff, "status": "ok"}
            if data == "random":
                cpu = torch.device("cpu")
                row["numpy_ms"] = lib.summarize(time_ms(lambda: lib.decode(hm, center, scale, kind), cpu,
                                                      plan.runs))["median"]
                row["torch_ms"] = lib.summarize(time_ms(lambda: lib.decode(ht, center, scale, kind), dev,
                                                      plan.runs))["median"]
                if is_cuda(dev):
                    row["copy_ms"] = lib.summarize(time_ms(lambda: ht.cpu(), dev, plan.runs))["median"]
            rows.append(row)
            log(f"decoder {kind} {data}: same keypoints {same} (max diff {diff:.1e} px)")
    return {"status": "ok", "rows": rows, "notes": [
        f"Same keypoints: within 1e-3 image px and identical scores. Torch decoder on {dev} (CUDA events on a GPU, "
        "wall clock on the CPU; heatmaps already there); numpy decoder on the host, plus on a GPU the device-to-host "
        "copy of the heatmaps it needs first. 'ties': 5-level maps (many equal maxima), all-zero and negative maps."]}


def _mode_skip(mode: str, precision: str, plan: SimpleNamespace, compile_left: float) -> str | None:
    if not is_cuda(plan.device) and (mode == "cuda_graph" or precision != "fp32"):
        return f"{mode if mode == 'cuda_graph' else precision} {NEEDS_CUDA}"
    if mode == "compile" and compile_left <= 0:
        return ("compile budget spent (--compile-budget-s; 0 with --quick: inductor needs minutes)")
    return None


def bench_latency(plan: SimpleNamespace) -> Dict[str, Any]:
    """Median / p99 latency per model, precision, mode and batch (CUDA events after warm-up on a GPU)."""
    rows: List[Dict[str, Any]] = []
    compile_left = plan.compile_budget_s
    for name in plan.latency_models:
        cfg, model = lib.build(name, plan.size)
        for prec in LAT_PRECISIONS:
            base = {"model": name, "precision": prec}
            for mode in MODES:
                reason = _mode_skip(mode, prec, plan, compile_left)
                if reason:
                    rows.append(skipped({**base, "mode": mode}, reason))
                    continue
                t0 = time.perf_counter()
                try:
                    runner = Runner(forward_fn(device_model(model, plan.device, prec), mode), plan.device, prec)
                    prof = lib.profile(runner, lib.input_shape(cfg), plan.batches, plan,
                                    make_input(plan.device, dtype_of(prec)))
                except Exception as e:  # noqa: BLE001 - torch.compile / graphs "where it works"
                    rows.append(skipped({**base, "mode": mode}, f"{type(e).__name__}: {e}"[:300], "failed"))
                    continue
                finally:
                    compile_left -= (time.perf_counter() - t0) if mode == "compile" else 0.0
                    runner = None
                    release(plan.device)
                rows += [{**base, "mode": mode, "batch": r["batch"], "median_ms": r["median_ms"],
                          "p99_ms": r["p99_ms"], "mean_ms": r["mean_ms"], "images_per_s": r["batch"] * 1e3 /
                          r["median_ms"], "latency_source": r["latency_source"], "iterations": r["iterations"],
                          "status": "ok"} for r in prof]
    return {"status": "ok", "rows": rows, "notes": [
        "Inputs already on the device in the precision's dtype; outputs stay there. images/s = batch / median. "
        "fp16-weights: half weights and inputs. cuda_graph: one static-shape capture per batch (copy in, replay). "
        "timing 'device' = CUDA events around the forward; 'wall' = host clock (CPU)."]}


def bench_e2e(plan: SimpleNamespace, work: Path) -> Dict[str, Any]:
    """Persons per second through the evaluator (loading, crops, inference, flip test, decoding, COCO AP)."""
    rows = []
    for name in plan.e2e_models:
        cfg, model = lib.build(name, plan.size)
        ds = lib.sample_dataset(cfg, work, plan.copies)
        for prec in LAT_PRECISIONS:
            row: Dict[str, Any] = {"model": name, "precision": prec, "persons": len(ds), "batch": plan.e2e_batch,
                                   "status": "ok"}
            if not is_cuda(plan.device) and prec != "fp32":
                rows.append(skipped(row, f"{prec} {NEEDS_CUDA}"))
                continue
            backend = lib.torch_backend(copy.deepcopy(model), plan.device, prec)
            row.update(lib.evaluate_end_to_end(backend, ds, cfg, plan.e2e_batch, plan.workers))
            backend.close()
            rows.append(row)
            log(f"e2e {name} {prec}: {row['images_per_s']:.1f} persons/s")
    return {"status": "ok", "rows": rows, "notes": [
        f"The shared COCO sample x {plan.copies} (GT boxes), the config's flip test, {plan.workers} data-loader "
        "workers; images/s counts person crops. Random weights: AP is not a result here."]}


def _ort_vs_torch(plan: SimpleNamespace, cfg: Any, model: nn.Module, ort: Any, prec: str,
                  base: Dict[str, Any]) -> List[Dict[str, Any]]:
    torch_be = lib.torch_backend(copy.deepcopy(model), plan.device, {"fp32": "fp32", "fp16": "fp16"}[prec])
    imgs = lib.sample_crops(cfg)[0]
    ref = lib.infer(torch_be, imgs)
    err = float(np.linalg.norm(lib.infer(ort, imgs) - ref) / max(np.linalg.norm(ref), 1e-30))
    o_rows = lib.profile(ort, lib.input_shape(cfg), plan.ort_batches, plan)
    t_rows = lib.profile(torch_be, lib.input_shape(cfg), plan.ort_batches, plan)
    torch_be.close()
    return [{**base, "batch": o["batch"], "ort_ms": o["wall_median_ms"], "torch_ms": t["wall_median_ms"],
             "ratio": o["wall_median_ms"] / t["wall_median_ms"], "rel_l2_vs_torch": err, "status": "ok"}
            for o, t in zip(o_rows, t_rows)]


def bench_ort(plan: SimpleNamespace, work: Path) -> Dict[str, Any]:
    """Export fp32 / fp16 graphs, run them on ONNX Runtime's CUDA provider, compare with torch CUDA."""
    rows: List[Dict[str, Any]] = []
    for name in plan.ort_models:
        cfg, model = lib.build(name, plan.size)
        t0 = time.perf_counter()
        paths = {"fp32": lib.export_onnx(model, cfg, work / f"{name}.fp32.onnx", max(plan.ort_batches))}
        paths["fp16"] = lib.convert_fp16(paths["fp32"], work / f"{name}.fp16.onnx")
        export_s = time.perf_counter() - t0
        log(f"ort {name}: exported fp32 + fp16 graphs in {export_s:.1f} s")
        for prec, path in paths.items():
            base = {"model": name, "precision": prec, "export_s": export_s, "onnx_bytes": path.stat().st_size}
            if not is_cuda(plan.device):
                rows.append(skipped(base, f"ONNX Runtime's CUDA provider {NEEDS_CUDA}; graphs exported"))
                continue
            try:
                ort = lib.ort_backend(path)
            except Exception as e:  # noqa: BLE001 - e.g. onnxruntime-gpu not installed
                rows.append(skipped(base, f"{type(e).__name__}: {e}", "unavailable"))
                continue
            rows += _ort_vs_torch(plan, cfg, model, ort, prec, base)
            ort.close()
            release(plan.device)
    return {"status": "ok", "rows": rows, "notes": [
        "Both sides take and return host float32 arrays (wall time includes the copies). torch counterpart: fp32, "
        "or fp16 autocast for the mixed-precision fp16 graph. rel L2: ORT output against torch's on the sample."]}


def bench_floors(plan: SimpleNamespace, latency: Dict[str, Any] | None) -> Dict[str, Any]:
    """Compute floor (MACs / measured matmul rate) and memory floor (bytes / measured copy bandwidth) against the
    measured latency of the floor model (best latency-section median at that batch/precision, else measured)."""
    name, batch, prec, dev = FLOOR_MODEL, plan.floor_batch, plan.floor_precision, plan.device
    cfg, model = lib.build(name, plan.size)
    macs = lib.macs(model, lib.input_shape(cfg))
    traffic = traffic_bytes(model, lib.input_shape(cfg), batch, 2 if prec == "fp16-weights" else 4)
    rate = matmul_rate(dev, dtype_of(prec), plan.matmul_n, plan.runs)
    bw = copy_bandwidth(dev, plan.copy_bytes, plan.runs)
    rows = [r for r in (latency or {}).get("rows", []) if r.get("status") == "ok" and r["model"] == name
            and r["batch"] == batch and r["precision"] == prec]
    if rows:
        best = min(rows, key=lambda r: r["median_ms"])
        measured, source = best["median_ms"], f"latency section, {best['mode']}"
    else:
        runner = Runner(forward_fn(device_model(model, dev, prec), "eager"), dev, prec)
        timed = lib.profile(runner, lib.input_shape(cfg), [batch], plan, make_input(dev, dtype_of(prec)))
        measured = timed[0]["median_ms"]
        source = "measured here, eager"
    compute_ms = batch * macs["gmacs_all_ops"] * 1e9 / rate * 1e3
    memory_ms = traffic["total_bytes"] / bw * 1e3
    row = {"model": name, "precision": prec, "batch": batch, "gmacs_per_image": macs["gmacs_all_ops"],
           "gmacs_mmcv_per_image": macs["gmacs_mmcv"], "mac_rate_tmacs": rate / 1e12, "bandwidth_gbs": bw / 1e9,
           **traffic, "traffic_mb": traffic["total_bytes"] / 1e6, "compute_floor_ms": compute_ms,
           "memory_floor_ms": memory_ms, "measured_ms": measured, "measured_source": source,
           "over_compute": measured / compute_ms, "over_memory": measured / memory_ms, "status": "ok"}
    log(f"floors {name} batch {batch} {prec}: compute {compute_ms:.3f} ms, memory {memory_ms:.3f} ms, measured "
         f"{measured:.3f} ms")
    return {"status": "ok", "rows": [row], "notes": [
        f"Matmul rate: best of {plan.runs} dense {plan.matmul_n}^2 {dtype_of(prec)} matmuls on {dev}; bandwidth: best "
        f"device copy of {plan.copy_bytes / 2**20:.0f} MiB (read + write). MACs: every conv/matmul multiply-add "
        f"(torch FlopCounterMode / 2). Memory floor: {TRAFFIC_NOTE}. Measured: {source}."]}


def bench_image(plan: SimpleNamespace, work: Path) -> Dict[str, Any]:
    """The image-to-keypoints graph in torch on the device (crop, flip test and decoding in the graph): latency per
    persons count of one 640x480 image, and persons/s through the evaluator (whole images, decoded once) against
    the host pipeline (host crops, flip test and decoding) on the same detections."""
    from srpose.eval.backends import TorchImageBackend
    from srpose.eval.bench import image_graph_feed
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.tasks import task_for

    rows: List[Dict[str, Any]] = []
    name = FLOOR_MODEL
    cfg, model = lib.build(name, plan.size)
    task = task_for(cfg)
    precisions = LAT_PRECISIONS[:1] + (("fp16",) if is_cuda(plan.device) else ())
    for prec in precisions:
        be = TorchImageBackend(copy.deepcopy(model), task, device=plan.device, precision=prec)
        prof = lib.profile(be, (3, 480, 640), plan.image_persons, plan,
                           lambda shape, rng: image_graph_feed(task, be.card, shape, rng))
        rows += [{"model": name, "precision": prec, "kind": "latency", "persons": r["batch"],
                  "median_ms": r["median_ms"], "p99_ms": r["p99_ms"], "persons_per_s": r["batch"] * 1e3 /
                  r["median_ms"], "latency_source": r["latency_source"], "status": "ok"} for r in prof]
        ds = lib.sample_dataset(cfg, work, plan.copies, det=True)
        opts = EvalOptions(batch_size=plan.e2e_batch, workers=plan.workers, progress=False)
        image = evaluate(task, be, ds, opts)
        be.close()
        host = lib.torch_backend(copy.deepcopy(model), plan.device, prec)
        crop = evaluate(task, host, ds, opts)
        host.close()
        rows.append({"model": name, "precision": prec, "kind": "e2e", "persons": len(ds),
                     "image_persons_per_s": image.images_per_s, "host_persons_per_s": crop.images_per_s,
                     "speedup": image.images_per_s / crop.images_per_s, "status": "ok"})
        log(f"image {name} {prec}: {image.images_per_s:.0f} persons/s end to end vs {crop.images_per_s:.0f} (host)")
        release(plan.device)
    return {"status": "ok", "rows": rows, "notes": [
        "The image-to-keypoints graph run in torch (what `srpose export --image-input` exports; TensorRT is not "
        "installed on the lent machine): uint8 images and boxes in, keypoints in image pixels out. Latency: one "
        f"640x480 image with that many persons. End to end: the COCO sample's detections x {plan.copies}, "
        f"{plan.workers} data-loader workers, the config's flip test; host = the same model with host crops, host "
        "flip test and host decoding. fp16: autocast for the network, the crop geometry and decoding in float32."]}


# ---- main ----
def _plan(args: argparse.Namespace, dev: torch.device) -> SimpleNamespace:
    """Sizes and repetitions: ``--quick`` is a seconds-long smoke run, the default the full GPU measurement."""
    cuda, mib, srpose_models = is_cuda(dev), 2 ** 20, [m for m in args.models if "srpose" in m]
    p = SimpleNamespace(device=dev, quick=args.quick, models=list(args.models),
                        floor_precision="fp16-weights" if cuda else "fp32", matmul_n=8192 if cuda else 1024)
    if args.quick:  # seconds on 2 CPU cores
        vars(p).update(size=QUICK_SIZE, latency_models=p.models[:2], batches=[1, 2], warmup_s=0.02, duration_s=0.1,
                       min_iters=3, runs=3, compile_budget_s=0.0, e2e_models=srpose_models[:1], copies=1,
                       e2e_batch=8, workers=0, ort_models=[FLOOR_MODEL], ort_batches=[1, 2], floor_batch=2,
                       copy_bytes=(256 if cuda else 32) * mib, image_persons=[1, 4])
    else:
        vars(p).update(size=None, latency_models=p.models, batches=[1, 8, 32, 128], warmup_s=0.3, duration_s=1.0,
                       min_iters=10, runs=20, compile_budget_s=120.0, e2e_models=p.models, copies=64, e2e_batch=32,
                       workers=min(8, os.cpu_count() or 1), ort_models=[FLOOR_MODEL, "hrnet_w32_srpose_coco_256x192"],
                       ort_batches=[1, 32], floor_batch=128, copy_bytes=(1024 if cuda else 256) * mib,
                       image_persons=[1, 8, 32, 128])
    p.batches = args.batches or p.batches
    p.ort_models = args.ort_models or p.ort_models
    p.compile_budget_s = p.compile_budget_s if args.compile_budget_s is None else args.compile_budget_s
    return p


def run(plan: SimpleNamespace, sections: Sequence[str]) -> Dict[str, Any]:
    """Run the chosen sections; returns ``{section: {status, rows, notes} | {status, reason}}``."""
    out: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="srpose-bench-gpu-") as tmp:
        work = Path(tmp)
        jobs = {"accuracy": lambda: bench_accuracy(plan), "decoder": lambda: bench_decoder(plan),
                "latency": lambda: bench_latency(plan), "e2e": lambda: bench_e2e(plan, work),
                "ort": lambda: bench_ort(plan, work), "floors": lambda: bench_floors(plan, out.get("latency")),
                "image": lambda: bench_image(plan, work)}
        for key in SECTIONS:
            if key not in sections:
                out[key] = {"status": "skipped", "reason": "not in --sections", "rows": []}
            elif key in ("accuracy", "e2e", "image") and not SHARED.is_dir():
                out[key] = {"status": "skipped", "reason": f"{SHARED} is absent", "rows": []}
            else:
                t0 = time.perf_counter()
                out[key] = guarded(jobs[key], log, key)
                out[key]["seconds"] = time.perf_counter() - t0
    return out


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few models, batches and iterations")
    ap.add_argument("--out", type=Path, required=True, help="folder for bench_gpu.json and bench_gpu.md")
    ap.add_argument("--docs", action="store_true", help=f"also replace the '{SECTION}' section of docs/benchmarks.md")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="presets (accuracy, latency, e2e)")
    ap.add_argument("--ort-models", nargs="+", default=None, help="presets to export for the ONNX Runtime section")
    ap.add_argument("--batches", nargs="+", type=int, default=None, help="latency batch sizes")
    ap.add_argument("--compile-budget-s", type=float, default=None,
                    help="seconds for torch.compile (default 120, quick 0)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type not in ("cpu", "cuda"):
        ap.error(f"--device {args.device}: use cpu or cuda[:N]")
    if is_cuda(dev) and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    if args.docs and not is_cuda(dev):
        ap.error("--docs writes GPU figures: it needs --device cuda")
    if is_cuda(dev):
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # static shapes: let cuDNN pick its fastest algorithms
    plan = _plan(args, dev)
    t0 = time.perf_counter()
    result: Dict[str, Any] = {"argv": list(sys.argv[1:] if argv is None else argv), "machine": machine_info(dev),
                              "settings": {k: str(v) if isinstance(v, torch.device) else v
                                           for k, v in vars(plan).items()}}
    result["sections"] = run(plan, args.sections)
    result["elapsed_s"] = time.perf_counter() - t0
    written = lib.write_outputs(args.out, result, REPO / "docs" / "benchmarks.md" if args.docs else None)
    print(render(result))
    print("wrote " + ", ".join(map(str, written)))
    bad = [k for k, s in result["sections"].items() if s["status"] == "failed"]
    bad += ["decoder (keypoints differ)"] * any(not r.get("same", True) for r in result["sections"]["decoder"]["rows"])
    if bad:
        print(f"problems: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
