"""The demo's clip: a generated video of people walking, run through ``srpose predict`` (the library call) with the
trained model and tracking, scored against its ground truth (PCK, id switches), shown as an annotated GIF with the
frames/s of each stage (``clip.json``: the figures)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["run_clip", "clip_section", "clip_targets", "results_people", "pck", "id_switches", "CLIP_MIN_PCK"]

#: the trained demo model on the clip (PCK@0.2 of the person box); measured 0.98 on 2 cores (docs/benchmarks.md)
CLIP_MIN_PCK = 0.9


def results_people(results: list[dict[str, Any]], frames: int, joints: int) -> list[Any]:
    """:class:`~srpose.eval.predict.People` per frame (image id = frame + 1) of COCO keypoint results."""
    from .predict import People

    per: list[list[dict[str, Any]]] = [[] for _ in range(frames)]
    for r in results:
        if 1 <= r["image_id"] <= frames:
            per[r["image_id"] - 1].append(r)
    out = []
    for rs in per:
        n = len(rs)
        out.append(People(boxes=np.asarray([r["bbox"] for r in rs], np.float32).reshape(n, 4),
                          box_scores=np.ones(n, np.float32),
                          keypoints=np.asarray([r["keypoints"] for r in rs], np.float32).reshape(n, joints, 3),
                          scores=np.asarray([r["score"] for r in rs], np.float32),
                          track_ids=np.asarray([r.get("track_id", -1) for r in rs], np.int64)))
    return out


def _matches(people: Sequence[Any], ann: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], Any, int | None]]:
    """(ground-truth person, the predicted people of its frame, index of the one whose box overlaps its box most,
    None when none overlaps) for every annotation of a clip (image id = frame + 1), in frame order."""
    from ._track import _iou

    for a in sorted(ann["annotations"], key=lambda a: a["image_id"]):
        t = a["image_id"] - 1
        p = people[t] if t < len(people) else None
        if p is None or not len(p):
            yield a, p, None
            continue
        iou = _iou(np.asarray([a["bbox"]], np.float64), p.boxes.astype(np.float64))[0]
        yield a, p, (int(np.argmax(iou)) if iou.max() > 0 else None)


def pck(people: Sequence[Any], ann: str | Path | Mapping[str, Any], alpha: float = 0.2) -> float:
    """PCK of a clip's predictions against its ground truth (``srpose generate --video`` annotations): the share of
    labelled joints within ``alpha`` x the longer side of the person's box, each ground-truth person taken with the
    predicted person whose box overlaps it most (a miss when none does)."""
    data = ann if isinstance(ann, Mapping) else json.loads(Path(ann).read_text())
    hit = total = 0
    for a, p, k in _matches(people, data):
        gt = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
        labelled = gt[:, 2] > 0
        total += int(labelled.sum())
        if k is not None:
            d = np.linalg.norm(p.keypoints[k, :, :2] - gt[:, :2], axis=1)
            hit += int((d[labelled] <= alpha * max(a["bbox"][2], a["bbox"][3])).sum())
    return hit / total if total else float("nan")


def id_switches(people: Sequence[Any], ann: Mapping[str, Any]) -> int:
    """Times a ground-truth person's matched predicted id changes along the clip (best-overlapping box)."""
    last: dict[int, int] = {}
    switches = 0
    for a, p, k in _matches(people, ann):
        if k is None:
            continue
        tid = int(p.track_ids[k])
        if a["track_id"] in last and last[a["track_id"]] != tid:
            switches += 1
        last[a["track_id"]] = tid
    return switches


def run_clip(preset: str, checkpoint: str | Path, out: Path, *, frames: int = 48, detect_every: int = 3,
             seed: int = 0) -> dict[str, Any]:
    """Generate the clip under ``out/data/clip``, predict it into ``out/clip`` (the trained model as its image graph
    in PyTorch, the clip's detections as the detector, tracking), score it and write ``out/clip.gif``."""
    from srpose._io import atomic_write_json
    from srpose.data.synthetic_video import generate_video

    from ._predict_io import write_gif
    from ._sources import video_frames
    from ._track import TrackOptions
    from .predict import Pose, PredictOptions, predict_sources

    clip = generate_video(out / "data" / "clip", frames=frames, people=2, seed=seed)
    pose = Pose(preset, checkpoint=str(checkpoint), boxes=clip["det"],
                track_options=TrackOptions(detect_every=detect_every))
    try:
        report = predict_sources(pose, [str(clip["video"])], PredictOptions(out=out / "clip", progress=False))
    finally:
        pose.close()
    ann = json.loads(Path(clip["ann"]).read_text())
    joints = len(ann["categories"][0]["keypoints"])
    people = results_people(json.loads(Path(report.results_file).read_text()), frames, joints)
    gif = write_gif(video_frames(out / "clip" / "video.mp4")[::2], out / "clip.gif", fps=7.5)
    result = dict(frames=frames, detect_every=detect_every, pck=pck(people, ann), id_switches=id_switches(people, ann),
                  tracks=len({int(i) for p in people for i in p.track_ids}), gif=str(gif), report=report.to_dict(),
                  table=report.table())
    atomic_write_json(out / "clip.json", result)
    return result


def clip_section(clip: dict[str, Any]) -> list[str]:
    """The report section of :func:`run_clip`'s result."""
    return ["## Prediction on a generated clip (`srpose predict`, tracking)", "",
            f"A generated {clip['frames']}-frame clip of two people walking, run through `srpose predict` with the "
            f"trained model (its image-to-keypoints graph in PyTorch), the clip's detections as the detector every "
            f"{clip['detect_every']} frames and boxes from the keypoints in between: PCK@0.2 {clip['pck']:.3f}, "
            f"{clip['tracks']} track ids, {clip['id_switches']} id switches.", "",
            "![the clip, annotated](clip.gif)", "", "```", clip["table"], "```", ""]


def clip_targets(clip: dict[str, Any] | None) -> list[Any]:
    from .report import Target

    if clip is None:
        return []
    return [Target("clip PCK@0.2 (tracked)", f"{clip['pck']:.3f}", f">= {CLIP_MIN_PCK}", clip["pck"] >= CLIP_MIN_PCK),
            Target("clip id switches", str(clip["id_switches"]), "0", clip["id_switches"] == 0)]
