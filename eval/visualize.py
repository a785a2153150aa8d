"""Pictures of predictions: keypoints and skeletons drawn on images, several images tiled into one PNG."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from srpose._io import atomic_path
from srpose.keypoints import COCO_SKELETON

__all__ = ["draw_keypoints", "render_results"]

_LEFT, _RIGHT, _MID = (255, 128, 0), (0, 160, 255), (0, 220, 0)  # BGR


def _side(i: int) -> tuple[int, int, int]:
    return _MID if i == 0 else (_LEFT if i % 2 == 1 else _RIGHT)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, *, skeleton: Sequence[tuple[int, int]] = COCO_SKELETON,
                   score_thr: float = 0.3, radius: int = 3) -> np.ndarray:
    """Draw one person's K x 3 (x, y, score) keypoints and skeleton on a copy of a BGR image."""
    out = image.copy()
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, 3)
    thick = max(1, radius - 1)
    for a, b in skeleton:
        if a < len(kp) and b < len(kp) and kp[a, 2] > score_thr and kp[b, 2] > score_thr:
            cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), _side(b), thick,
                     cv2.LINE_AA)
    for i, (x, y, s) in enumerate(kp):
        if s > score_thr:
            cv2.circle(out, (int(x), int(y)), radius, _side(i), -1, cv2.LINE_AA)
    return out


def render_results(results: str | Path | list[dict[str, Any]], ann_file: str | Path, images_dir: str | Path,
                   out_png: str | Path, *, max_images: int = 6, cols: int = 3, tile: int = 320,
                   score_thr: float = 0.3, min_person_score: float = 0.2) -> Path:
    """Tile up to ``max_images`` images with their predicted keypoints (COCO results format) into one PNG."""
    res = json.loads(Path(results).read_text()) if isinstance(results, (str, Path)) else results
    if not res:
        raise ValueError("no keypoint results to draw")
    ann = json.loads(Path(ann_file).read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for r in res:  # every image with results is shown; only confident persons are drawn on it
        people = by_image[r["image_id"]]
        if r.get("score", 1.0) >= min_person_score:
            people.append(r)
    tiles = []
    for image_id in sorted(by_image, key=str)[:max_images]:
        path = Path(images_dir) / files[image_id]
        img = cv2.imread(str(path))
        if img is None:
            raise FileNotFoundError(f"cannot read image {path}")
        for r in by_image[image_id]:
            img = draw_keypoints(img, np.asarray(r["keypoints"]).reshape(-1, 3), score_thr=score_thr,
                                 radius=max(2, round(max(img.shape[:2]) / 160)))
        scale = tile / max(img.shape[:2])
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        tiles.append(canvas)
    while len(tiles) % cols:
        tiles.append(np.full((tile, tile, 3), 255, np.uint8))
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, axis=0)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        ok, buf = cv2.imencode(".png", grid)
        if not ok:
            raise RuntimeError(f"could not encode {out_png}")
        tmp.write_bytes(buf.tobytes())
    return out_png
