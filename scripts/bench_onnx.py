#!/usr/bin/env python
"""Benchmark ONNX Runtime (CPU) against PyTorch eager (CPU), and the in-graph decoder against host decoding.

1. Latency of the FP32 ONNX export in ONNX Runtime vs the PyTorch model, same thread count, batch 1 and 8, for
   ``res50_srpose_coco_256x192`` and ``hrnet_w32_srpose_coco_256x192`` (median of interleaved runs; target:
   ONNX Runtime / PyTorch <= 0.75).
2. End to end through the evaluator (data loading, inference, decoding, OKS-NMS, COCO AP) on the ../shared COCO
   sample (replicated to get a longer run): the ``--decode`` graph vs the heatmap graph (throughput ratio).
3. FP16 / INT8 output error vs FP32 on real crops (with the checkpoint given by ``--checkpoint``; with random
   weights when none is given, which says nothing about AP).

Writes the ``## ONNX Runtime vs PyTorch (CPU)`` section of ``docs/benchmarks.md`` (``--no-write``: print only).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning OpenMP workers between interleaved runs

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from srpose._io import replace_markdown_section  # noqa: E402

SECTION = "## ONNX Runtime vs PyTorch (CPU)"
MODELS = ("res50_srpose_coco_256x192", "hrnet_w32_srpose_coco_256x192")
SHARED = REPO.parent / "shared" / "data" / "coco"


def _median_times(fns: Dict[str, Callable[[], object]], runs: int) -> Dict[str, float]:
    for fn in fns.values():  # warm-up (and ONNX Runtime's first-run allocations)
        fn()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    order = np.random.default_rng(0)
    for _ in range(runs):
        for name in order.permutation(list(fns)):
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in samples.items()}


def _build(name: str, checkpoint: str | None) -> tuple[Any, Any]:
    from srpose import build_model, get_config, load_checkpoint

    cfg = get_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return cfg, model


def bench_latency(name: str, work: Path, threads: int, runs: int, checkpoint: str | None) -> List[Dict[str, Any]]:
    """Rows (model, batch, torch ms, ort ms, ratio) for batch 1 and 8."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.export.onnx_export import export_onnx

    cfg, model = _build(name, checkpoint)
    path = export_onnx(model, cfg, work / f"{name}.fp32.onnx", batch=(1, 8, 8))
    sess = OnnxRuntimeBackend(path, threads=threads).session  # the backend's session options
    torch.set_num_threads(threads)
    rows = []
    w, h = cfg.image_size
    for b in (1, 8):
        x = np.random.default_rng(b).standard_normal((b, 3, h, w)).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch() -> object:
            with torch.inference_mode():
                return model(xt)

        times = _median_times({"torch": run_torch, "ort": lambda: sess.run(None, {"input": x})},
                              runs if b == 1 else max(3, runs // 2))  # interleaved, median
        rows.append(dict(model=name, batch=b, torch_ms=times["torch"], ort_ms=times["ort"],
                         ratio=times["ort"] / times["torch"]))
        print(f"{name} batch {b}: torch {times['torch']:.1f} ms, onnxruntime {times['ort']:.1f} ms, "
              f"ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def _replicated_coco(work: Path, copies: int) -> Path:
    """The shared COCO sample with every annotation repeated ``copies`` times (new ids): a longer eval run."""
    data = json.loads((SHARED / "test_coco.json").read_text())
    anns, next_id = [], 1
    for _ in range(copies):
        for a in data["annotations"]:
            anns.append({**a, "id": next_id})
            next_id += 1
    data["annotations"] = anns
    out = work / f"coco_x{copies}.json"
    out.write_text(json.dumps(data))
    return out


def bench_decode_graph(name: str, work: Path, threads: int, copies: int, checkpoint: str | None) -> Dict[str, Any]:
    """Evaluator throughput of the --decode graph vs the heatmap graph (flip off, same crops)."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.export.onnx_export import export_onnx
    from srpose.data import TopDownCocoDataset
    from srpose.tasks import task_for

    cfg, model = _build(name, checkpoint)
    heat = export_onnx(model, cfg, work / f"{name}.fp32.onnx", batch=(1, 8, 8))
    dec = export_onnx(model, cfg, work / f"{name}.decode.fp32.onnx", batch=(1, 8, 8), decode=True)
    ds = TopDownCocoDataset(_replicated_coco(work, copies), SHARED, cfg.data, use_gt_bbox=True)
    out: Dict[str, Any] = dict(model=name, persons=len(ds))
    results = {}
    for _ in range(2):  # interleaved twice, best of two
        for kind, path in (("heatmaps", heat), ("keypoints", dec)):
            backend = OnnxRuntimeBackend(path, threads=threads)
            res = evaluate(task_for(cfg), backend, ds, EvalOptions(flip=False, batch_size=8, workers=0,
                                                                    progress=False))
            prev = results.get(kind)
            if prev is None or res.images_per_s > prev.images_per_s:
                results[kind] = res
    for kind, res in results.items():
        out[kind] = dict(persons_per_s=res.images_per_s, backend_ms_per_person=res.backend_ms_per_person,
                         AP=res.metrics["AP"])
    out["ratio"] = out["keypoints"]["persons_per_s"] / out["heatmaps"]["persons_per_s"]
    out["same_ap"] = abs(out["keypoints"]["AP"] - out["heatmaps"]["AP"]) < 1e-9
    print(f"{name} evaluator: heatmap graph {out['heatmaps']['persons_per_s']:.1f} persons/s, decode graph "
          f"{out['keypoints']['persons_per_s']:.1f} persons/s, ratio {out['ratio']:.2f}", flush=True)
    return out


def bench_precision(name: str, work: Path, threads: int, checkpoint: str | None) -> Dict[str, Any]:
    """FP16 (float16-rounding emulation) and INT8 (entropy, 12 crops) output error vs FP32 on the sample crops."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.export.calibration import CalibrationReader
    from srpose.export.compare import ErrorAccumulator
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8
    from srpose.tasks import task_for

    cfg, _ = _build(name, checkpoint)
    task = task_for(cfg)
    fp32 = work / f"{name}.fp32.onnx"
    reader = CalibrationReader(SHARED / "test_coco.json", SHARED, cfg, num=None, batch_size=6)
    batches = list(reader)
    variants = {"fp16 (default float32 islands)": {}, "fp16 (no float32 islands)": dict(keep_fp32_ops=[],
                                                                                         keep_fp32_nodes=[])}
    files = {}
    for label, kw in variants.items():
        files[label] = work / f"{name}.{len(files)}.fp16.onnx"
        convert_fp16(fp32, files[label], **kw)
    files["int8 (entropy)"] = work / f"{name}.int8.onnx"
    quantize_int8(fp32, files["int8 (entropy)"], batches, method="entropy")
    ref_backend = OnnxRuntimeBackend(fp32, threads=threads)
    ref = [ref_backend.infer(b)["heatmaps"] for b in batches]
    iw, ih = cfg.image_size

    def kpts(h: np.ndarray) -> np.ndarray:
        n = len(h)
        c = np.tile(np.array([[iw / 2, ih / 2]], np.float32), (n, 1))
        s = np.tile(np.array([[iw / 200, ih / 200]], np.float32), (n, 1))
        return task.codec.decode_to_image(h, c, s)[0]

    out: Dict[str, Any] = dict(model=name, crops=sum(len(b) for b in batches), rows=[])
    for label, path in files.items():
        backend = OnnxRuntimeBackend(path, threads=threads)
        acc, kacc = ErrorAccumulator(), ErrorAccumulator(keypoints=True)
        for b, r in zip(batches, ref):
            o = backend.infer(b)["heatmaps"]
            acc.add(r, o)
            kacc.add(kpts(r), kpts(o))
        e = acc.result()
        out["rows"].append(dict(variant=label, rel_l2=e["rel_l2"], max_abs_rel=e["max_abs"] / e["ref_max_abs"],
                                cosine=e["cosine"], kpt_px=kacc.result()["mean_kpt_px"]))
        print(f"{name} {label}: rel L2 {e['rel_l2']:.2e}, keypoints {out['rows'][-1]['kpt_px']:.3f} px", flush=True)
    return out


def _env(threads: int) -> str:
    import onnxruntime as ort

    try:
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        load = "n/a"
    return (f"{_dt.date.today().isoformat()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {ort.__version__}, {threads} threads for both, os.cpu_count() {os.cpu_count()}, "
            f"{platform.machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load}")


def _load_note() -> str:
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return ""
    if load <= (os.cpu_count() or 1):
        return ""
    return (" The machine was busy (load average above the CPU count) while measuring: absolute times are inflated "
            "and vary by run; rerun on a quiet machine for clean figures.")


def render(latency: List[Dict[str, Any]], decode: List[Dict[str, Any]], precision: List[Dict[str, Any]],
           threads: int, checkpoint: str | None) -> str:
    lines = [SECTION, "",
             "`scripts/bench_onnx.py`: FP32 ONNX export (opset 17, onnxsim) in ONNX Runtime (CPU provider, graph "
             "optimisation ALL, idle threads not spinning: the backend's settings) against the PyTorch model in "
             "eager mode (`inference_mode`, `OMP_WAIT_POLICY=PASSIVE`), same thread count, median of interleaved "
             "runs in one process. Ratios are the figures to compare: absolute times vary "
             "with the machine and its load.", "", f"Measured {_env(threads)}.{_load_note()}", "",
             "Target: ONNX Runtime latency <= 0.75 x PyTorch's.", "",
             "| model | batch | PyTorch ms | ONNX Runtime ms | ratio | target |", "|---|---:|---:|---:|---:|---|"]
    for r in latency:
        lines.append(f"| {r['model']} | {r['batch']} | {r['torch_ms']:.1f} | {r['ort_ms']:.1f} | {r['ratio']:.2f} | "
                     f"{'meets' if r['ratio'] <= 0.75 else 'misses'} |")
    if decode:
        lines += ["", "End to end through the evaluator (data loading, inference, decoding, OKS-NMS and COCO AP, "
                  "batch 8, flip off, no data-loader workers, best of two interleaved runs) on the ../shared COCO "
                  "sample replicated: the `--decode` graph (keypoints out) against the heatmap graph (full-resolution "
                  "heatmaps out, decoded by the evaluator in numpy).", "",
                  "| model | persons | heatmap graph persons/s | decode graph persons/s | ratio | same AP |",
                  "|---|---:|---:|---:|---:|---|"]
        for d in decode:
            lines.append(f"| {d['model']} | {d['persons']} | {d['heatmaps']['persons_per_s']:.1f} | "
                         f"{d['keypoints']['persons_per_s']:.1f} | {d['ratio']:.2f} | "
                         f"{'yes' if d['same_ap'] else 'no'} |")
        lines += ["", "On the CPU both graphs share the same memory, so the decode graph only moves the decoding from "
                  "the evaluator's numpy code into ONNX Runtime; its gain is on a GPU, where it returns 204 bytes per "
                  "person instead of the full-resolution heatmaps (3.3 MB at 256x192) and needs no host decoding."]
    if precision:
        src = f"checkpoint `{Path(checkpoint).name}`" if checkpoint else "random weights (mmpose initialisation)"
        lines += ["", f"FP16 and INT8 graphs against the FP32 graph on the sample's real crops, {src}. FP16 runs "
                  "with explicit float16 rounding of every float16 tensor (ONNX Runtime's CPU provider would "
                  "otherwise round only the weights); INT8 is the Q/DQ graph as TensorRT builds it (TensorRT's "
                  "placement, float16 outside the INT8 layers, the head's output conv INT8; entropy calibration on "
                  "the same crops; run with the same float16 rounding). Keypoint error: mean distance of the decoded keypoints in "
                  "input pixels.", "",
                  "| model | variant | rel L2 | max abs / max | cosine | keypoint error (px) |",
                  "|---|---|---:|---:|---:|---:|"]
        for p in precision:
            for r in p["rows"]:
                lines.append(f"| {p['model']} | {r['variant']} | {r['rel_l2']:.2e} | {r['max_abs_rel']:.2e} | "
                             f"{r['cosine']:.6f} | {r['kpt_px']:.3f} |")
    if not checkpoint:
        lines += ["", "Random weights say nothing about AP: the AP of the FP16 and INT8 graphs of a trained model is "
                  "in the demo section below (`scripts/bench_demo.py`); with your own checkpoint rerun this script "
                  "with `--checkpoint CKPT` or use `srpose parity`."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this script's section of ``path``, keeping every other section."""
    replace_markdown_section(path, SECTION, section)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="presets to time")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads for both runtimes")
    ap.add_argument("--runs", type=int, default=15, help="timed runs at batch 1 (half at batch 8)")
    ap.add_argument("--copies", type=int, default=8, help="replications of the COCO sample for the evaluator run")
    ap.add_argument("--checkpoint", default=None, help="trained checkpoint of the first model (precision errors)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("latency", "decode", "precision"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.copies < 1:
        ap.error("--threads, --runs and --copies must be >= 1")
    latency: List[Dict[str, Any]] = []
    decode: List[Dict[str, Any]] = []
    precision: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="srpose-bench-onnx-") as tmp:
        work = Path(tmp)
        for i, name in enumerate(args.models):
            ckpt = args.checkpoint if i == 0 else None
            if "latency" not in args.skip:
                latency += bench_latency(name, work, args.threads, args.runs, ckpt)
            if "decode" not in args.skip and i == 0 and SHARED.is_dir():
                decode.append(bench_decode_graph(name, work, args.threads, args.copies, ckpt))
            if "precision" not in args.skip and SHARED.is_dir():
                if not (work / f"{name}.fp32.onnx").exists():
                    from srpose.export.onnx_export import export_onnx

                    cfg, model = _build(name, ckpt)
                    export_onnx(model, cfg, work / f"{name}.fp32.onnx", batch=(1, 8, 8))
                precision.append(bench_precision(name, work, args.threads, ckpt))
    section = render(latency, decode, precision, args.threads, args.checkpoint)
    print(section)
    if not args.no_write:
        write_section(args.out, section)
        print(f"wrote the '{SECTION}' section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
