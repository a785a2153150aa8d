"""Synthetic COCO-format top-down data: articulated mannequin people with the 17 COCO joints.

Every image holds a few people drawn as thick capsules with joint balls, hands and feet on a textured background
(noise, gradients, stripes, blobs), sometimes partly covered by occluders or cut by the image border. Left limbs
are warm-coloured and right limbs cool-coloured, which makes labels easy to check by eye; under flip augmentation
left/right is learnt, as for real people, from which way the figure faces (eyes and nose, or hair at the back).
Annotations follow COCO: ``v=2`` visible, ``v=1`` labelled but covered by another person or an occluder,
``(0, 0, 0)`` outside the image. Image ``i`` depends only on ``(seed, i)``: the same seed gives byte-identical files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from srpose._io import atomic_write_bytes, atomic_write_json
from srpose.keypoints import COCO_JOINTS, COCO_SKELETON

__all__ = ["generate_dataset", "render_image", "annotate"]

_SHIFT = 4  # OpenCV sub-pixel bits for drawing
_SUB = 1 << _SHIFT
_JPEG_QUALITY = 92
# joint indices
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH, L_EL, R_EL, L_WR, R_WR, L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = range(17)


# ---------------------------------------------------------------------------------------------- geometry
def _unit(angle: float) -> np.ndarray:
    """Direction at ``angle`` radians from straight down (image y grows downwards), positive towards +x."""
    return np.array([math.sin(angle), math.cos(angle)])


def _sample_pose(rng: np.random.Generator, height: float, pelvis: np.ndarray) -> dict[str, Any]:
    """17 joint positions (image px) and drawing parameters of one person about ``height`` px tall."""
    u = height / 8.0  # one head-height
    facing = 1.0 if rng.random() < 0.8 else -1.0  # +1: faces the camera, so the person's left is image right
    turn = rng.uniform(0.35, 1.0)  # 1: frontal, small: seen from the side
    side = facing * turn
    lean = rng.normal(0.0, 0.12)
    torso_dir = -_unit(lean)  # pelvis -> neck (upwards)
    across = np.array([-torso_dir[1], torso_dir[0]])  # towards image +x when upright
    across = across if across[0] >= 0 else -across
    neck = pelvis + torso_dir * 2.9 * u
    j = np.zeros((17, 2))
    j[L_SH] = neck + across * 1.05 * u * side
    j[R_SH] = neck - across * 1.05 * u * side
    j[L_HIP] = pelvis + across * 0.65 * u * side
    j[R_HIP] = pelvis - across * 0.65 * u * side

    def limb(root: int, mid: int, end: int, out_sign: float, l1: float, l2: float, lo: float, hi: float,
             bend: tuple[float, float]) -> None:
        a = math.radians(rng.uniform(lo, hi))
        fore = rng.uniform(0.75, 1.0)  # foreshortening
        d1 = _unit(lean + out_sign * a)
        j[mid] = j[root] + d1 * l1 * u * fore
        b = math.radians(rng.uniform(*bend)) * (1 if rng.random() < 0.5 else -1)
        d2 = _unit(lean + out_sign * (a + b))
        j[end] = j[mid] + d2 * l2 * u * rng.uniform(0.8, 1.0)

    s = 1.0 if side >= 0 else -1.0  # image direction of the person's left side
    limb(L_SH, L_EL, L_WR, +s, 1.55, 1.35, -25, 160, (0, 140))
    limb(R_SH, R_EL, R_WR, -s, 1.55, 1.35, -25, 160, (0, 140))
    limb(L_HIP, L_KN, L_AN, +s, 2.0, 1.95, -12, 55, (0, 90))
    limb(R_HIP, R_KN, R_AN, -s, 2.0, 1.95, -12, 55, (0, 90))
    tilt = lean + rng.normal(0.0, 0.15)
    head = neck - _unit(tilt) * 1.25 * u
    head_r = 0.72 * u
    gaze = -_unit(tilt)  # up along the head axis
    head_across = np.array([-gaze[1], gaze[0]])
    head_across = head_across if head_across[0] >= 0 else -head_across
    yaw = (1.0 - turn) * s * 0.55  # face centre moves sideways when the person turns
    face = head + head_across * yaw * head_r
    j[NOSE] = face - gaze * 0.2 * head_r
    j[L_EYE] = face + gaze * 0.22 * head_r + head_across * 0.38 * head_r * s * turn
    j[R_EYE] = face + gaze * 0.22 * head_r - head_across * 0.38 * head_r * s * turn
    j[L_EAR] = head + head_across * 0.95 * head_r * s * max(turn, 0.5) - head_across * yaw * head_r * 0.6
    j[R_EAR] = head - head_across * 0.95 * head_r * s * max(turn, 0.5) - head_across * yaw * head_r * 0.6
    return dict(joints=j, u=u, head=head, head_r=head_r, facing=facing, neck=neck, pelvis=pelvis)


def _palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """BGR colours of one person: warm left limbs, cool right limbs, random torso, skin, joints and shoes."""
    def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
        px = np.uint8([[[int(h) % 180, int(s), int(v)]]])
        b, g, r = cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0]
        return int(b), int(g), int(r)

    lh = rng.uniform(0, 22)  # reds/oranges
    rh = rng.uniform(95, 125)  # blues
    th = rng.uniform(0, 180)
    return dict(
        l_upper=hsv(lh, rng.uniform(170, 255), rng.uniform(190, 255)),
        l_lower=hsv(lh + 8, rng.uniform(150, 230), rng.uniform(120, 170)),
        r_upper=hsv(rh, rng.uniform(170, 255), rng.uniform(190, 255)),
        r_lower=hsv(rh - 10, rng.uniform(150, 230), rng.uniform(110, 160)),
        torso=hsv(th, rng.uniform(40, 200), rng.uniform(90, 230)),
        skin=hsv(rng.uniform(5, 20), rng.uniform(60, 150), rng.uniform(140, 240)),
        joint=hsv(rng.uniform(0, 180), rng.uniform(0, 60), rng.uniform(30, 90)),
        shoe=hsv(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(10, 60)),
        dark=(20, 20, 25),
    )


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * _SUB)), int(round(p[1] * _SUB))


def _capsule(img: np.ndarray, a: np.ndarray, b: np.ndarray, thick: float, color: Any) -> None:
    t = max(1, int(round(thick)))
    cv2.line(img, _pt(a), _pt(b), color, t, cv2.LINE_AA, _SHIFT)


def _disc(img: np.ndarray, c: np.ndarray, r: float, color: Any) -> None:
    cv2.circle(img, _pt(c), int(round(max(r, 0.5) * _SUB)), color, -1, cv2.LINE_AA, _SHIFT)


def _draw_person(img: np.ndarray, mask: np.ndarray | None, pose: dict[str, Any], pal: dict[str, Any],
                 mask_value: int = 255) -> None:
    """Draw one figure on ``img`` (BGR) and, when given, its silhouette on ``mask``."""
    j, u = pose["joints"], pose["u"]
    arm, leg = 0.42 * u, 0.62 * u
    torso_poly = np.array([_pt(p) for p in (j[L_SH], j[R_SH], j[R_HIP], j[L_HIP])], dtype=np.int32)
    # far side first: for a person facing the camera that is the right side when the left is nearer, and so on
    order = ("r", "l") if pose["facing"] > 0 else ("l", "r")
    limbs = {
        "l": [((L_HIP, L_KN), leg, "l_upper"), ((L_KN, L_AN), leg * 0.85, "l_lower")],
        "r": [((R_HIP, R_KN), leg, "r_upper"), ((R_KN, R_AN), leg * 0.85, "r_lower")],
    }
    arms = {
        "l": [((L_SH, L_EL), arm, "l_upper"), ((L_EL, L_WR), arm * 0.85, "l_lower")],
        "r": [((R_SH, R_EL), arm, "r_upper"), ((R_EL, R_WR), arm * 0.85, "r_lower")],
    }
    for target, colors in ((img, None), (mask, mask_value)):
        if target is None:
            continue

        def c(name: str) -> Any:
            return colors if colors is not None else pal[name]

        for sd in order:
            for (a, b), t, name in limbs[sd]:
                _capsule(target, j[a], j[b], t, c(name))
            kn, an = (L_KN, L_AN) if sd == "l" else (R_KN, R_AN)
            _disc(target, j[kn], leg * 0.55, c("joint"))  # knee ball
            _disc(target, j[an], leg * 0.6, c("shoe"))  # foot
        # torso: a filled quad with rounded corners so narrow (side-view) torsos still have body
        cv2.fillConvexPoly(target, torso_poly, c("torso"), cv2.LINE_AA, _SHIFT)
        for a, b in ((L_SH, L_HIP), (R_SH, R_HIP), (L_SH, R_SH), (L_HIP, R_HIP)):
            _capsule(target, j[a], j[b], 0.55 * u, c("torso"))
        _capsule(target, pose["neck"], pose["head"], 0.45 * u, c("skin"))
        for sd in order:
            for (a, b), t, name in arms[sd]:
                _capsule(target, j[a], j[b], t, c(name))
            el, wr = (L_EL, L_WR) if sd == "l" else (R_EL, R_WR)
            _disc(target, j[el], arm * 0.55, c("joint"))  # elbow ball
            _disc(target, j[wr], arm * 0.65, c("skin"))  # hand
        _disc(target, pose["head"], pose["head_r"], c("skin"))
        if colors is None:  # face details only on the image
            r = pose["head_r"]
            if pose["facing"] > 0:
                _disc(target, j[L_EYE], 0.14 * r, pal["l_upper"])
                _disc(target, j[R_EYE], 0.14 * r, pal["r_upper"])
                _disc(target, j[L_EYE], 0.07 * r, pal["dark"])
                _disc(target, j[R_EYE], 0.07 * r, pal["dark"])
                _disc(target, j[NOSE], 0.12 * r, (40, 40, 160))
            else:  # hair on the back of the head
                _disc(target, pose["head"], 0.85 * r, (30, 40, 60))
            _disc(target, j[L_EAR], 0.2 * r, pal["l_lower"])
            _disc(target, j[R_EAR], 0.2 * r, pal["r_lower"])


# ---------------------------------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A BGR uint8 texture: gradient base plus noise, stripes or blobs."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * math.pi)
    xx = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], (h, w))
    yy = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))
    t = (xx * math.cos(ang) + yy * math.sin(ang))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = cv2.merge([t * np.float32(c1[k] - c0[k]) + np.float32(c0[k]) for k in range(3)])
    kind = rng.integers(0, 4)
    if kind == 0:  # smooth noise
        small = rng.uniform(-60, 60, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # stripes
        period = rng.uniform(6, 40)
        a2 = rng.uniform(0, math.pi)
        s = np.sin((xx * math.cos(a2) + yy * math.sin(a2)) * 2 * math.pi / period)
        img += (s[..., None] * rng.uniform(10, 50, 3)).astype(np.float32)
    elif kind == 2:  # random blobs / rectangles
        for _ in range(int(rng.integers(3, 10))):
            col = rng.uniform(0, 255, 3).tolist()
            if rng.random() < 0.5:
                cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                           int(rng.integers(5, max(6, min(w, h) // 4))), col, -1, cv2.LINE_AA)
            else:
                x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
                x1 = x0 + int(rng.integers(5, w // 3 + 6))
                y1 = y0 + int(rng.integers(5, h // 3 + 6))
                cv2.rectangle(img, (x0, y0), (x1, y1), col, -1)
    grain = np.float32(rng.uniform(4, 24))
    img += (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * grain  # fine grain everywhere
    return np.clip(img, 0, 255).astype(np.uint8)


def _occluder(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, near: np.ndarray, size: float) -> None:
    """A textured rectangle or ellipse near ``near`` (px), drawn on the image and marked on ``mask``."""
    h, w = img.shape[:2]
    cx, cy = near + rng.normal(0, size * 0.3, 2)
    ow, oh = rng.uniform(0.2, 0.6) * size, rng.uniform(0.15, 0.5) * size
    col = rng.uniform(0, 255, 3).tolist()
    shape = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cv2.rectangle(shape, (int(cx - ow / 2), int(cy - oh / 2)), (int(cx + ow / 2), int(cy + oh / 2)), 255, -1)
    else:
        cv2.ellipse(shape, (int(cx), int(cy)), (max(1, int(ow / 2)), max(1, int(oh / 2))),
                    float(rng.uniform(0, 180)), 0, 360, 255, -1)
    sel = shape > 0
    noise = rng.standard_normal((int(sel.sum()), 3), dtype=np.float32) * np.float32(20)
    img[sel] = np.clip(np.asarray(col, np.float32)[None] + noise, 0, 255).astype(np.uint8)
    mask[sel] = 255


# ---------------------------------------------------------------------------------------------- one image
def draw_people(img: np.ndarray, people: Sequence[tuple[int, dict[str, Any], Any]]) -> tuple[np.ndarray,
                                                                                             list[np.ndarray]]:
    """Draw ``people`` (owner label, pose, palette) onto ``img`` in order, later ones in front: (H x W uint8 map of
    the label of the person visible at each pixel, 0 for none; each person's silhouette, a bool mask)."""
    h, w = img.shape[:2]
    owner = np.zeros((h, w), np.uint8)
    silhouettes = []
    for label, pose, pal in people:
        mask = np.zeros((h, w), np.uint8)
        _draw_person(img, mask, pose, pal)
        sel = mask > 127
        owner[sel] = label
        silhouettes.append(sel)
    return owner, silhouettes


def render_image(seed: int, index: int, image_size: Sequence[int] = (320, 240),
                 people: Sequence[int] = (1, 3)) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render image ``index`` of the dataset with ``seed``: (BGR uint8 image, list of person annotations).

    Each annotation has ``keypoints`` (17 x 3 COCO triplets), ``bbox`` (x, y, w, h), ``area`` and
    ``num_keypoints``.
    """
    w, h = int(image_size[0]), int(image_size[1])
    rng = np.random.default_rng([int(seed), int(index)])
    img = _background(rng, w, h)
    n = int(rng.integers(int(people[0]), int(people[1]) + 1))
    persons = []
    for _ in range(n):
        height = rng.uniform(0.45, 0.95) * h
        x = rng.uniform(0.08, 0.92) * w
        y = h * 0.5 + rng.normal(0, 0.12) * h
        if rng.random() < 0.12:  # partly out of the frame
            x += rng.choice([-1, 1]) * rng.uniform(0.1, 0.3) * w
            y += rng.choice([-1, 1]) * rng.uniform(0.05, 0.25) * h
        pelvis = np.array([x, y + 0.03 * height])
        persons.append((height, _sample_pose(rng, height, pelvis), _palette(rng)))
    persons.sort(key=lambda p: p[0])  # smaller (further) people first, bigger ones in front
    # owner: 0 background, k = person k (1-based), 255 occluder
    owner, silhouettes = draw_people(img, [(k, pose, pal) for k, (_, pose, pal) in enumerate(persons, start=1)])
    if rng.random() < 0.3 and persons:
        _, pose, _ = persons[int(rng.integers(0, len(persons)))]
        target = pose["joints"][int(rng.integers(0, 17))]
        _occluder(rng, img, owner, target, pose["u"] * 4)

    anns = annotate([pose for _, pose, _ in persons], silhouettes, owner)
    return img, [a for a in anns if a is not None]


def annotate(poses: Sequence[dict[str, Any]], silhouettes: Sequence[np.ndarray], owner: np.ndarray
             ) -> list[dict[str, Any]]:
    """COCO annotations of drawn people (``poses`` with their ``silhouettes`` and the image's ``owner`` map: 0
    background, k person k, 255 occluder): keypoints (visibility from who owns each joint's pixel), box, area; an
    entry per person, None for a person nothing of whom is visible (so indices stay aligned)."""
    h, w = owner.shape
    anns = []
    for k, (sel, pose) in enumerate(zip(silhouettes, poses), start=1):
        kpts = np.zeros((17, 3), dtype=np.float64)
        for jj, (px, py) in enumerate(pose["joints"]):
            if not (0 <= px <= w - 1 and 0 <= py <= h - 1):
                continue  # outside the image: unlabelled (0, 0, 0) as COCO
            ix, iy = int(round(px)), int(round(py))
            if jj in (NOSE, L_EYE, R_EYE) and pose["facing"] < 0:
                vis = 1  # face joints of a person seen from behind are hidden by the head
            else:
                vis = 2 if owner[iy, ix] in (0, k) else 1
            kpts[jj] = (round(float(px), 2), round(float(py), 2), vis)
        ys, xs = np.nonzero(sel)
        if len(xs) == 0:
            anns.append(None)
            continue
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1
        anns.append(dict(keypoints=[float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kpts.reshape(-1))],
                         num_keypoints=int((kpts[:, 2] > 0).sum()),
                         bbox=[x0, y0, x1 - x0, y1 - y0], area=float(sel.sum())))
    return anns


# ---------------------------------------------------------------------------------------------- dataset
def _category() -> dict[str, Any]:
    return dict(id=1, name="person", supercategory="person", keypoints=list(COCO_JOINTS),
                skeleton=[[a + 1, b + 1] for a, b in COCO_SKELETON])


def _jitter_box(rng: np.random.Generator, box: Sequence[float], w: int, h: int) -> list[float]:
    x, y, bw, bh = box
    cx, cy = x + bw / 2 + rng.normal(0, 0.04) * bw, y + bh / 2 + rng.normal(0, 0.04) * bh
    bw2, bh2 = bw * float(np.exp(rng.normal(0, 0.06))), bh * float(np.exp(rng.normal(0, 0.06)))
    x0, y0 = max(0.0, cx - bw2 / 2), max(0.0, cy - bh2 / 2)
    x1, y1 = min(float(w), cx + bw2 / 2), min(float(h), cy + bh2 / 2)
    return [round(x0, 2), round(y0, 2), round(max(1.0, x1 - x0), 2), round(max(1.0, y1 - y0), 2)]


def generate_dataset(out_dir: str | Path, *, num_images: int, image_size: Sequence[int] = (320, 240),
                     people: Sequence[int] = (1, 3), seed: int = 0, progress: bool = False) -> dict[str, Path]:
    """Write ``images/*.jpg``, ``annotations.json`` (COCO keypoints) and ``detections.json`` (GT boxes jittered,
    with scores) under ``out_dir``; returns ``dict(ann=..., images=..., det=...)``. Same seed, same bytes."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if len(image_size) != 2 or min(int(v) for v in image_size) < 32:
        raise ValueError(f"image_size must be (width, height) with both >= 32, got {tuple(image_size)}")
    lo, hi = (int(v) for v in people)
    if lo < 1 or hi < lo:
        raise ValueError(f"people must be (min, max) with 1 <= min <= max, got {tuple(people)}")
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    w, h = int(image_size[0]), int(image_size[1])
    images, annotations, dets = [], [], []
    det_rng = np.random.default_rng([int(seed), 0x5EED])
    from tqdm import tqdm

    for i in tqdm(range(num_images), desc="generate", unit="img", disable=not progress, leave=False):
        img, anns = render_image(seed, i, (w, h), (lo, hi))
        name = f"{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR array
            raise RuntimeError(f"OpenCV could not encode image {name}")
        atomic_write_bytes(img_dir / name, buf.tobytes())
        image_id = i + 1
        images.append(dict(id=image_id, file_name=name, width=w, height=h))
        for a in anns:
            ann_id = len(annotations) + 1
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=1, iscrowd=0, **a))
            dets.append(dict(image_id=image_id, category_id=1, bbox=_jitter_box(det_rng, a["bbox"], w, h),
                             score=round(float(det_rng.uniform(0.6, 1.0)), 4)))
    coco = dict(info=dict(description=f"SRPose-TRT synthetic people, seed {seed}", version="1.0"),
                licenses=[], images=images, annotations=annotations, categories=[_category()])
    ann_path = atomic_write_json(out / "annotations.json", coco)
    det_path = atomic_write_json(out / "detections.json", dets)
    return dict(ann=ann_path, images=img_dir, det=det_path)
