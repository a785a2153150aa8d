#!/usr/bin/env python
"""What `srpose predict` costs on the host per video frame, with the inference taken out: frames/s and persons/s of
each stage (read, detect, crop + pose, draw + write) of :func:`srpose.eval.predict.predict_sources` on a generated clip,
the pose model a zero-cost stand-in backend (:class:`srpose.engines.standin.StandInBackend` for the model's
image-to-keypoints graph: people placed in their boxes, at once), as a TensorRT engine on a fast GPU would almost
take the inference out.

Per crowd size (people per frame) it runs: tracking with the detector (the clip's detections file) on every frame,
tracking with the detector every 4th frame (boxes from the keypoints in between), and the same without drawing or
writing (results only). The real model's frames/s on the CPU are in the demo's report (its clip). Writes JSON
(``--json``), a PNG and the ``## Prediction on video, host side`` section of ``docs/benchmarks.md``. Target: the
host keeps up with 30 frames/s video at the largest crowd with drawing on.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(Path(__file__).resolve().parent)):  # the package, and scripts/_publish.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _publish import bars, machine, publish  # noqa: E402

SECTION = "## Prediction on video, host side (zero-cost stand-in backend)"
RUNS = (("every frame", 1, True), ("every 4th frame", 4, True), ("every 4th, results only", 4, False))
TARGET_FPS = 30.0


def run_once(model: Any, clip: dict[str, Path], every: int, save: bool, out: Path) -> dict[str, Any]:
    """One `predict_sources` run of ``clip``: its report as a dict (frames, persons, seconds and rates per stage)."""
    from srpose.eval._track import TrackOptions
    from srpose.eval.predict import Pose, PredictOptions, predict_sources

    pose = Pose(model, boxes=clip["det"], track_options=TrackOptions(detect_every=every))
    try:
        report = predict_sources(pose, [str(clip["video"])], PredictOptions(out=out, save=save, progress=False))
    finally:
        pose.close()
    d = report.to_dict()
    _, d["frames_per_s"]["whole run"], d["persons_per_s"]["whole run"] = report.rates()["whole run"]
    return {k: d[k] for k in ("frames", "persons", "seconds", "wall_s", "frames_per_s", "persons_per_s")}


def stand_in(preset: str) -> Any:
    """A stand-in backend for the image-to-keypoints graph of ``preset``."""
    from srpose.engines.standin import StandInBackend
    from srpose.export.image_graph import image_card
    from srpose.tasks import task_for

    task = task_for(preset)
    return StandInBackend(image_card(task.make_card(decode=False, flip=False, batch=task.default_batch), task))


def measure(preset: str, crowds: list[int], frames: int, size: tuple[int, int]) -> dict[str, Any]:
    """{crowd: {run name: run_once result}}."""
    from srpose.data.synthetic_video import generate_video

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="srpose-bench-predict-") as tmp:
        for people in crowds:
            clip = generate_video(Path(tmp) / f"clip{people}", frames=frames, image_size=size, people=people)
            rows = {}
            if people == crowds[0]:  # warm-up: first-call imports and allocations are not the host's steady cost
                run_once(stand_in(preset), clip, 1, True, Path(tmp) / "warm-up")
            for name, every, save in RUNS:
                rows[name] = run_once(stand_in(preset), clip, every, save, Path(tmp) / f"out{people}-{every}{save}")
                print(f"{people} people, detector {name}: {rows[name]['frames_per_s']['whole run']:.0f} frames/s",
                      flush=True)
            out[str(people)] = rows
    return out


def section(result: dict[str, Any]) -> str:
    """The Markdown section of a result."""
    from srpose.eval.predict import STAGES

    m = result["meta"]
    w, h = result["size"]
    lines = [SECTION, "",
             "`scripts/bench_predict.py` runs `srpose predict` (`srpose.eval.predict.predict_sources`) on a generated "
             f"{result['frames']}-frame {w}x{h} clip with tracking, the pose model `{result['model']}`'s "
             "image-to-keypoints graph stood in for by a zero-cost backend (people placed in their boxes at once), "
             "so only the host side is timed: the reader thread decoding frames, person boxes (the clip's "
             "detections file; boxes from the keypoints between detector frames), tracking, feeding the graph, and "
             "the writer thread drawing and encoding the annotated video. Stage columns are busy frames/s "
             "(the stages overlap in three threads); `whole run` is frames over wall time.", "",
             f"Measured {m['date']}, Python {m['python']}, {m['cpus']} CPU cores, {m['machine']}.", "",
             "| people / frame | detector | " + " | ".join(f"{s} frames/s" for s in STAGES) +
             " | whole run frames/s | whole run persons/s |",
             "|---:|---|" + "---:|" * (len(STAGES) + 2)]
    for people, rows in result["per_crowd"].items():
        for name, r in rows.items():
            fps = r["frames_per_s"]
            lines.append(f"| {people} | {name} | " + " | ".join(f"{fps[s]:.0f}" if fps.get(s) else "–"
                                                                 for s in STAGES) +
                         f" | {fps['whole run']:.0f} | {r['persons_per_s']['whole run']:.0f} |")
    t = result["target"]
    lines += ["", f"At {t['people']} people per frame with drawing on, the host runs {t['fps']:.0f} frames/s "
              f"(target >= {TARGET_FPS:.0f}: {'met' if t['met'] else '**missed**'}). The real demo model's frames/s "
              "on this CPU are in the demo's report (its clip, `docs/benchmarks.md` above).", "",
              "![frames/s per stage and crowd size](img/bench_predict.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], png: Path) -> None:
    from srpose.eval.predict import STAGES

    crowds = list(result["per_crowd"])
    runs = [result["per_crowd"][c][RUNS[0][0]]["frames_per_s"] for c in crowds]
    series = {s: [r.get(s) or 0 for r in runs] for s in (*STAGES, "whole run")}
    bars(png, [f"{c} people / frame" for c in crowds], series, "frames / s (host only, busy)", title="srpose predict, detector every frame, drawing on",
         line=(TARGET_FPS, f"{TARGET_FPS:.0f} frames/s"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="res50_srpose_coco_256x192", help="the config whose graph is stood in for")
    ap.add_argument("--people", type=int, nargs="+", default=[2, 8], help="people per frame (default 2 8)")
    ap.add_argument("--frames", type=int, default=150, help="frames of the clip (default 150)")
    ap.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    ap.add_argument("--json", dest="json_out", type=Path, default=None, help="write the result as JSON")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown file to update")
    ap.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "bench_predict.png")
    ap.add_argument("--no-write", action="store_true", help="print only (no Markdown, no PNG)")
    args = ap.parse_args(argv)
    if min(args.people) < 1 or args.frames < 2:
        ap.error(f"--people must be >= 1 and --frames >= 2 (got {args.people}, {args.frames})")
    per = measure(args.model, args.people, args.frames, tuple(args.size))
    top = str(max(args.people))
    fps = per[top][RUNS[0][0]]["frames_per_s"]["whole run"]
    result = dict(model=args.model, frames=args.frames, size=list(args.size), per_crowd=per,
                  target=dict(people=int(top), fps=fps, met=fps >= TARGET_FPS),
                  meta=machine())
    publish(result, section(result), SECTION, json_out=args.json_out, doc=args.out, write=not args.no_write,
            png=args.png, plot=plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
