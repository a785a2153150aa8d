"""Tracking people across video frames, as mmdeploy's PoseTracker does: the detector runs every ``detect_every``
frames, the frames in between take each track's box from its previous keypoints, and detections are matched to
tracks by box IoU and keypoint OKS with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).
Optional One-Euro smoothing of the keypoints.

Parameters (:class:`TrackOptions`):

- ``detect_every``: run the detector on every k-th frame (1: every frame); in between, a track's box is the box of
  its keypoints scoring above ``kpt_thr``, grown by ``box_scale``;
- ``match_thr``: a detection continues a track when 0.5 IoU + 0.5 OKS of the pair reaches it;
- ``max_age``: frames a track survives without a match (its id is then free of it for good);
- ``min_score``: a track carried between detections ends when its person score falls below it;
- ``smooth`` (with ``smooth_min_cutoff`` Hz and ``smooth_beta``): the One-Euro filter of Casiez et al. (CHI 2012)
  on each track's keypoints, written here (a few lines; no maintained package of it is among our dependencies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["TrackOptions", "Tracker", "boxes_from_keypoints", "OneEuro"]


@dataclass
class TrackOptions:
    detect_every: int = 1
    match_thr: float = 0.3
    max_age: int = 15
    kpt_thr: float = 0.3
    box_scale: float = 1.2
    min_score: float = 0.1
    smooth: bool = False
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.05

    def detection_frame(self, frame: int) -> bool:
        """Whether frame ``frame`` (0-based) is one of the detector's: every ``detect_every``-th."""
        return frame % self.detect_every == 0

    def check(self) -> None:
        if self.detect_every < 1 or self.max_age < 0:
            raise ValueError(f"--detect-every must be >= 1 and max age >= 0, got {self.detect_every}, "
                             f"{self.max_age}")
        if not 0 <= self.match_thr <= 1 or self.box_scale <= 0:
            raise ValueError(f"match threshold {self.match_thr} must be in [0, 1] and box scale {self.box_scale} > 0")


def boxes_from_keypoints(keypoints: np.ndarray, thr: float, scale: float) -> np.ndarray:
    """N x 4 boxes (x, y, w, h) around each person's keypoints scoring above ``thr`` (all when fewer than two
    do), grown by ``scale`` about their centre."""
    kp = np.asarray(keypoints, np.float64).reshape(len(keypoints), -1, 3)
    out = np.zeros((len(kp), 4))
    for i, k in enumerate(kp):
        good = k[k[:, 2] > thr]
        pts = good[:, :2] if len(good) >= 2 else k[:, :2]
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0) * scale, max(y1 - y0, 1.0) * scale
        out[i] = [cx - w / 2, cy - h / 2, w, h]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (x, y, w, h) boxes."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = (np.minimum(ax1, bx1) - np.maximum(ax0, bx0)).clip(0)
    ih = (np.minimum(ay1, by1) - np.maximum(ay0, by0)).clip(0)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


def _oks(a: np.ndarray, b: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, thr: float) -> np.ndarray:
    """OKS matrix of keypoint sets (T x K x 3 against N x K x 3), over the joints both score above ``thr``."""
    var = (2 * sigmas) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # T x N x K
    e = np.exp(-d2 / var / (2 * np.maximum(areas[:, None, None], 1.0)))
    both = (a[:, None, :, 2] > thr) & (b[None, :, :, 2] > thr)
    n = both.sum(-1)
    return np.where(n > 0, (e * both).sum(-1) / np.maximum(n, 1), 0.0)


class OneEuro:
    """One-Euro filter of an array of values (each element filtered on its own)."""

    def __init__(self, fps: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> None:
        self.te, self.min_cutoff, self.beta, self.d_cutoff = 1.0 / max(fps, 1e-3), min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / self.te)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / self.te
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = a * x + (1 - a) * self.x
        return self.x


@dataclass
class _Track:
    id: int
    box: np.ndarray
    keypoints: np.ndarray
    score: float
    age: int = 0
    filter: OneEuro | None = None


@dataclass
class Tracker:
    """Track ids of the people of successive frames (see the module docstring). ``sigmas``: the dataset's OKS
    sigmas; ``fps``: of the video (smoothing)."""

    options: TrackOptions
    sigmas: Sequence[float]
    fps: float = 25.0
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0

    def needs_detection(self, frame: int) -> bool:
        """Whether frame ``frame`` (0-based) gets the detector: every ``detect_every`` frames, and whenever no track
        is alive."""
        return self.options.detection_frame(frame) or not self.tracks

    def carried_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """(N x 5 boxes from each live track's last keypoints, their track ids) for a frame without detection."""
        o = self.options
        live = [t for t in self.tracks if t.age == 0]
        if not live:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
        boxes = boxes_from_keypoints(np.stack([t.keypoints for t in live]), o.kpt_thr, o.box_scale)
        scores = np.array([[t.score] for t in live])
        return np.concatenate([boxes, scores], 1).astype(np.float32), np.array([t.id for t in live], np.int64)

    def update(self, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
               carried: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Assign track ids to a frame's people (N x 5 boxes, N x K x 3 keypoints, N scores); ``carried``: the ids
        of :meth:`carried_boxes` when the detector did not run. Returns (ids, keypoints, keep): carried people
        whose score fell below ``min_score`` are dropped (``keep`` False), kept keypoints are smoothed when asked."""
        n = len(boxes)
        ids = np.full(n, -1, np.int64)
        keep = np.ones(n, bool)
        by_id = {t.id: t for t in self.tracks}
        matched: dict[int, int] = {}
        if carried is not None:
            for i, tid in enumerate(carried):
                if scores[i] < self.options.min_score:
                    keep[i] = False
                else:
                    matched[i] = int(tid)
        else:
            matched = self._match(boxes, keypoints)
        out = np.asarray(keypoints, np.float64).copy()
        for i in range(n):
            if not keep[i]:
                continue
            track = by_id.get(matched[i]) if i in matched else None
            if track is None:
                track = _Track(self.next_id, boxes[i, :4], out[i], float(scores[i]))
                self.next_id += 1
                self.tracks.append(track)
                by_id[track.id] = track
            if self.options.smooth:
                if track.filter is None:
                    track.filter = OneEuro(self.fps, self.options.smooth_min_cutoff, self.options.smooth_beta)
                out[i, :, :2] = track.filter(out[i, :, :2])
            track.box, track.keypoints, track.score, track.age = boxes[i, :4], out[i], float(scores[i]), -1
            ids[i] = track.id
        for t in self.tracks:
            t.age += 1
        dropped = set(carried[~keep].tolist()) if carried is not None else set()
        self.tracks = [t for t in self.tracks if t.age <= self.options.max_age and t.id not in dropped]
        return ids, out.astype(np.float32), keep

    def _match(self, boxes: np.ndarray, keypoints: np.ndarray) -> dict[int, int]:
        """{person index: track id} of the Hungarian assignment with similarity >= ``match_thr``."""
        from scipy.optimize import linear_sum_assignment

        if not self.tracks or not len(boxes):
            return {}
        tb = np.stack([t.box for t in self.tracks]).astype(np.float64)
        tk = np.stack([t.keypoints for t in self.tracks]).astype(np.float64)
        nb = np.asarray(boxes, np.float64)[:, :4]
        sim = 0.5 * _iou(tb, nb) + 0.5 * _oks(tk, np.asarray(keypoints, np.float64), tb[:, 2] * tb[:, 3],
                                              np.asarray(self.sigmas, np.float64), self.options.kpt_thr)
        rows, cols = linear_sum_assignment(-sim)
        return {int(c): self.tracks[r].id for r, c in zip(rows, cols) if sim[r, c] >= self.options.match_thr}
