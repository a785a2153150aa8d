"""Drawing predicted people on frames: each dataset's skeleton (COCO 17, CrowdPose 14, MPII 16 joints), left limbs
warm and right limbs cool (from the joint names), the person box and its track id in a colour of its own."""
from __future__ import annotations

import colorsys
from typing import Any, Sequence

import cv2
import numpy as np

from srpose.keypoints import dataset_meta

__all__ = ["Drawer", "track_color"]

_LEFT, _RIGHT, _MID = (255, 128, 0), (0, 160, 255), (0, 220, 0)  # BGR


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct BGR colour per track id (golden-ratio hues); grey for untracked people (-1)."""
    if track_id < 0:
        return (200, 200, 200)
    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _side(name: str) -> tuple[int, int, int]:
    n = name.lower()
    return _LEFT if n.startswith(("left", "l_")) else _RIGHT if n.startswith(("right", "r_")) else _MID


class Drawer:
    """Draws the people of a dataset's skeleton (``dataset``: coco, crowdpose or mpii) on BGR frames."""

    def __init__(self, dataset: str, *, kpt_thr: float = 0.3, min_score: float = 0.0) -> None:
        meta = dataset_meta(dataset)
        self.skeleton: Sequence[tuple[int, int]] = meta["skeleton"]
        self.joint_colors = [_side(n) for n in meta["joints"]]
        self.limb_colors = [_side(meta["joints"][b]) if _side(meta["joints"][a]) == _MID else
                            _side(meta["joints"][a]) for a, b in self.skeleton]
        self.num_joints = len(meta["joints"])
        self.kpt_thr, self.min_score = kpt_thr, min_score

    def draw(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
             track_ids: Any = None) -> np.ndarray:
        """A copy of ``image`` with each person's skeleton, joints, box and (track) id."""
        out = image.copy()
        scale = max(image.shape[:2]) / 480.0
        thick, radius = max(1, round(2 * scale)), max(2, round(3 * scale))
        ids = np.full(len(keypoints), -1) if track_ids is None else np.asarray(track_ids)
        for box, kp, score, tid in zip(boxes, keypoints, scores, ids):
            if score < self.min_score:
                continue
            color = track_color(int(tid))
            x, y, w, h = (int(round(v)) for v in box[:4])
            cv2.rectangle(out, (x, y), (x + w, y + h), color, max(1, thick // 2), cv2.LINE_AA)
            label = f"{int(tid)}" if tid >= 0 else f"{score:.2f}"
            cv2.putText(out, label, (x + 2, max(y - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, color,
                        max(1, thick // 2), cv2.LINE_AA)
            for (a, b), c in zip(self.skeleton, self.limb_colors):
                if kp[a, 2] > self.kpt_thr and kp[b, 2] > self.kpt_thr:
                    cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), c, thick,
                             cv2.LINE_AA)
            for (px, py, s), c in zip(kp, self.joint_colors):
                if s > self.kpt_thr:
                    cv2.circle(out, (int(px), int(py)), radius, c, -1, cv2.LINE_AA)
        return out
