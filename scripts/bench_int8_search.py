#!/usr/bin/env python
"""AP-guided INT8 on two trained models, and the ``## AP-guided INT8 search (CPU)`` section of docs/benchmarks.md.

1. Data: generated single-person images (``srpose.data.synthetic``): training, calibration (from the training
   set: deployment calibrates on training data) and a held-out validation set.
2. Models, trained here on the CPU (or reused from ``--work``): the demo preset ``res18w16_srpose_coco_96x64``
   with the demo's recipe (6 epochs on 4,000 images), and a small TransPose-R with the SRPose head at the same
   64x96 input (``transpose_tiny_config``: ResNet-S with one bottleneck per stage, a 2-layer Transformer encoder
   of width 64 with 4 heads, post-norm LayerNorm, softmax attention) trained 4 epochs: the second model has the
   attention and LayerNorm that are the known INT8/FP16 trouble spots, at a size that trains in minutes on 2
   cores (HRFormer's windowed attention graphs are ~10x larger and slower to run in ONNX Runtime).
3. For each: ``srpose quantize`` (:func:`srpose.eval.int8_search.search_int8`) on ``--search-persons`` held-out
   persons, then every chosen mixed graph, the INT8 export, FP16 and FP32 (and the head's output conv in the
   other precision) are evaluated again, with the bytes each writes per person (:mod:`srpose.export.traffic`), on
   the *other* held-out persons, so the figures are not only those the search picked its set on.
   Scenarios: entropy calibration (the export's default) with the budget; the same with budget 0 (a rerun: the
   cache means no sensitivity graph runs again); min-max calibration with ``--stress-ap-drop``, where INT8 costs
   more AP and the search has to move groups to FP16.

Everything is written under ``--work`` (default ``runs/int8_search``); ``--publish-only`` rewrites the section
from the JSON a previous run left there.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "## AP-guided INT8 search (CPU)"
DEMO = "res18w16_srpose_coco_96x64"


def transpose_tiny_config() -> Any:
    """TransPose-R (ResNet-S 1+1 bottlenecks, 2 encoder layers, d_model 64, 4 heads, FFN 128) with a 2-stage
    SRPose head at 64x96, the demo's data settings and a short Adam schedule."""
    from srpose import get_config

    cfg = get_config("transpose_r_a4_srpose_coco_256x192")
    cfg.model["backbone"].update(layers=(1, 1), d_model=64, dim_feedforward=128, nhead=4, num_encoder_layers=2,
                                 dropout=0.0)
    cfg.model["keypoint_head"].update(in_channels=[64, 256], out_channels=[64, 32], per_emb_nums=[4, 4])
    cfg = cfg.with_input_size(64, 96)
    demo = get_config(DEMO)
    cfg.data["sigma"] = demo.data["sigma"]
    cfg.train.update(demo.train, lr=1e-3, epochs=4, lr_steps=(3,), channels_last=False)
    cfg.name = "transpose_tiny_srpose_coco_96x64"
    return cfg


def generate(work: Path, n_train: int, n_val: int) -> dict[str, dict[str, Path]]:
    from srpose.data.synthetic import generate_dataset

    gen = dict(image_size=(192, 160), people=(1, 1), progress=True)
    out = {}
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        d = work / "data" / split
        if (d / "annotations.json").is_file():
            out[split] = dict(ann=d / "annotations.json", images=d / "images")
        else:
            out[split] = generate_dataset(d, num_images=n, seed=seed, **gen)
    return out


def train_model(cfg: Any, data: dict, work: Path, epochs: int) -> tuple[Path, float, dict[str, Any]]:
    """(checkpoint, seconds, training summary) of ``cfg`` trained on the generated data (reused when present)."""
    from srpose.train.trainer import train

    tdir = work / "train" / cfg.name
    done = tdir / "summary.json"
    if done.is_file():
        s = json.loads(done.read_text())
        return Path(s["checkpoint"]), float(s["seconds"]), s
    (tdir).mkdir(parents=True, exist_ok=True)
    (tdir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    t0 = time.perf_counter()
    res = train(cfg, train_ann=data["train"]["ann"], train_images=data["train"]["images"], work_dir=tdir,
                epochs=epochs, workers=0, seed=0, device="cpu", checkpoint_every=epochs, progress=True)
    secs = time.perf_counter() - t0
    s = dict(checkpoint=str(res.latest), seconds=secs, epochs=res.epochs, images_per_s=res.images_per_s,
             final_loss=res.final_loss, config=str(tdir / "config.json"))
    done.write_text(json.dumps(s, indent=1))
    return Path(s["checkpoint"]), secs, s


def split_validation(val: dict[str, Path], work: Path, n_search: int) -> tuple[Path, Path]:
    """The held-out annotations split by image: the first ``n_search`` images for the search, the rest to confirm
    its figures on persons it did not see."""
    data = json.loads(Path(val["ann"]).read_text())
    images = sorted(data["images"], key=lambda im: im["id"])
    out = []
    for tag, part in (("search", images[:n_search]), ("confirm", images[n_search:])):
        ids = {im["id"] for im in part}
        path = work / "data" / f"val_{tag}.json"
        path.write_text(json.dumps(dict(data, images=part,
                                        annotations=[a for a in data["annotations"] if a["image_id"] in ids])))
        out.append(path)
    return out[0], out[1]


def quantize(cfg_file: Path, ckpt: Path, data: dict, val_ann: Path, out: Path, scenario: dict, cache: Path) -> Any:
    """``srpose quantize`` as a library call (calibration on 512 training crops, AP on the search persons; the
    calibration and sensitivity cache in ``cache``)."""
    from srpose.eval.int8_search import QuantizeOptions, search_int8

    opts = QuantizeOptions(out_dir=out, calib_ann=str(data["train"]["ann"]), calib_images=str(data["train"]["images"]),
                           val_ann=str(val_ann), val_images=str(data["val"]["images"]),
                           max_ap_drop=scenario["budget"], calib_method=scenario["method"], calib_num=512,
                           cache_dir=cache)
    return search_int8(str(cfg_file), opts, checkpoint=str(ckpt))


#: the heads' output convs (SR head, SRPose head, simple head): FP16 and INT8 by default since #22, measured here
HEAD_OUTPUT = ("*heatmap_head*", "*converge*", "*final_layer*")


def confirm(cfg_file: Path, scenarios: list[dict], data: dict, confirm_ann: Path, cache: Path
            ) -> dict[str, dict[str, Any]]:
    """AP and bytes moved per person on the persons the searches did not see: FP32, FP16 (and FP16 with the head's
    output conv in FP32), per calibration method the INT8 export (every layer INT8) and INT8 with the head's
    output conv in FP16, and each search's chosen mixed graph. INT8 graphs are written by ``write_mixed_model`` from the
    calibration ranges at hand (the same graph as ``srpose export --precision int8 [--int8-exclude ...]``)."""
    import onnx

    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.export._int8_mixed import write_mixed_model
    from srpose.export.calibration import CalibrationReader
    from srpose.export.fp16 import DEFAULT_KEEP_FP32_NODES, convert_fp16
    from srpose.export.int8 import calibration_ranges, resolve_excluded_nodes
    from srpose.export.traffic import traffic_of_file
    from srpose.tasks import task_for

    task = task_for(str(cfg_file))
    fp32 = Path(scenarios[0]["report"].files["fp32"])
    out = fp32.parent
    reader = CalibrationReader(data["train"]["ann"], data["train"]["images"], task.cfg, num=512)
    head = resolve_excluded_nodes(onnx.load(str(fp32)), HEAD_OUTPUT, ("Conv", "ConvTranspose"))
    graphs = dict(fp32=fp32, fp16=out / "confirm.fp16.onnx", fp16_head32=out / "confirm.fp16_head32.onnx")
    convert_fp16(fp32, graphs["fp16"])
    convert_fp16(fp32, graphs["fp16_head32"], keep_fp32_nodes=(*HEAD_OUTPUT, *DEFAULT_KEEP_FP32_NODES))
    for sc in scenarios:
        m = sc["method"]
        if f"{m}/int8" not in graphs:
            calib = calibration_ranges(fp32, None, method=m, cache_dir=cache, data_key=reader.data_key())
            graphs[f"{m}/int8"], graphs[f"{m}/int8_head16"] = out / f"confirm.{m}.all.onnx", out / f"confirm.{m}.h.onnx"
            write_mixed_model(fp32, graphs[f"{m}/int8"], calib, [])
            write_mixed_model(fp32, graphs[f"{m}/int8_head16"], calib, head)
        graphs[sc["key"]] = Path(sc["report"].files["mixed"])
    dataset = task.dataset(str(confirm_ann), str(data["val"]["images"]), gt_bbox=True)
    res = {}
    for key, path in graphs.items():
        r = evaluate(task, OnnxRuntimeBackend(path), dataset, EvalOptions(workers=0, progress=False))
        res[key] = dict(AP=r.metrics["AP"], persons=r.num_persons, traffic=traffic_of_file(path).to_dict())
    return res


def _row(label: str, scen: str, g: dict | None, ap32: float, cf: dict, ap32c: float, mb32: float) -> str:
    """One graph: what is not INT8, INT8 MAC share, AP on both sets (ΔAP against FP32), keypoint error, bytes."""
    first = label == "FP32"
    delta = (lambda a, b: "-" if first else format(100 * (a - b), "+.2f"))
    srch = "- | - | -" if g is None else f"{g['metrics']['AP']:.4f} | {delta(g['metrics']['AP'], ap32)} | "\
        f"{g['kpt_px']:.3f}"
    fp16, share = ("-", "-") if g is None else (g["fp16"], f"{100 * g['int8_mac_share']:.1f}%")
    mb = cf["traffic"]["bytes_per_person"] / 1e6
    return (f"| {scen} | {label} | {fp16} | {share} | {srch} | {cf['AP']:.4f} | {delta(cf['AP'], ap32c)} | "
            f"{mb:.3f} | {mb / mb32:.2f} |")


def _reading(scen: list[dict], conf: dict, ap32c: float) -> str:
    """What the first scenario shows, in numbers: the head's output conv in FP16 against INT8, the AP noise scale,
    and what the budget-0 set does on the unseen persons."""
    import statistics

    r, m = scen[0]["report"], scen[0]["method"]
    kept = [x["sensitivity"]["ap_gain_fp16"] for x in r["groups"] if x["sensitivity"]["ap_gain_fp16"] is not None]
    noise = statistics.pstdev(kept) if len(kept) > 1 else 0.0
    heads = [x for x in r["groups"] if any(p.strip("*") in x["name"] for p in HEAD_OUTPUT)]
    d = {k: 100 * (conf[k]["AP"] - ap32c) for k in ("fp16", "fp16_head32", f"{m}/int8", f"{m}/int8_head16")}
    text = (f"Reading: the head's output conv costs nothing measurable in FP16 (ΔAP {d['fp16']:+.2f} points on the "
            f"unseen persons, {d['fp16_head32']:+.2f} with it in FP32) nor in INT8 ({d[f'{m}/int8']:+.2f}, "
            f"{d[f'{m}/int8_head16']:+.2f} with it in FP16)")
    if heads:
        s = heads[-1]["sensitivity"]
        text += (f"; the search measures `{heads[-1]['name']}` alone in INT8 at ΔAP "
                 f"{-100 * (s['ap_drop_alone'] or 0):+.2f} points and, kept in FP16 with all else INT8, at "
                 f"{100 * (s['ap_gain_fp16'] or 0):+.2f} against all-INT8")
    text += (f". For scale: the {len(kept)} graphs with one group kept in FP16 (all others INT8), near-identical, "
             f"spread by {100 * noise:.2f} points (standard deviation) on the search set.")
    zero = next((sc for sc in scen if sc["budget"] == 0 and sc["method"] == m), None)
    if zero is not None:
        gain = conf[zero["key"]]["AP"] - conf[f"{m}/int8"]["AP"]
        text += (f" The budget-0 set ({len(zero['report']['chosen']['groups'])} groups in FP16) changes AP on the "
                 f"unseen persons by {100 * gain:+.2f} points against all-INT8: at this size a budget below a few "
                 "tenths of a point chases noise.")
    return text


def model_section(entry: dict[str, Any]) -> list[str]:
    """The figures of one model: every scenario's reference graphs and chosen set, on both held-out sets."""
    scen, conf = entry["scenarios"], entry["confirm"]
    rep0 = scen[0]["report"]
    g0 = rep0["graphs"]
    ap32, ap32c = g0["fp32"]["metrics"]["AP"], conf["fp32"]["AP"]
    lines = [f"### {entry['title']}", "",
             f"`{rep0['model']}`: {len(rep0['groups'])} layer groups, {rep0['macs_total'] / 1e6:.1f} MMACs per person "
             f"(Conv/ConvTranspose/MatMul/Gemm), trained {entry['train_s']:.0f} s here. Searches on "
             f"{rep0['val_persons']} held-out persons, every graph confirmed on {conf['fp32']['persons']} others "
             f"(flip test {'on' if rep0['flip'] else 'off'}).", "",
             "| calibration, budget | graph | not INT8 | INT8 MACs | AP (search set) | ΔAP (points) | kpt err (px) | "
             "AP (confirm set) | ΔAP (points) | MB written/person | vs FP32 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mb32 = conf["fp32"]["traffic"]["bytes_per_person"] / 1e6
    lines += [_row("FP32", "-", g0["fp32"], ap32, conf["fp32"], ap32c, mb32),
              _row("FP16", "-", g0["fp16"], ap32, conf["fp16"], ap32c, mb32),
              _row("FP16, head output conv FP32 (before #22)", "-", None, ap32, conf["fp16_head32"], ap32c, mb32)]
    seen = set()
    for sc in scen:
        r, m = sc["report"], sc["method"]
        if m not in seen:
            seen.add(m)
            lines.append(_row("INT8 export (every layer)", m, r["graphs"]["int8"], ap32, conf[f"{m}/int8"], ap32c,
                              mb32))
            lines.append(_row("INT8, head output conv FP16", m, None, ap32, conf[f"{m}/int8_head16"], ap32c, mb32))
        lines.append(_row(f"**search, ΔAP <= {100 * sc['budget']:.2f} pt**", f"{m}, {100 * sc['budget']:.2f} pt",
                          r["graphs"]["chosen"], ap32, conf[sc["key"]], ap32c, mb32))
    lines += ["", _reading(scen, conf, ap32c), ""]
    for sc in scen:
        r, c = sc["report"], sc["report"]["chosen"]
        top = sorted(r["groups"], key=lambda x: -(x["sensitivity"]["harm"] or 0))[:4]
        ev = r["evaluations"]
        lines.append(
            f"- **{sc['method']}, budget {100 * sc['budget']:.2f} pt**: {'met' if r['met'] else 'NOT met'}; FP16: "
            + (", ".join(f"`{n}`" for n in c["groups"]) or "nothing")
            + f" ({100 * c['fp16_mac_share']:.1f}% of the MACs). {ev['run']} graphs run in {r['seconds']:.0f} s ("
            + ", ".join(f"{k} {v}" for k, v in ev["run_by_phase"].items()) + f"), {ev['cached']} from the cache. "
            + "Largest shares of the all-INT8 output noise: "
            + ", ".join(f"`{x['name']}` {100 * (x['sensitivity']['harm'] or 0):.0f}%" for x in top) + ".")
    png, last = entry["png"], _pictured(scen)
    lines += ["", f"Pictures of the {last['method']}, {100 * last['budget']:.2f}-point search: sensitivity per group "
              "(orange: kept in FP16) and AP against INT8 MAC share (every measured set, the Pareto front, the "
              "search path).", "", f"![sensitivity]({png['sensitivity']})", "", f"![Pareto]({png['pareto']})", ""]
    return lines


def publish(work: Path, out_md: Path) -> str:
    from srpose._io import replace_markdown_section

    res = json.loads((work / "results.json").read_text())
    m = res["meta"]
    lines = [SECTION, "",
             "`scripts/bench_int8_search.py`: `srpose quantize` (AP-guided INT8, issue #16) on two models trained "
             "here on generated people (192x160 images, one person each; 4,000 for training, 2,000 held out). Every "
             "graph is the real ONNX graph TensorRT would build (INT8 graphs since #22: TensorRT's Q/DQ placement, "
             "float16 everywhere outside the INT8 layers), run in ONNX Runtime on the CPU (float16 rounding "
             "emulated); calibration on 512 training crops; layer groups = network blocks. The INT8 export quantises "
             "every layer, the head's output conv included; the rows \"head output conv\" measure that conv in the "
             "other precision (the defaults before #22: FP32 in the FP16 graph, left out of INT8). ΔAP in AP points "
             "against the FP32 graph; MB written/person: activation bytes the engine writes between its layers "
             "(`srpose.export.traffic`, Q/DQ fused into their producers). Scenarios: entropy calibration (the "
             "export's default) with a 0.5-point budget, then the same with budget 0 (from the cache: \"keep "
             "everything that hurts\": every group whose INT8-alone loss exceeds the budget stays FP16), and "
             "min-max calibration (`--calib-method max`, coarser INT8 steps) with a 0.1-point budget.", "",
             f"Measured {m['date']}, Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
             f"os.cpu_count() {m['cpus']}, **under load** (2 cores shared with other engineers' test runs; load "
             f"average {m['load']} at the end), so the seconds are upper bounds. " + _timing(m), ""]
    for entry in res["models"]:
        lines += model_section(entry)
    text = "\n".join(lines).rstrip() + "\n"
    replace_markdown_section(out_md, SECTION, text)
    return text


def _timing(m: dict[str, Any]) -> str:
    train = {k: v for k, v in m["phases"].items() if k.startswith("train")}
    rest = {k: v for k, v in m["phases"].items() if not k.startswith("train")}
    cold = sum(train.values()) + m["total_s"] if m.get("trained_before") else m["total_s"]
    return (f"Script: {cold / 60:.1f} min from scratch (" + ", ".join(f"{k} {v:.0f} s" for k, v in train.items())
            + ", then " + ", ".join(f"{k} {v:.0f} s" for k, v in rest.items()) + ")"
            + (f"; this run reused the trained checkpoints and took {m['total_s'] / 60:.1f} min." if
               m.get("trained_before") else "."))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "runs" / "int8_search")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--search-persons", type=int, default=500, help="held-out persons the search measures AP on")
    p.add_argument("--max-ap-drop", type=float, default=0.005, help="the budget (AP, 0..1 scale)")
    p.add_argument("--stress-ap-drop", type=float, default=0.001, help="the budget with min-max calibration")
    p.add_argument("--stress-models", nargs="*", default=[DEMO, "transpose_tiny_srpose_coco_96x64"],
                   help="models that also get the min-max calibration scenario")
    p.add_argument("--only-train", action="store_true", help="generate the data and train the models, then stop")
    p.add_argument("--publish-only", action="store_true", help="rewrite the section from WORK/results.json")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = p.parse_args(argv)
    if args.publish_only:
        print(publish(args.work, args.out))
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    from srpose import get_config

    t = time.perf_counter()
    data = generate(work, args.train_images, args.val_images)
    phases["data"] = time.perf_counter() - t
    models, trained_before = [], True
    for cfg, epochs, title in ((get_config(DEMO), 6, "Demo model (ResNet-18/16 + SRPose head)"),
                               (transpose_tiny_config(), 4, "TransPose-R tiny (attention, LayerNorm)")):
        reused = (work / "train" / cfg.name / "summary.json").is_file()
        trained_before &= reused
        ckpt, secs, summary = train_model(cfg, data, work, epochs)
        phases[f"train {cfg.name}"] = secs
        models.append((cfg, ckpt, secs, Path(summary["config"]), title))
    if args.only_train:
        return 0
    search_ann, confirm_ann = split_validation(data["val"], work, args.search_persons)
    entries = [run_model(m, data, search_ann, confirm_ann, work, args, phases) for m in models]
    import onnxruntime
    import torch

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    meta = dict(date=_dt.date.today().isoformat(), python=platform.python_version(), torch=torch.__version__,
                onnxruntime=onnxruntime.__version__, cpus=os.cpu_count(), load=load, phases=phases,
                total_s=time.perf_counter() - t_start, trained_before=trained_before)
    (work / "results.json").write_text(json.dumps(dict(meta=meta, models=entries), indent=1, default=str))
    print(publish(work, args.out))
    return 0


def run_model(model: tuple, data: dict, search_ann: Path, confirm_ann: Path, work: Path, args: Any,
              phases: dict[str, float]) -> dict[str, Any]:
    """Every scenario's search for one model, then the confirmation on the other held-out persons."""
    cfg, ckpt, train_s, cfg_file, title = model
    cache = work / "quantize" / "cache"
    plan = [("entropy", args.max_ap_drop), ("entropy", 0.0)]
    if cfg.name in args.stress_models:
        plan.append(("max", args.stress_ap_drop))
    scenarios = []
    for method, budget in plan:
        sc = dict(method=method, budget=budget, key=f"{method}/{budget:g}/chosen")
        t = time.perf_counter()
        sc["report"] = quantize(cfg_file, ckpt, data, search_ann, work / "quantize" / f"{cfg.name}.{method}.{budget:g}",
                                sc, cache)
        phases[f"search {cfg.name} {method} {budget:g}"] = time.perf_counter() - t
        scenarios.append(sc)
    t = time.perf_counter()
    conf = confirm(cfg_file, scenarios, data, confirm_ann, cache)
    phases[f"confirm {cfg.name}"] = time.perf_counter() - t
    png = copy_pngs(_pictured(scenarios)["report"].files, cfg.name)
    for sc in scenarios:
        sc["report"] = sc["report"].to_dict()
    return dict(title=title, train_s=train_s, scenarios=scenarios, confirm=conf, png=png)


def _pictured(scenarios: list[dict]) -> dict:
    """The scenario whose PNGs the section shows: budget 0 (a search that moves groups), else the last."""
    return next((sc for sc in scenarios if sc["budget"] == 0), scenarios[-1])


def copy_pngs(files: dict[str, str], name: str) -> dict[str, str]:
    """A search's two PNGs copied to docs/img/ (links relative to docs/benchmarks.md)."""
    import shutil

    from srpose._io import atomic_path

    img = REPO / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in ("sensitivity", "pareto"):
        dst = img / f"int8_search_{name}_{kind}.png"
        with atomic_path(dst) as tmp:
            shutil.copyfile(files[f"{kind}_png"], tmp)
        out[kind] = f"img/{dst.name}"
    return out


if __name__ == "__main__":
    sys.exit(main())
