#!/usr/bin/env python
"""What the host side of `srpose eval` costs per person, with the inference taken out: persons/s of the evaluator
on a zero-cost stand-in backend (:class:`srpose.engines.standin.StandInBackend`: the outputs of the graph, at once),
per path and per worker count, on a data set's detections (replicated, each copy a file of its own):

- ``default``: a plain heatmap graph with the config's flip test on the host (two passes, flip merge and decoding
  in numpy on full-resolution maps, per-person crops with OpenCV and numpy normalisation in the loader);
- ``decode``: the ``--flip --decode`` graph (keypoints out; crops still made on the host);
- ``image``: the image-to-keypoints graph (``--image-input``: each JPEG decoded once, pixels and boxes sent);
- ``floor``: decoding every JPEG once and nothing else.

It also times ONNX Runtime end to end on the CPU (a real model, the plain graph with the host flip test against its
image-to-keypoints graph) so that the CPU path is seen not to get slower. Writes JSON (``--json``), a PNG and the
``## Host side per person`` section of ``docs/benchmarks.md``. Targets: ``image`` >= 10x ``default`` and within 1.5x
of ``floor`` (at the default worker count, one per core).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(Path(__file__).resolve().parent)):  # the package, and scripts/_publish.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _publish import bars, machine, publish  # noqa: E402

SECTION = "## Host side per person (zero-cost stand-in backend)"
SAMPLE = REPO.parent / "shared" / "data" / "coco"
PATHS = ("default", "decode", "image", "floor")


def replicate(ann: Path, images: Path, det: Path, copies: int, out: Path) -> tuple[Path, Path, Path]:
    """The annotation file, image folder and detections with every image ``copies`` times (own file names and ids)."""
    data = json.loads(ann.read_text())
    dets = json.loads(det.read_text())
    out.mkdir(parents=True, exist_ok=True)
    new_images, new_anns, new_dets, ids = [], [], [], {}
    next_id = 1
    for c in range(copies):
        for img in data["images"]:
            name = f"c{c:04d}_{img['file_name']}"
            shutil.copyfile(images / img["file_name"], out / name)
            ids[(c, img["id"])] = next_id
            new_images.append({**img, "id": next_id, "file_name": name})
            next_id += 1
        new_anns += [{**a, "id": len(new_anns) + i + 1, "image_id": ids[(c, a["image_id"])]}
                     for i, a in enumerate(data["annotations"])]
        new_dets += [{**d, "image_id": ids[(c, d["image_id"])]} for d in dets]
    (out / "ann.json").write_text(json.dumps({**data, "images": new_images, "annotations": new_anns}))
    (out / "det.json").write_text(json.dumps(new_dets))
    return out / "ann.json", out, out / "det.json"


def cards(task: Any) -> dict[str, Any]:
    """The cards of the three graphs a model can be exported as."""
    from srpose.export.image_graph import image_card

    raw = task.make_card(decode=False, flip=False, batch=task.default_batch)
    return {"default": raw, "decode": task.make_card(decode=True, flip=True, batch=task.default_batch),
            "image": image_card(raw, task)}


def floor(dataset: Any, workers: int) -> float:
    """Seconds to decode every distinct image of ``dataset`` once with ``workers`` loader processes."""
    from torch.utils.data import DataLoader

    files = sorted({str(Path(dataset.img_dir) / r["image_file"]) for r in dataset.records})
    t0 = time.perf_counter()
    for _ in DataLoader(_Decode(files), batch_size=None, num_workers=workers, collate_fn=_as_is):
        pass
    return time.perf_counter() - t0


class _Decode:
    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, ...]:
        import cv2

        return cv2.imread(self.files[i], cv2.IMREAD_COLOR).shape  # decoded; nothing else is done or sent


def _as_is(x: Any) -> Any:
    return x


def host_rates(task: Any, dataset: Any, workers: list[int], default_persons: int) -> dict[str, dict[str, float]]:
    """{workers: {path: persons/s}} (the ``default`` path on the first ``default_persons`` persons: it is slow)."""
    from srpose.engines.standin import StandInBackend
    from srpose.eval.evaluator import EvalOptions, predict

    out: dict[str, dict[str, float]] = {}
    n = len(dataset)
    subset = list(range(min(n, default_persons)))
    for w in workers:
        rates = {}
        for path, card in cards(task).items():
            idx = subset if path == "default" else None
            t0 = time.perf_counter()
            poses, _ = predict(task, StandInBackend(card), dataset, EvalOptions(workers=w, progress=False),
                               indices=idx)
            rates[path] = len(poses) / (time.perf_counter() - t0)
        rates["floor"] = n / floor(dataset, w)
        out[str(w)] = rates
        print(f"workers {w}: " + ", ".join(f"{p} {rates[p]:.0f}" for p in PATHS) + " persons/s", flush=True)
    return out


def onnxruntime_cpu(ann: Path, images: Path, det: Path, preset: str, workers: int) -> dict[str, Any]:
    """ONNX Runtime end to end on the CPU: the plain graph with the host flip test vs its image-to-keypoints graph
    (random weights: speed does not depend on them), persons/s of `evaluate`."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.export import ExportOptions, export_model
    from srpose.tasks import task_for

    task = task_for(preset)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="srpose-bench-host-ort-") as tmp:
        for path, image in (("default", False), ("image", True)):
            rep = export_model(task, ExportOptions(out_dir=Path(tmp) / path, image_input=image))
            ds = task.dataset(str(ann), str(images), det=str(det))
            backend = OnnxRuntimeBackend(Path(rep.out_dir) / rep.files[0]["file"])
            evaluate(task, backend, ds, EvalOptions(workers=workers, progress=False))  # warm-up
            res = evaluate(task, backend, ds, EvalOptions(workers=workers, progress=False))
            rows[path] = dict(persons_per_s=res.images_per_s, AP=res.metrics["AP"])
    return dict(model=preset, persons=len(ds), workers=workers, **rows)


def section(result: dict[str, Any]) -> str:
    """The Markdown section of a result."""
    m, r = result["meta"], result["per_workers"]
    best = result["persons_per_s"]
    t = result["targets"]
    lines = [SECTION, "",
             "`scripts/bench_host.py` runs the evaluator (`srpose.eval.evaluator.predict`) on a zero-cost stand-in "
             "backend that returns the graph's outputs at once, so only the host side is timed: reading and "
             "decoding images, cropping, batching, the host flip test and decoding where the graph leaves them to "
             f"the host, and building the results. Model `{result['model']}` (full-resolution "
             f"{result['heatmap_mb']:.1f} MB float32 heatmaps per person), {result['persons']} detections on "
             f"{result['images']} images (the COCO sample's {result['sample_persons']} on 4 images, each copy its "
             "own file). `default` is timed on its first "
             f"{result['default_persons']} persons.", "",
             f"Measured {m['date']}, Python {m['python']}, {m['cpus']} CPU cores, {m['machine']}.", "",
             "| workers | " + " | ".join(f"{p} persons/s" for p in PATHS) + " | image / default | floor / image |",
             "|---:|" + "---:|" * (len(PATHS) + 2)]
    for w, rates in r.items():
        lines.append(f"| {w} | " + " | ".join(f"{rates[p]:.0f}" for p in PATHS) +
                     f" | {rates['image'] / rates['default']:.1f}x | {rates['floor'] / rates['image']:.2f}x |")
    lines += ["", f"At the default worker count ({result['default_workers']}, one per core): image "
              f"{best['image']:.0f} persons/s = {t['image_vs_default']:.1f}x default (target >= 10x: "
              f"{'met' if t['image_vs_default'] >= 10 else '**missed**'}), floor / image "
              f"{t['floor_vs_image']:.2f}x (target <= 1.5x: {'met' if t['floor_vs_image'] <= 1.5 else '**missed**'}).",
              "", "![host persons/s per path and worker count](img/bench_host.png)", ""]
    ort = result.get("onnxruntime_cpu")
    if ort:
        lines += [f"ONNX Runtime end to end on the CPU (`{ort['model']}`, random weights, {ort['persons']} "
                  f"detections, {ort['workers']} workers): plain graph with the host flip test "
                  f"{ort['default']['persons_per_s']:.0f} persons/s, image-to-keypoints graph "
                  f"{ort['image']['persons_per_s']:.0f} persons/s "
                  f"({ort['image']['persons_per_s'] / ort['default']['persons_per_s']:.2f}x).", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], png: Path) -> None:
    workers = list(result["per_workers"])
    bars(png, [f"{w} workers" for w in workers], {p: [result["per_workers"][w][p] for w in workers] for p in PATHS},
         "persons / s (host only)", size=(7, 3.8))


def main(argv: list[str] | None = None) -> int:
    from srpose.eval.evaluator import default_workers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann", type=Path, default=SAMPLE / "test_coco.json")
    ap.add_argument("--images", type=Path, default=SAMPLE)
    ap.add_argument("--det", type=Path, default=SAMPLE / "test_coco_det_AP_H_56.json")
    ap.add_argument("--model", default="res50_srpose_coco_256x192", help="the config whose graphs are stood in for")
    ap.add_argument("--copies", type=int, default=100, help="copies of the data set (default 100)")
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 0 .. cores)")
    ap.add_argument("--default-persons", type=int, default=256, help="persons timed on the slow default path")
    ap.add_argument("--ort-model", default="res18w16_srpose_coco_96x64", help="model of the ONNX Runtime run")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime run")
    ap.add_argument("--json", dest="json_out", type=Path, default=None, help="write the result as JSON")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown file to update")
    ap.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "bench_host.png")
    ap.add_argument("--no-write", action="store_true", help="print only (no Markdown, no PNG)")
    args = ap.parse_args(argv)
    for f in (args.ann, args.det):
        if not f.is_file():
            ap.error(f"{f} does not exist (the COCO sample lives in ../shared/data/coco; pass --ann/--images/--det)")
    from srpose.tasks import task_for

    cores = default_workers()
    workers = args.workers or list(range(0, cores + 1))
    task = task_for(args.model)
    with tempfile.TemporaryDirectory(prefix="srpose-bench-host-") as tmp:
        ann, images, det = replicate(args.ann, args.images, args.det, args.copies, Path(tmp))
        dataset = task.dataset(str(ann), str(images), det=str(det))
        per = host_rates(task, dataset, workers, args.default_persons)
        ort = None if args.no_ort else onnxruntime_cpu(args.ann, args.images, args.det, args.ort_model, cores)
    key = str(cores if cores in workers else workers[-1])
    best = per[key]
    w, h = task.codec.heatmap_size
    result = dict(
        model=args.model, persons=len(dataset), images=dataset.num_images, sample_persons=len(dataset) // args.copies,
        heatmap_mb=task.cfg.num_joints * w * h * 4 / 1e6, default_persons=min(len(dataset), args.default_persons),
        default_workers=int(key), persons_per_s=best, per_workers=per, onnxruntime_cpu=ort,
        targets=dict(image_vs_default=best["image"] / best["default"], floor_vs_image=best["floor"] / best["image"]),
        meta=machine())
    publish(result, section(result), SECTION, json_out=args.json_out, doc=args.out, write=not args.no_write,
            png=args.png, plot=plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
