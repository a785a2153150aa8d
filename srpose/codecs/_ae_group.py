"""Associative-embedding grouping on the host (numpy only), as mmpose 0.x ``HeatmapParser`` does it.

Candidates (the top-k NMS peaks of every joint heatmap, with their tags) are grouped joint by joint in a fixed
joint order: each new joint is matched to the existing people by a minimum-cost assignment on tag distance
(rounded, x100, minus the heatmap value), opening a new person where the distance is not below ``tag_threshold``.
Then ``adjust`` moves each joint a quarter pixel towards its higher neighbour and ``refine`` fills the joints a
person lacks from the heatmap penalised by the tag distance to the person's mean tag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["GroupParams", "linear_assignment", "match_by_tag", "adjust_joints", "refine_joints", "refine_people",
           "group_candidates", "transform_preds", "COCO_JOINT_ORDER"]

#: mmpose's grouping order for the 17 COCO joints: head, shoulders, hips, then limbs outwards.
COCO_JOINT_ORDER = tuple(i - 1 for i in (1, 2, 3, 4, 5, 6, 7, 12, 13, 8, 9, 10, 11, 14, 15, 16, 17))


@dataclass
class GroupParams:
    """Grouping settings (the keys of an mmpose bottom-up ``test_cfg``)."""

    num_joints: int = 17
    max_num_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    ignore_too_much: bool = False
    nms_kernel: int = 5
    nms_padding: int = 2
    tag_per_joint: bool = True
    adjust: bool = True
    refine: bool = True
    joint_order: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.num_joints < 1 or self.max_num_people < 1:
            raise ValueError(f"num_joints ({self.num_joints}) and max_num_people ({self.max_num_people}) must be >= 1")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel must be a positive odd number, got {self.nms_kernel}")
        if not self.joint_order:
            self.joint_order = COCO_JOINT_ORDER if self.num_joints == 17 else tuple(range(self.num_joints))
        if sorted(self.joint_order) != list(range(self.num_joints)):
            raise ValueError(f"joint_order {self.joint_order} is not a permutation of 0..{self.num_joints - 1}")

    @classmethod
    def from_test_cfg(cls, test_cfg: Mapping[str, Any], num_joints: int | None = None) -> "GroupParams":
        """Settings from an mmpose bottom-up ``test_cfg`` (missing keys take the official defaults)."""
        names = {f for f in cls.__dataclass_fields__ if f != "joint_order"}
        kw = {k: test_cfg[k] for k in names if k in test_cfg}
        if num_joints is not None:
            kw["num_joints"] = int(num_joints)
        if "nms_kernel" in kw and "nms_padding" not in kw:
            kw["nms_padding"] = (int(kw["nms_kernel"]) - 1) // 2
        for k in ("num_joints", "max_num_people", "nms_kernel", "nms_padding"):
            if k in kw:
                kw[k] = int(kw[k])
        return cls(**kw)


# ----------------------------------------------------------------------------------------------- assignment
def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of a rows x cols cost matrix by the Munkres (Hungarian) method.

    The matrix is zero-padded to a square and solved with the classic step sequence (row reduction, starring,
    covering, priming with a cyclic search that resumes where the last one stopped, augmenting paths), so that
    among equal-cost optima the same one is chosen as by the ``munkres`` package mmpose's grouping uses.
    Returns an M x 2 int array of (row, col) pairs sorted by row, M = min(rows, cols). Costs must be finite.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    if cost.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if not np.isfinite(cost).all():
        raise ValueError("cost matrix has non-finite entries; use a large finite value for forbidden pairs")
    rows, cols = cost.shape
    n = max(rows, cols)
    c = np.zeros((n, n), dtype=np.float64)
    c[:rows, :cols] = cost
    c -= c.min(axis=1, keepdims=True)
    marked = np.zeros((n, n), dtype=np.int8)  # 1 = starred zero, 2 = primed zero
    row_cov = np.zeros(n, dtype=bool)
    col_cov = np.zeros(n, dtype=bool)
    for i in range(n):  # star the first free zero of each row
        free = np.flatnonzero((c[i] == 0) & ~col_cov)
        if free.size:
            marked[i, free[0]] = 1
            col_cov[free[0]] = True
    col_cov[:] = False
    while True:
        col_cov[:] = (marked == 1).any(axis=0)
        if col_cov.sum() >= n:
            break
        row, col = 0, 0
        while True:  # prime uncovered zeros until one has no star in its row
            row, col = _find_zero(c, row_cov, col_cov, row, col)
            if row < 0:  # no uncovered zero: shift by the smallest uncovered value and search again
                m = c[~row_cov][:, ~col_cov].min()
                c[row_cov] += m
                c[:, ~col_cov] -= m
                row, col = 0, 0
                continue
            marked[row, col] = 2
            stars = np.flatnonzero(marked[row] == 1)
            if stars.size:
                col = int(stars[0])
                row_cov[row] = True
                col_cov[col] = False
                continue
            path = [(row, col)]  # augmenting path of alternating primes and stars
            while True:
                r = np.flatnonzero(marked[:, path[-1][1]] == 1)
                if not r.size:
                    break
                path.append((int(r[0]), path[-1][1]))
                path.append((path[-1][0], int(np.flatnonzero(marked[path[-1][0]] == 2)[0])))
            for r, cc in path:
                marked[r, cc] = 0 if marked[r, cc] == 1 else 1
            row_cov[:] = False
            col_cov[:] = False
            marked[marked == 2] = 0
            break
    pairs = np.argwhere(marked[:rows, :cols] == 1).astype(np.int64)
    return pairs


def _find_zero(c: np.ndarray, row_cov: np.ndarray, col_cov: np.ndarray, i0: int, j0: int) -> tuple[int, int]:
    """The uncovered zero the munkres package finds from (i0, j0): rows scanned cyclically from i0, and in the
    first row holding one, the last uncovered zero in the cyclic column order starting at j0."""
    n = len(c)
    for step in range(n):
        i = (i0 + step) % n
        if row_cov[i]:
            continue
        js = np.flatnonzero((c[i] == 0) & ~col_cov)
        if js.size:
            return i, int(js[np.argmax((js - j0) % n)])
    return -1, -1


# ----------------------------------------------------------------------------------------------- grouping
def match_by_tag(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, params: GroupParams) -> np.ndarray:
    """Group one image's candidates into people.

    ``tag_k`` K x M x L, ``loc_k`` K x M x 2 (x, y), ``val_k`` K x M. Returns P x K x (3 + L) float32 rows
    (x, y, heatmap value, tags); joints a person lacks are all zero. Candidates are taken by decreasing value,
    ties in raster order.
    """
    tag_k = np.asarray(tag_k, dtype=np.float32)
    loc_k, val_k = np.asarray(loc_k), np.asarray(val_k, dtype=np.float32)
    k = params.num_joints
    if tag_k.ndim != 3 or loc_k.shape[:2] != tag_k.shape[:2] or val_k.shape != tag_k.shape[:2] or len(tag_k) != k:
        raise ValueError(f"candidates must be K x M x L tags, K x M x 2 locations and K x M values with K={k}; got "
                         f"{tag_k.shape}, {loc_k.shape}, {val_k.shape}")
    # candidates of equal value come out of top-k in a runtime-dependent order (torch CPU / CUDA, ONNX Runtime,
    # TensorRT): order them by value, then row, then column, so every backend groups alike
    order = np.stack([np.lexsort((loc_k[j, :, 0], loc_k[j, :, 1], -val_k[j])) for j in range(k)])
    tag_k = np.take_along_axis(tag_k, order[:, :, None], axis=1)
    loc_k = np.take_along_axis(loc_k, order[:, :, None], axis=1)
    val_k = np.take_along_axis(val_k, order, axis=1)
    default = np.zeros((k, 3 + tag_k.shape[2]), dtype=np.float32)
    joint_dict: dict[float, np.ndarray] = {}
    tag_dict: dict[float, list[np.ndarray]] = {}
    for i in range(k):
        idx = params.joint_order[i]
        tags = tag_k[idx]
        # float64 as mmpose gets it from (int64 locations, float32 values, float32 tags)
        joints = np.concatenate((loc_k[idx].astype(np.float64), val_k[idx, :, None].astype(np.float64),
                                 tags.astype(np.float64)), 1)
        mask = joints[:, 2] > params.detection_threshold
        tags, joints = tags[mask], joints[mask]
        if joints.shape[0] == 0:
            continue
        if i == 0 or len(joint_dict) == 0:
            for tag, joint in zip(tags, joints):
                key = float(tag[0])
                joint_dict.setdefault(key, np.copy(default))[idx] = joint
                tag_dict[key] = [tag]
            continue
        grouped_keys = list(joint_dict)[:params.max_num_people]
        if params.ignore_too_much and len(grouped_keys) == params.max_num_people:
            continue
        grouped_tags = np.array([np.mean(tag_dict[g], axis=0) for g in grouped_keys])
        diff = joints[:, None, 3:] - grouped_tags[None, :, :]
        diff_saved = np.linalg.norm(diff, ord=2, axis=2)
        diff_normed = np.round(diff_saved) * 100 - joints[:, 2:3] if params.use_detection_val else diff_saved.copy()
        num_added, num_grouped = diff.shape[0], diff.shape[1]
        if num_added > num_grouped:
            pad = np.full((num_added, num_added - num_grouped), 1e10, dtype=np.float32)
            diff_normed = np.concatenate((diff_normed, pad), axis=1)
        for row, col in linear_assignment(diff_normed):
            if row < num_added and col < num_grouped and diff_saved[row][col] < params.tag_threshold:
                key = grouped_keys[col]
                joint_dict[key][idx] = joints[row]
                tag_dict[key].append(tags[row])
            else:
                key = float(tags[row][0])
                joint_dict.setdefault(key, np.copy(default))[idx] = joints[row]
                tag_dict[key] = [tags[row]]
    if not joint_dict:
        return np.zeros((0,) + default.shape, dtype=np.float32)
    return np.array([joint_dict[g] for g in joint_dict]).astype(np.float32)


def adjust_joints(people: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Quarter-pixel shift of every found joint towards its higher neighbour, plus the half-pixel centre offset.

    ``people`` P x K x (3 + L) is changed in place and returned; ``heatmaps`` K x H x W.
    """
    _, h, w = heatmaps.shape
    for person in people:
        for j, joint in enumerate(person):
            if joint[2] > 0:
                x, y = joint[0], joint[1]
                xx, yy = int(x), int(y)
                tmp = heatmaps[j]
                y = y + 0.25 if tmp[min(h - 1, yy + 1), xx] > tmp[max(0, yy - 1), xx] else y - 0.25
                x = x + 0.25 if tmp[yy, min(w - 1, xx + 1)] > tmp[yy, max(0, xx - 1)] else x - 0.25
                person[j, 0:2] = (x + 0.5, y + 0.5)
    return people


def refine_joints(heatmaps: np.ndarray, tags: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Fill the joints a person lacks: arg-max of each heatmap minus the rounded tag distance to the person's mean
    tag, with the quarter-pixel shift. ``heatmaps`` K x H x W, ``tags`` K x H x W (x L), ``keypoints`` K x (3 + L)
    (changed in place and returned)."""
    keypoints[...] = refine_people(heatmaps, tags, keypoints[None])[0]
    return keypoints


#: people refined at once per joint (bounds the P x H x W x L distance maps)
_REFINE_CHUNK = 16


def refine_people(heatmaps: np.ndarray, tags: np.ndarray, people: np.ndarray) -> np.ndarray:
    """:func:`refine_joints` of every person of ``people`` (P x K x (3 + L), changed in place and returned), the
    distance maps of one joint computed for several people at once (the same arithmetic, person by person)."""
    k, h, w = heatmaps.shape
    if tags.ndim == 3:
        tags = tags[..., None]
    prev = {}
    for p, kp in enumerate(people):
        found = [tags[i, np.clip(int(kp[i, 1]), 0, h - 1), np.clip(int(kp[i, 0]), 0, w - 1)]
                 for i in range(k) if kp[i, 2] > 0]
        if found:
            prev[p] = np.mean(found, axis=0)
    for i in range(k):
        # only missing joints can change; mmpose computes (and discards) the others
        need = [p for p in prev if people[p, i, 2] == 0]
        hm = heatmaps[i]
        for start in range(0, len(need), _REFINE_CHUNK):
            rows = need[start:start + _REFINE_CHUNK]
            ptags = np.stack([prev[p] for p in rows])[:, None, None, :]
            sq = (tags[i][None] - ptags) ** 2
            d2 = sq[..., 0]
            for t in range(1, sq.shape[3]):  # = sq.sum(axis=3) to the bit (L <= 2 terms, summed in order), faster
                d2 = d2 + sq[..., t]
            dist = d2 ** 0.5
            flat = (hm[None] - np.round(dist)).reshape(len(rows), -1).argmax(axis=1)
            for p, (y, x) in zip(rows, zip(*np.unravel_index(flat, hm.shape))):
                val = hm[y, x]
                fx, fy = x + 0.5, y + 0.5
                fx += 0.25 if hm[y, min(w - 1, x + 1)] > hm[y, max(0, x - 1)] else -0.25
                fy += 0.25 if hm[min(h - 1, y + 1), x] > hm[max(0, y - 1), x] else -0.25
                if val > 0:
                    people[p, i, :3] = (fx, fy, val)
    return people


def group_candidates(candidates: Mapping[str, np.ndarray], heatmaps: np.ndarray, tags: np.ndarray,
                     params: GroupParams, *, adjust: bool | None = None,
                     refine: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group, adjust and refine one image: ``candidates`` has ``tag_k`` K x M x L, ``loc_k`` K x M x 2, ``val_k``
    K x M; ``heatmaps`` K x H x W and ``tags`` K x H x W x L (or 1 x H x W x L without ``tag_per_joint``) are the
    maps the candidates come from.

    Returns (people P x K x (3 + L) in heatmap pixels, person scores P: mean joint value before refining).
    """
    adjust = params.adjust if adjust is None else adjust
    refine = params.refine if refine is None else refine
    people = match_by_tag(candidates["tag_k"], candidates["loc_k"], candidates["val_k"], params)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if adjust:
        people = adjust_joints(people, heatmaps)
    scores = people[:, :, 2].mean(axis=1) if len(people) else np.zeros(0, dtype=np.float32)
    if refine and len(people):
        tags = np.asarray(tags, dtype=np.float32)
        if tags.ndim == 3:
            tags = tags[..., None]
        if tags.shape[0] == 1 and params.num_joints > 1:
            tags = np.broadcast_to(tags, (params.num_joints,) + tags.shape[1:])
        people = refine_people(heatmaps, tags, people)
    return people, scores


def transform_preds(coords: np.ndarray, center: Sequence[float], scale: Sequence[float],
                    output_size: Sequence[int]) -> np.ndarray:
    """Heatmap-pixel (x, y) of ``coords`` (..., >= 2) to image pixels (mmpose ``transform_preds``, no UDP)."""
    coords = np.asarray(coords, dtype=np.float64)
    scale_px = np.asarray(scale, dtype=np.float64) * 200.0
    center = np.asarray(center, dtype=np.float64)
    out = coords[..., :2].copy()
    out[..., 0] = coords[..., 0] * scale_px[0] / output_size[0] + center[0] - scale_px[0] * 0.5
    out[..., 1] = coords[..., 1] * scale_px[1] / output_size[1] + center[1] - scale_px[1] * 0.5
    return out
