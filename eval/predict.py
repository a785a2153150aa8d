"""Pose on the user's own images and videos: ``srpose.Pose`` (Python) and ``srpose predict`` (the CLI).

``Pose(model, detector=...)`` takes anything ``srpose eval`` takes as a model (a preset or config with a
checkpoint, an ``.onnx``, an ``.engine``, a Triton URL) and a source of person boxes (top-down): a detector model
(:mod:`._detect`: Ultralytics YOLOv8 / YOLO11, their end-to-end exports, mmdeploy RTMDet / YOLOX), a COCO detection
results file, or the whole image; bottom-up models need none. Called on an image (path, bytes, BGR array) it
returns :class:`People`: boxes, keypoints in image pixels, scores, and track ids on video (:meth:`Pose.track`).

:func:`predict_sources` runs images, folders, globs, videos and webcams through it: a reader thread decodes frames
ahead, the main thread finds boxes (detector every ``detect_every`` frames on video, boxes from the previous
keypoints in between: :mod:`._track`) and runs each frame's persons through the image-to-keypoints graph in one
call, the next frame's detection submitted first so that an asynchronous detector (TensorRT) runs while the pose
graph does; a writer thread draws and writes the annotated images / videos; COCO-format results (``results.json``, one
image id per frame, ``track_id`` on video) and ``images.json`` (what each image id is) come out, with a timing table
per stage.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ._detect import BoxFile, DetectorOptions, PersonDetector, whole_image_box
from ._sources import Frame, Skipped, expand_sources, iter_frames
from ._track import TrackOptions, Tracker

__all__ = ["People", "Pose", "PredictOptions", "PredictReport", "predict_sources", "STAGES"]

STAGES = ("read", "detect", "crop + pose", "draw + write")


@dataclass
class People:
    """The people of one image: ``boxes`` N x 4 (x, y, w, h, image pixels) with ``box_scores``, ``keypoints`` N x K x 3
    (x, y in image pixels, score), person ``scores`` (the evaluator's rescoring, or the grouping score bottom-up)
    and ``track_ids`` (-1 without tracking)."""

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    def to_results(self, image_id: int, *, tracked: bool = False) -> list[dict[str, Any]]:
        """COCO keypoint results of these people for ``image_id`` (``track_id`` when ``tracked``)."""
        out = []
        for i in range(len(self)):
            r = dict(image_id=int(image_id), category_id=1, bbox=[round(float(v), 2) for v in self.boxes[i]],
                     keypoints=[round(float(v), 3) for v in self.keypoints[i].reshape(-1)],
                     score=round(float(self.scores[i]), 5))
            if tracked:
                r["track_id"] = int(self.track_ids[i])
            out.append(r)
        return out


def _people(kp: np.ndarray, scores: np.ndarray, boxes: np.ndarray, ids: np.ndarray | None = None) -> People:
    b = np.asarray(boxes, np.float32).reshape(-1, 5)
    return People(boxes=b[:, :4], box_scores=b[:, 4], keypoints=np.asarray(kp, np.float32),
                  scores=np.asarray(scores, np.float32),
                  track_ids=np.full(len(kp), -1, np.int64) if ids is None else np.asarray(ids, np.int64))


def _add_times(seconds: dict[str, float] | None, t: float, t1: float) -> None:
    """Adds ``t`` .. ``t1`` to ``detect`` and ``t1`` .. now to ``crop + pose`` of ``seconds`` (if given)."""
    if seconds is not None:
        seconds["detect"] += t1 - t
        seconds["crop + pose"] += time.perf_counter() - t1


class Pose:
    """Keypoints of the people in images and videos (see the module docstring).

    ``detector``: a detector model file (top-down), or None; ``boxes``: a COCO detection-results file instead (with
    ``boxes_ann``, its annotation file, to map file names to image ids); neither: the whole image is one person.
    ``flip``: the flip test (None: the config's); ``device``: cpu or cuda[:N]; ``detector_options`` /
    ``track_options``: :class:`DetectorOptions` / :class:`TrackOptions`."""

    def __init__(self, model: Any, *, checkpoint: str | None = None, detector: str | Path | None = None,
                 boxes: str | Path | None = None, boxes_ann: str | Path | None = None, device: str = "cpu",
                 flip: bool | None = None, detector_options: DetectorOptions | None = None, track_options: TrackOptions | None = None,
                 threads: int | None = None) -> None:
        from ._pose_runner import open_runner

        if detector is not None and boxes is not None:
            raise ValueError("give a detector or a boxes file, not both")
        dopts = detector_options or DetectorOptions()
        dopts.check()
        self.track_options = track_options or TrackOptions()
        self.track_options.check()
        self.task, self.runner = open_runner(model, checkpoint=checkpoint, device=device, flip=flip,
                                             threads=threads)
        self.top_down = self.task.kind == "top-down"
        if not self.top_down and (detector is not None or boxes is not None):
            raise ValueError(f"{self.task.cfg.name} is bottom-up: it finds the people itself; drop --detector/--boxes")
        self.detector = PersonDetector(detector, dopts, device=device) if detector is not None else None
        self.box_file = BoxFile(boxes, ann=boxes_ann) if boxes is not None else None
        self.dataset = str(self.task.cfg.data.get("dataset", "coco"))
        self.tracker: Tracker | None = None

    @property
    def box_source(self) -> str:
        if not self.top_down:
            return "none (bottom-up)"
        return (f"detector {self.detector.path.name} ({self.detector.format})" if self.detector is not None else
                f"boxes {self.box_file.path.name}" if self.box_file is not None else "the whole image")

    def boxes(self, image: np.ndarray, name: str = "", frame: int | None = None) -> np.ndarray:
        """N x 5 person boxes (x, y, w, h, score) of an image: detector, boxes file or the whole image."""
        if not self.top_down:
            return np.zeros((0, 5), np.float32)
        if self.detector is not None:
            return self.detector.detect(image)
        if self.box_file is not None:
            return self.box_file.boxes(name, frame)
        return whole_image_box(image)

    def submit_boxes(self, image: np.ndarray, name: str = "", frame: int | None = None) -> Callable[[], np.ndarray]:
        """:meth:`boxes` started now and waited for by calling the result: a detector runs asynchronously where
        its backend does (TensorRT), so the pose graph of the previous frame runs meanwhile."""
        if self.detector is not None and self.top_down:
            return self.detector.submit(image)
        boxes = self.boxes(image, name, frame)
        return lambda: boxes

    def __call__(self, source: Any) -> People | list[People]:
        """The people of one image (a path, encoded bytes or a BGR array) or, for a list, of each."""
        many = isinstance(source, (list, tuple))
        skipped = Skipped()
        frames = [f for s in expand_sources(list(source) if many else [source], skipped)
                  for f in iter_frames(s, skipped, max_frames=1)]
        if skipped:
            raise ValueError("; ".join(f"{what}: {why}" for what, why in skipped.items))
        people = self.run([f.image for f in frames], [self.boxes(f.image, f.source.label)
                                                       for f in frames])
        return people if many else people[0]

    def run(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[People]:
        """The people of ``images`` in the given person boxes (one call of the pose graph for all of them)."""
        return [_people(kp, sc, b) for kp, sc, b in self.runner.run(list(images), list(boxes))]

    def track(self, frames: Iterable[np.ndarray], fps: float = 25.0) -> Iterator[People]:
        """The people of successive video frames (BGR arrays) with track ids (a new tracker)."""
        self.reset_tracker(fps)
        for number, image in enumerate(frames):
            yield self.step(image, number)

    def step(self, image: np.ndarray, number: int, name: str = "", seconds: dict[str, float] | None = None,
             boxes: np.ndarray | None = None) -> People:
        """One video frame through the tracker: the detector (or boxes file) on detection frames, boxes from the
        tracks' keypoints in between. ``boxes``: this frame's detections if already made (used on a detection
        frame). ``seconds``: adds the time of ``detect`` and ``crop + pose`` there."""
        tracker = self.tracker
        if tracker is None:
            raise RuntimeError("call track() (or reset_tracker()) before step()")
        carried = None
        t = time.perf_counter()
        if tracker.needs_detection(number) or not self.top_down:
            boxes = boxes if boxes is not None else self.boxes(image, name, number)
        else:
            boxes, carried = tracker.carried_boxes()
        t1 = time.perf_counter()
        (kp, scores, boxes), = self.runner.run([image], [boxes])
        ids, kp, keep = tracker.update(boxes, kp, scores, carried)
        _add_times(seconds, t, t1)
        return _people(kp[keep], scores[keep], boxes[keep], ids[keep])

    def one(self, image: np.ndarray, name: str = "", frame: int | None = None,
            seconds: dict[str, float] | None = None, boxes: np.ndarray | None = None) -> People:
        """One image without tracking (``boxes``: its detections if already made; ``seconds``: adds the time of
        ``detect`` and ``crop + pose`` there)."""
        t = time.perf_counter()
        boxes = boxes if boxes is not None else self.boxes(image, name, frame)
        t1 = time.perf_counter()
        (people,) = self.run([image], [boxes])
        _add_times(seconds, t, t1)
        return people

    def reset_tracker(self, fps: float = 25.0) -> None:
        self.tracker = Tracker(self.track_options, self._sigmas(), fps)

    def _sigmas(self) -> np.ndarray:
        from srpose.keypoints import dataset_meta

        sigmas = dataset_meta(self.dataset)["sigmas"]
        return np.asarray(sigmas if sigmas is not None else [0.05] * self.task.cfg.num_joints, np.float64)

    def close(self) -> None:
        self.runner.close()
        if self.detector is not None:
            self.detector.close()


@dataclass
class PredictOptions:
    """``out``: the output folder; ``save`` annotated images / videos (else results JSON only); ``track``: track
    people on videos (ids, detector every ``detect_every`` frames); ``max_frames`` per video or webcam (None: all;
    webcams: until Ctrl-C); ``progress`` bar; ``queue`` frames read ahead."""

    out: str | Path
    save: bool = True
    track: bool = True
    max_frames: int | None = None
    progress: bool = True
    queue: int = 8

    def check(self) -> None:
        from srpose._io import check_out_dir

        check_out_dir(self.out, option="--out")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")


@dataclass
class PredictReport:
    """What :func:`predict_sources` did: frames and persons, busy seconds per stage, the files written, and the
    inputs skipped (with why)."""

    frames: int = 0
    persons: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    wall_s: float = 0.0
    outputs: list[str] = field(default_factory=list)
    results_file: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    box_source: str = ""

    def rates(self) -> dict[str, tuple[float, float | None, float | None]]:
        """(seconds, frames/s, persons/s) of each stage (busy time; the stages overlap) and of the ``whole run``
        (wall time); rates None where no time was spent."""
        times = {**self.seconds, "whole run": self.wall_s}
        return {s: (t, self.frames / t if t else None, self.persons / t if t else None) for s, t in times.items()}

    def table(self) -> str:
        """:meth:`rates` as a text table."""
        rows = [f"{'stage':<14}{'seconds':>9}{'frames/s':>11}{'persons/s':>12}"]
        for s, (t, fps, pps) in self.rates().items():
            rows.append(f"{s:<14}{t:>9.2f}{fps or 0:>11.1f}{pps or 0:>12.1f}")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """The report's fields with the stages' ``frames_per_s`` and ``persons_per_s``."""
        from dataclasses import asdict

        d = asdict(self)
        stages = {s: r for s, r in self.rates().items() if s in self.seconds}
        d["frames_per_s"] = {s: r[1] for s, r in stages.items()}
        d["persons_per_s"] = {s: r[2] for s, r in stages.items()}
        return d


def predict_sources(pose: Pose, sources: Sequence[Any], options: PredictOptions) -> PredictReport:
    """Run every frame of ``sources`` through ``pose``; writes annotated media, ``results.json`` and
    ``images.json`` to ``options.out`` (see the module docstring)."""
    from ._predict_io import Outputs

    options.check()
    report = PredictReport(box_source=pose.box_source)
    skipped = Skipped()
    items = expand_sources(sources, skipped)
    if not items:
        raise ValueError("nothing to read: " + "; ".join(f"{w} {why}" for w, why in skipped.items))
    outputs = Outputs(Path(options.out), pose.dataset, save=options.save)
    frames: queue.Queue = queue.Queue(maxsize=max(1, options.queue))
    t0 = time.perf_counter()
    reader = threading.Thread(target=_read, args=(items, skipped, options, frames, report), daemon=True)
    reader.start()
    try:
        _loop(pose, frames, outputs, options, report)
    finally:
        outputs.close(report)
        reader.join(timeout=5)
    report.wall_s = time.perf_counter() - t0
    report.skipped = list(skipped.items)
    return report


_END = object()


def _read(items: Sequence[Any], skipped: Skipped, options: PredictOptions, out: queue.Queue,
          report: PredictReport) -> None:
    try:
        for src in items:
            it = iter_frames(src, skipped, options.max_frames)
            while True:
                t = time.perf_counter()
                frame = next(it, None)
                report.seconds["read"] += time.perf_counter() - t
                if frame is None:
                    break
                out.put(frame)
    finally:
        out.put(_END)


def _detect_ahead(pose: Pose, frame: Any, options: PredictOptions,
                  report: PredictReport) -> Callable[[], np.ndarray] | None:
    """Start the boxes of ``frame`` when its detection is due whatever the tracks do (images, untracked video,
    every ``detect_every``-th tracked frame); None otherwise (the tracker decides when the frame's turn comes)."""
    if frame is None or frame is _END or not pose.top_down:
        return None
    video = frame.source.is_video
    if video and options.track and not pose.track_options.detection_frame(frame.number):
        return None
    t = time.perf_counter()
    wait = pose.submit_boxes(frame.image, frame.source.label, frame.number if video else None)
    report.seconds["detect"] += time.perf_counter() - t

    def boxes() -> np.ndarray:
        t = time.perf_counter()
        out = wait()
        report.seconds["detect"] += time.perf_counter() - t
        return out
    return boxes


def _loop(pose: Pose, frames: queue.Queue, outputs: Any, options: PredictOptions, report: PredictReport) -> None:
    """The main thread's stages: the next frame's detection is submitted before this frame's pose runs, when the
    reader has the next frame ready (a live source is never waited for), so an asynchronous detector (TensorRT)
    overlaps the pose graph."""
    from tqdm import tqdm

    current = None
    nxt: Any = frames.get()
    nxt_boxes = _detect_ahead(pose, nxt, options, report)
    with tqdm(unit="frame", desc="predict", disable=not options.progress, leave=False) as bar:
        while nxt is not _END:
            frame: Frame = nxt
            boxes = nxt_boxes() if nxt_boxes is not None else None
            try:
                nxt = frames.get_nowait()
            except queue.Empty:
                nxt = None
            nxt_boxes = _detect_ahead(pose, nxt, options, report)
            video = frame.source.is_video
            if frame.source is not current:
                current = frame.source
                if video and options.track:
                    pose.reset_tracker(frame.fps or 25.0)
            name = frame.source.label
            if video and options.track:
                people = pose.step(frame.image, frame.number, name, report.seconds, boxes=boxes)
            else:
                people = pose.one(frame.image, name, frame.number if video else None, report.seconds, boxes=boxes)
            report.frames += 1
            report.persons += len(people)
            outputs.add(frame, people, tracked=video and options.track)
            bar.update(1)
            if nxt is None:  # the reader was behind: wait for it now
                nxt = frames.get()
                nxt_boxes = _detect_ahead(pose, nxt, options, report)

