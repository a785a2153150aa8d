#!/usr/bin/env python
"""Bytes moved per precision, and the ``## Bytes moved per precision`` section of docs/benchmarks.md.

For the demo preset ``res18w16_srpose_coco_96x64`` and ``res50_srpose_coco_256x192`` at their preset input sizes:
the FP32 export, the FP16 graph, the INT8 graph (``srpose export``'s defaults) and, where ModelOpt is installed
(``make modelopt-deps``), NVIDIA ModelOpt's INT8 graph (``modelopt.onnx.quantization.quantize``, CPU calibration,
``high_precision_dtype="fp16"``) and its AutoCast FP16 graph of the same FP32 graph. Each graph's activation bytes
written per person (:mod:`srpose.export.traffic`: shapes and types only, Q/DQ fused into their producers) and its
quantised layers and residual Adds with a quantised input. The figures depend on shapes and types alone: random
weights and 8 random calibration crops make the same graphs as a trained checkpoint would (ranges aside).

    python scripts/bench_traffic.py            # measure, write WORK/traffic.json and the section
    python scripts/bench_traffic.py --publish-only
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "## Bytes moved per precision"
MODELS = ("res18w16_srpose_coco_96x64", "res50_srpose_coco_256x192")
MODELOPT = REPO / ".venv-modelopt" / "bin" / "python"


def graphs_of(name: str, work: Path) -> dict[str, Path]:
    """The graphs of one model (ModelOpt's where its environment exists)."""
    import numpy as np
    import torch

    from srpose import build_model, get_config
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import quantize_int8
    from srpose.export.onnx_export import export_onnx

    cfg = get_config(name)
    torch.manual_seed(0)
    p = {k: work / f"{name}.{k}.onnx" for k in ("fp32", "fp16", "int8")}
    export_onnx(build_model(cfg, init=False).eval(), cfg, p["fp32"], batch=(1, 8, 32))
    convert_fp16(p["fp32"], p["fp16"])
    w, h = cfg.image_size
    crops = np.random.default_rng(0).standard_normal((8, 3, h, w)).astype(np.float32)
    quantize_int8(p["fp32"], p["int8"], [crops], method="max")
    if MODELOPT.is_file():
        np.save(work / f"{name}.crops.npy", crops)
        for mode in ("int8", "fp16"):
            out = work / f"{name}.modelopt_{mode}.onnx"
            cmd = [str(MODELOPT), str(REPO / "export" / "_modelopt_run.py"), str(p["fp32"]), str(out),
                   "--mode", mode, "--calib", str(work / f"{name}.crops.npy"), "--method", "max"]
            if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
                p[f"modelopt_{mode}"] = out
    return p


def measure(name: str, work: Path) -> dict[str, Any]:
    import onnx

    from srpose.export._int8_mixed import quantized_nodes
    from srpose.export._int8_place import residual_add_inputs
    from srpose.export.traffic import activation_traffic

    paths = graphs_of(name, work)
    residual = residual_add_inputs(onnx.load(str(paths["fp32"])))
    out: dict[str, Any] = {}
    for key, path in paths.items():
        m = onnx.load(str(path))
        prod = {o: n for n in m.graph.node for o in n.output}
        adds = [n for n in m.graph.node if n.name in residual]
        quantised_in = [sum(getattr(prod.get(t), "op_type", "") == "DequantizeLinear" for t in n.input) for n in adds]
        out[key] = dict(traffic=activation_traffic(m).to_dict(), quantized=len(quantized_nodes(m)),
                        residual_adds=len(adds), residual_one=sum(q == 1 for q in quantised_in),
                        residual_two=sum(q == 2 for q in quantised_in))
    return out


_LABELS = dict(fp32="FP32", fp16="FP16 (srpose)", int8="INT8 (srpose export)", modelopt_fp16="FP16 (ModelOpt AutoCast)",
               modelopt_int8="INT8 (ModelOpt)")


def res50_ap(work: Path, data_dir: Path, epochs: int) -> dict[str, Any]:
    """AP per precision of res50-SRPose trained here: the preset at the demo's 64x96 input (its 256x192 does not
    train on 2 CPU cores in reasonable time), the demo's recipe for ``epochs`` epochs on the generated people of
    ``scripts/bench_int8_search.py`` (``data_dir``: train/ and val/), evaluated on the 2,000 held-out persons (flip
    on); INT8 graphs written by ``write_mixed_model`` from the calibration ranges (the same graph as the export's)."""
    import os

    from srpose import get_config
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.export._int8_mixed import write_mixed_model
    from srpose.export.calibration import CalibrationReader
    from srpose.export.fp16 import convert_fp16
    from srpose.export.int8 import calibration_ranges
    from srpose.export.onnx_export import export_onnx
    from srpose.export.traffic import traffic_of_file
    from srpose.tasks import task_for
    from srpose.train.trainer import train

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    demo = get_config("res18w16_srpose_coco_96x64")
    cfg = get_config("res50_srpose_coco_256x192").with_input_size(64, 96)
    cfg.data["sigma"] = demo.data["sigma"]
    cfg.train.update(demo.train, epochs=epochs, lr_steps=(epochs - 1,))
    cfg.name = "res50_srpose_coco_96x64"
    tdir = work / "train" / cfg.name
    ckpt = tdir / "latest.pth"
    if not ckpt.is_file():
        train(cfg, train_ann=data_dir / "train" / "annotations.json", train_images=data_dir / "train" / "images",
              work_dir=tdir, epochs=epochs, workers=0, seed=0, device="cpu", checkpoint_every=epochs)
    from srpose.checkpoint import build_with_weights

    model, _ = build_with_weights(cfg, str(ckpt), command="bench_traffic")
    task = task_for(cfg)
    g = {k: work / f"{cfg.name}.{k}.onnx" for k in ("fp32", "fp16", "int8")}
    export_onnx(model, task, g["fp32"], batch=(1, 8, 32))
    convert_fp16(g["fp32"], g["fp16"])
    reader = CalibrationReader(data_dir / "train" / "annotations.json", data_dir / "train" / "images", cfg, num=512)
    write_mixed_model(g["fp32"], g["int8"], calibration_ranges(g["fp32"], reader), [])
    dataset = task.dataset(str(data_dir / "val" / "annotations.json"), str(data_dir / "val" / "images"),
                           gt_bbox=True)
    out = {}
    for k, path in g.items():
        r = evaluate(task, OnnxRuntimeBackend(path), dataset, EvalOptions(workers=0, progress=False))
        out[k] = dict(AP=r.metrics["AP"], persons=r.num_persons, traffic=traffic_of_file(path).to_dict())
    return dict(epochs=epochs, results=out)


#: the review's ModelOpt INT8 / FP16 ratios, the bound of ours (issue #22), and the FP16 / FP32 bound
_BOUNDS = {"res18w16_srpose_coco_96x64": 0.90, "res50_srpose_coco_256x192": 0.83}
_FP16_BOUND = 0.55


def _targets(models: dict[str, Any]) -> str:
    """One line: each model's INT8 / FP16 and FP16 / FP32 ratios against their bounds."""
    parts = []
    for name, g in models.items():
        t = {k: g[k]["traffic"]["bytes_per_person"] for k in ("fp32", "fp16", "int8")}
        r8, r16 = t["int8"] / t["fp16"], t["fp16"] / t["fp32"]
        ok = r8 <= _BOUNDS.get(name, 1.0) and r16 <= _FP16_BOUND
        parts.append(f"`{name}` INT8 / FP16 {r8:.2f} (bound {_BOUNDS.get(name, 1.0):.2f}), FP16 / FP32 {r16:.2f} "
                     f"(bound {_FP16_BOUND:.2f}): {'met' if ok else 'NOT met'}")
    return "Targets: " + "; ".join(parts) + "."


def publish(work: Path, out_md: Path) -> str:
    from srpose._io import replace_markdown_section

    res = json.loads((work / "traffic.json").read_text())
    lines = [SECTION, "",
             "`scripts/bench_traffic.py`: activation bytes a fused TensorRT engine writes per person between its "
             "layers, by stored type, from the graph's shapes and types (`srpose.export.traffic`: Q/DQ and casts fused "
             "into their producers, views and Concat free, epilogues fused into their conv; the float32 input and "
             "heatmap output are the same in every precision and counted apart): the CPU-measurable stand-in for "
             "TensorRT's memory traffic, also in every file entry of `srpose export`'s report. The INT8 graph is "
             "`srpose export --precision int8`'s (TensorRT's Q/DQ placement, float16 outside the INT8 layers, since "
             "#22); ModelOpt's graphs are `nvidia-modelopt` 0.47 on the same FP32 graph (CPU calibration, "
             "`high_precision_dtype=\"fp16\"`). Before #22 the review counted INT8 / FP16 at 1.37 (demo) and 1.52 "
             "(res50-SRPose): everything outside the INT8 convs was float32. Targets: INT8 / FP16 at most ModelOpt's "
             "0.90 and 0.83 (the review's figures), FP16 / FP32 at most 0.55.", "",
             f"Measured {res['meta']['date']}; {res['meta']['modelopt']}.", ""]
    for name, graphs in res["models"].items():
        t32, t16 = graphs["fp32"]["traffic"]["bytes_per_person"], graphs["fp16"]["traffic"]["bytes_per_person"]
        lines += [f"### {name}", "",
                  "| graph | MB/person | float32 | float16 | int8 | vs FP32 | vs FP16 | INT8 layers | residual Adds: "
                  "1 / 2 quantised inputs | output MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, g in graphs.items():
            t = g["traffic"]
            b = t["bytes_by_dtype"]
            lines.append(f"| {_LABELS.get(key, key)} | {t['bytes_per_person'] / 1e6:.3f} | "
                         + " | ".join(f"{b.get(d, 0) / 1e6:.3f}" for d in ("float32", "float16", "int8"))
                         + f" | {t['bytes_per_person'] / t32:.2f} | {t['bytes_per_person'] / t16:.2f} | "
                           f"{g['quantized']} | {g['residual_one']} / {g['residual_two']} of {g['residual_adds']} | "
                           f"{t['output_bytes'] / 1e6:.3f} |")
        lines.append("")
    lines += [_targets(res["models"]), ""]
    ap = res.get("res50_ap")
    if ap:
        r = ap["results"]
        lines += ["### AP per precision: res50-SRPose trained here", "",
                  f"`res50_srpose_coco_256x192` at the demo's 64x96 input, trained {ap['epochs']} epochs on the "
                  "generated people of `scripts/bench_int8_search.py` (the demo's recipe), evaluated on its 2,000 "
                  "held-out persons (flip test on) in ONNX Runtime, float16 rounding emulated. ΔAP in points.", "",
                  "| graph | AP | ΔAP vs FP32 | MB/person | vs FP32 |", "|---|---:|---:|---:|---:|"]
        for k, label in (("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")):
            mb = r[k]["traffic"]["bytes_per_person"]
            lines.append(f"| {label} | {r[k]['AP']:.4f} | {100 * (r[k]['AP'] - r['fp32']['AP']):+.2f} | "
                         f"{mb / 1e6:.3f} | {mb / r['fp32']['traffic']['bytes_per_person']:.2f} |")
        lines.append("")
    text = "\n".join(lines).rstrip() + "\n"
    replace_markdown_section(out_md, SECTION, text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "runs" / "traffic")
    p.add_argument("--publish-only", action="store_true")
    p.add_argument("--ap-epochs", type=int, default=0, help="also train res50-SRPose (64x96) this many epochs on the "
                   "generated data of scripts/bench_int8_search.py and measure AP per precision")
    p.add_argument("--data", type=Path, default=REPO / "runs" / "int8_search" / "data")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    if not args.publish_only:
        args.work.mkdir(parents=True, exist_ok=True)
        mo = "ModelOpt 0.47 from .venv-modelopt" if MODELOPT.is_file() else "ModelOpt not installed: no ModelOpt rows"
        res = dict(meta=dict(date=_dt.date.today().isoformat(), modelopt=mo),
                   models={name: measure(name, args.work) for name in MODELS})
        if args.ap_epochs:
            res["res50_ap"] = res50_ap(args.work, args.data, args.ap_epochs)
        (args.work / "traffic.json").write_text(json.dumps(res, indent=1))
    print(publish(args.work, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
