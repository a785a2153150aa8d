"""``srpose predict SOURCE... --model M [--detector D | --boxes DET.json] --out DIR``: argv ->
:class:`~srpose.eval.predict.Pose` and :class:`~srpose.eval.predict.PredictOptions` -> ``predict_sources`` -> the
timing table and what was written."""
from __future__ import annotations

import argparse
import sys

from ._args import add_json_arg

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from srpose.eval._detect import DETECTOR_FORMATS

    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="images, folders, globs (quoted), videos, or a webcam index (0)")
    p.add_argument("--model", required=True, metavar="M",
                   help="a preset or config (with --checkpoint), an .onnx graph, a TensorRT .engine, or a Triton URL")
    p.add_argument("--checkpoint", default=None, help="weights of a preset / config model")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: annotated images / videos, "
                   "results.json (COCO results), images.json")
    b = p.add_argument_group("person boxes (top-down models; default: the whole image is one person)")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--detector", default=None, metavar="D", help="person detector, .onnx or .engine (Ultralytics "
                     "YOLOv8/YOLO11, their end-to-end exports, mmdeploy RTMDet/YOLOX)")
    src.add_argument("--boxes", default=None, metavar="DET.json", help="COCO detection results instead")
    b.add_argument("--boxes-ann", default=None, metavar="ANN.json",
                   help="--boxes: the annotation file naming each image id's file")
    b.add_argument("--detector-format", choices=DETECTOR_FORMATS, default=None,
                   help="the detector's output format (default: read from its outputs and metadata)")
    b.add_argument("--det-score", type=float, default=0.3, metavar="S", help="detector score threshold (default 0.3)")
    b.add_argument("--det-nms", type=float, default=0.45, metavar="IOU", help="detector NMS IoU (default 0.45)")
    b.add_argument("--det-mean", type=float, nargs=3, default=None, metavar="V",
                   help="mmdeploy detectors: input mean (BGR, 0..255), e.g. RTMDet's 103.53 116.28 123.675")
    b.add_argument("--det-std", type=float, nargs=3, default=None, metavar="V", help="mmdeploy detectors: input std")
    t = p.add_argument_group("video")
    t.add_argument("--no-track", dest="track", action="store_false", help="no tracking (no ids) on videos")
    t.add_argument("--detect-every", type=int, default=1, metavar="K",
                   help="run the detector every K frames; in between, boxes come from the previous keypoints "
                        "(default 1)")
    t.add_argument("--smooth", action="store_true", help="One-Euro smoothing of tracked keypoints")
    t.add_argument("--max-frames", type=int, default=None, metavar="N", help="frames per video or webcam")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="ONNX Runtime threads")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (default: the config's; a graph with the flip inside keeps it)")
    g.add_argument("--no-save", dest="save", action="store_false", help="results JSON only, no annotated media")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_arg(p)


def run(args: argparse.Namespace) -> int:
    from srpose._io import atomic_write_json
    from srpose.eval._detect import DetectorOptions
    from srpose.eval._track import TrackOptions
    from srpose.eval.predict import Pose, PredictOptions, predict_sources

    options = PredictOptions(out=args.out, save=args.save, track=args.track, max_frames=args.max_frames,
                             progress=not args.quiet)
    options.check()
    track = TrackOptions(detect_every=args.detect_every, smooth=args.smooth)
    track.check()
    det = DetectorOptions(format=args.detector_format, score_thr=args.det_score, nms_iou=args.det_nms,
                          mean=args.det_mean, std=args.det_std)
    det.check()
    pose = Pose(args.model, checkpoint=args.checkpoint, detector=args.detector, boxes=args.boxes,
                boxes_ann=args.boxes_ann, device=args.device, flip=args.flip, detector_options=det,
                track_options=track, threads=args.threads)
    try:
        report = predict_sources(pose, args.sources, options)
    finally:
        pose.close()
    for what, why in report.skipped:
        print(f"srpose predict: skipped {what}: {why}", file=sys.stderr)
    print(f"{pose.task.cfg.name} | boxes: {report.box_source} | {report.frames} frames, {report.persons} persons"
          + (f" | {len(report.skipped)} inputs skipped" if report.skipped else ""))
    print(report.table())
    print(f"results written to {report.results_file}" + (f"; {len(report.outputs)} annotated files in {args.out}"
                                                         if report.outputs else ""))
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict())
    return 0
