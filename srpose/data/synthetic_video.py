"""Synthetic video of moving people with ground truth (``srpose generate --video``): each person walks at a steady
speed (arms and legs swinging) in a lane of their own, on a fixed textured background, for tracking and prediction
tests and the demo's clip.

Written: ``video.mp4`` (OpenCV's mp4v), ``annotations.json`` (COCO keypoints, one image per frame: ``id`` = frame
index + 1, ``file_name`` ``video.mp4#<frame>``; each person annotation carries its ``track_id``) and
``detections.json`` (boxes jittered with scores, COCO results format). Lanes do not overlap unless ``cross`` (two
people then walk towards each other across one lane: their tracks cross). Same seed, same annotations.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from srpose._io import atomic_path, atomic_write_json

from .synthetic import (L_AN, L_EL, L_KN, L_WR, R_AN, R_EL, R_KN, R_WR, _background, _category, draw_people,
                        _jitter_box, _palette, _sample_pose, annotate)

__all__ = ["generate_video", "frame_file_name"]


def frame_file_name(video: str | Path, frame: int) -> str:
    """The ``file_name`` of frame ``frame`` (0-based) of ``video`` in the annotations."""
    return f"{Path(video).name}#{int(frame):06d}"


def _walker(rng: np.random.Generator, w: int, h: int, lane: tuple[float, float], direction: float,
            frames: int) -> dict[str, Any]:
    """A person of the lane's height starting at the lane's entry side, with speed and swing phase."""
    lo, hi = lane
    height = (hi - lo) * rng.uniform(0.82, 0.92)
    x0 = w * (0.12 if direction > 0 else 0.88) + rng.uniform(-0.04, 0.04) * w
    pelvis = np.array([x0, lo + (hi - lo) * 0.56])
    pose = _sample_pose(rng, height, pelvis)
    travel = w * rng.uniform(0.55, 0.7)
    return dict(pose=pose, pal=_palette(rng), v=direction * travel / max(frames - 1, 1),
                phase=rng.uniform(0, 2 * math.pi), swing=0.18 * pose["u"], height=height)


def _pose_at(person: dict[str, Any], t: int) -> dict[str, Any]:
    """The person's pose at frame ``t``: moved along x, wrists and ankles swinging, elbows and knees half as
    much."""
    pose = copy.deepcopy(person["pose"])
    dx = np.array([person["v"] * t, 0.0])
    s = math.sin(person["phase"] + 0.35 * t) * person["swing"]
    joints = pose["joints"] + dx
    for a, b, sign in ((L_WR, L_EL, 1), (R_WR, R_EL, -1), (L_AN, L_KN, -1), (R_AN, R_KN, 1)):
        joints[a, 0] += sign * s
        joints[b, 0] += sign * s * 0.5
    pose["joints"] = joints
    for key in ("neck", "head"):
        pose[key] = pose[key] + dx
    return pose


def generate_video(out_dir: str | Path, *, frames: int = 48, image_size: Sequence[int] = (320, 240),
                   people: int = 2, fps: float = 15.0, seed: int = 0, cross: bool = False) -> dict[str, Path]:
    """Write the clip and its ground truth under ``out_dir`` (see the module docstring); returns
    ``dict(video=..., ann=..., det=...)``."""
    if frames < 2 or people < 1 or fps <= 0:
        raise ValueError(f"frames ({frames}) must be >= 2, people ({people}) >= 1 and fps ({fps}) > 0")
    w, h = int(image_size[0]), int(image_size[1])
    if min(w, h) < 64 or w % 2 or h % 2:
        raise ValueError(f"image_size {w}x{h}: both sides must be even and >= 64 (video codecs want even sizes)")
    lanes = people if not cross else max(1, people - 1)
    if h / lanes < 48:
        raise ValueError(f"{people} people do not fit a {h}-pixel-high frame: use fewer people or a taller frame")
    rng = np.random.default_rng([int(seed), 0x71DE0])
    bg = _background(rng, w, h)
    walkers = []
    for k in range(people):
        lane = min(k, lanes - 1)
        direction = -1.0 if (cross and k == people - 1) else (1.0 if k % 2 == 0 else -1.0)
        walkers.append(_walker(rng, w, h, (lane * h / lanes, (lane + 1) * h / lanes), direction, frames))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "video.mp4"
    images, annotations, dets = [], [], []
    det_rng = np.random.default_rng([int(seed), 0x5EED])
    with atomic_path(video) as tmp:
        writer = cv2.VideoWriter(str(tmp) + ".mp4", cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():  # pragma: no cover - opencv-python wheels carry FFmpeg's mp4v
            raise RuntimeError("OpenCV cannot write mp4v video here: install opencv-python (with FFmpeg)")
        for t in range(frames):
            img, anns = _frame(bg, walkers, t)
            writer.write(img)
            image_id = t + 1
            images.append(dict(id=image_id, file_name=frame_file_name(video, t), width=w, height=h, frame=t))
            for track, a in enumerate(anns):
                if a is None:
                    continue
                annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=1, iscrowd=0,
                                        track_id=track, **a))
                dets.append(dict(image_id=image_id, category_id=1, bbox=_jitter_box(det_rng, a["bbox"], w, h),
                                 score=round(float(det_rng.uniform(0.6, 1.0)), 4)))
        writer.release()
        Path(str(tmp) + ".mp4").replace(tmp)
    coco = dict(info=dict(description=f"SRPose-TRT synthetic video, seed {seed}", version="1.0", fps=float(fps),
                          video=video.name), licenses=[], images=images, annotations=annotations,
                categories=[_category()])
    return dict(video=video, ann=atomic_write_json(out / "annotations.json", coco),
                det=atomic_write_json(out / "detections.json", dets))


def _frame(bg: np.ndarray, walkers: list[dict[str, Any]], t: int) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
    """Frame ``t`` (BGR) and one annotation per walker (None when none of them is visible)."""
    img = bg.copy()
    order = sorted(range(len(walkers)), key=lambda k: walkers[k]["height"])  # further (smaller) people first
    poses = [_pose_at(p, t) for p in walkers]
    owner, drawn = draw_people(img, [(k + 1, poses[k], walkers[k]["pal"]) for k in order])
    silhouettes = [drawn[order.index(k)] for k in range(len(walkers))]  # back in walker order
    return img, annotate(poses, silhouettes, owner)
