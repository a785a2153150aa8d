"""Top-down geometric transforms and augmentations (mmpose 0.x semantics, without UDP).

Conventions: ``center`` is the box centre (x, y) in image pixels, ``scale`` the box (w, h) in units of
200 px, ``image_size``/``heatmap_size`` are (w, h). Joints are K x 3 arrays (x, y, visibility).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

PIXEL_STD = 200.0
DEFAULT_PADDING = 1.25

__all__ = [
    "read_rgb",
    "read_image",
    "decode_rgb",
    "decode_image",
    "PIXEL_STD",
    "box_to_center_scale",
    "center_scale_to_boxes",
    "get_affine_transform",
    "affine_transform",
    "warp_affine_crop",
    "fliplr_joints",
    "flip_back",
    "random_flip",
    "half_body_transform",
    "random_scale_rotation",
    "normalize_image",
    "TopDownPipeline",
]



def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 image (H x W x 3) at ``path`` (OpenCV reads BGR; mmpose 0.x converts, so do we)."""
    return read_image(path, "rgb")


def read_image(path: str | Path, pixel_format: str = "bgr") -> np.ndarray:
    """uint8 image (H x W x 3) at ``path`` in ``pixel_format``: ``bgr`` as OpenCV decodes it (no conversion; what
    image-input graphs take), or ``rgb`` as :func:`read_rgb`. The file's bytes are decoded as a server decodes a
    request's (``cv2.imdecode``, which refuses a truncated JPEG that ``cv2.imread`` would fill with grey); ValueError
    naming the file when it is empty, truncated or not an image."""
    if pixel_format not in ("bgr", "rgb"):
        raise ValueError(f"pixel_format {pixel_format!r}: expected 'bgr' or 'rgb'")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise FileNotFoundError(f"cannot read image {str(path)!r}: {e.strerror or e}") from None
    try:
        return decode_image(data, pixel_format, source=f"image {str(path)!r}")
    except ValueError:
        raise ValueError(f"cannot decode image {str(path)!r} ({data.size} bytes): the file is empty, truncated or "
                         f"not an image; replace it (srpose eval --skip-bad-images leaves such images out)") from None


def decode_rgb(data: bytes | np.ndarray, source: str = "image bytes") -> np.ndarray:
    """RGB uint8 image (H x W x 3) of an encoded image file's bytes (JPEG, PNG, ...), decoded as :func:`read_rgb`
    reads a file (OpenCV's BGR colour decode, then RGB): what a server gets from its clients."""
    return decode_image(data, "rgb", source)


def decode_image(data: bytes | np.ndarray, pixel_format: str = "bgr", source: str = "image bytes") -> np.ndarray:
    """uint8 image (H x W x 3) in ``pixel_format`` of an encoded image file's bytes: ``bgr`` as OpenCV decodes it,
    ``rgb`` as :func:`decode_rgb`; ValueError naming ``source`` for bytes that are no image."""
    if pixel_format not in ("bgr", "rgb"):
        raise ValueError(f"pixel_format {pixel_format!r}: expected 'bgr' or 'rgb'")
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else \
        np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    except cv2.error:  # some malformed headers raise instead of returning None
        img = None
    if img is None:
        raise ValueError(f"cannot decode {source} ({buf.size} bytes) as an image: send the bytes of an image file "
                         "(JPEG, PNG, ...)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if pixel_format == "rgb" else img


def box_to_center_scale(
    x: float,
    y: float,
    w: float,
    h: float,
    image_size: Sequence[float],
    padding: float = DEFAULT_PADDING,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Box (x, y, w, h) -> (center, scale) as mmpose ``_xywh2cs``: aspect fixed to ``image_size``, padded.

    With ``rng`` (training) the centre is jittered by up to 20% of the box with probability 0.3, as
    mmpose does when it builds the training database.
    """
    aspect_ratio = float(image_size[0]) / float(image_size[1])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if rng is not None and rng.random() < 0.3:
        center += (0.4 * (rng.random(2) - 0.5) * np.array([w, h])).astype(np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * padding
    return center, scale.astype(np.float32)


def center_scale_to_boxes(center: np.ndarray, scale: np.ndarray, padding: float = DEFAULT_PADDING) -> np.ndarray:
    """N x 4 boxes (x, y, w, h) whose :func:`box_to_center_scale` is ``center`` / ``scale`` (N x 2 each, scale in
    200-px units, padded and of the input's aspect ratio): what records without a box (MPII) send to an image
    graph, which takes boxes."""
    size = np.asarray(scale, np.float64).reshape(-1, 2) * PIXEL_STD / padding
    return np.concatenate([np.asarray(center, np.float64).reshape(-1, 2) - size / 2, size], axis=1)


def _rotate_point(pt: Sequence[float], angle_rad: float) -> np.ndarray:
    sn, cs = np.sin(angle_rad), np.cos(angle_rad)
    return np.array([pt[0] * cs - pt[1] * sn, pt[0] * sn + pt[1] * cs])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(
    center: Sequence[float],
    scale: Sequence[float],
    rot: float,
    output_size: Sequence[float],
    shift: Sequence[float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """2 x 3 affine matrix mapping the box (center, scale, rotation in degrees) onto ``output_size``.

    ``inv=True`` gives the inverse mapping (output -> image). Only the box width sets the zoom, as in mmpose.
    """
    center = np.asarray(center, dtype=np.float32)
    scale_px = np.asarray(scale, dtype=np.float32) * PIXEL_STD
    shift = np.asarray(shift, dtype=np.float32)
    if center.shape != (2,) or scale_px.shape != (2,) or len(output_size) != 2:
        raise ValueError(
            f"center, scale and output_size must have 2 values each, got {center.shape}, {scale_px.shape}, "
            f"{len(output_size)}"
        )
    src_w = scale_px[0]
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rot_rad = np.pi * rot / 180.0
    src_dir = _rotate_point([0.0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5])

    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_px * shift
    src[1, :] = center + src_dir + scale_px * shift
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    dst[2, :] = _third_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pts: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to points of shape (..., 2); returns float64 of the same shape."""
    pts = np.asarray(pts, dtype=np.float64)
    if pts.shape[-1] != 2:
        raise ValueError(f"points must have a last dimension of 2 (x, y), got shape {pts.shape}")
    trans = np.asarray(trans, dtype=np.float64)
    return pts @ trans[:, :2].T + trans[:, 2]


def warp_affine_crop(
    img: np.ndarray,
    center: Sequence[float],
    scale: Sequence[float],
    rot: float,
    image_size: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the box out of ``img`` (H x W x C) to ``image_size`` with bilinear warping, as mmpose TopDownAffine.

    Returns (crop, trans) with ``trans`` the image -> crop matrix.
    """
    trans = get_affine_transform(center, scale, rot, image_size)
    crop = cv2.warpAffine(img, trans, (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)
    return crop, trans


def fliplr_joints(
    joints: np.ndarray, img_width: float, flip_pairs: Sequence[Sequence[int]]
) -> np.ndarray:
    """Mirror K x 3 joints (x, y, visibility) in an image of width ``img_width``; swaps left/right pairs.

    As mmpose, the coordinates of invisible joints become 0 after the flip.
    """
    joints = np.asarray(joints)
    if img_width <= 0:
        raise ValueError(f"img_width must be positive, got {img_width}")
    out = joints.copy()
    for left, right in flip_pairs:
        out[left] = joints[right]
        out[right] = joints[left]
    out[:, 0] = img_width - 1 - out[:, 0]
    out[:, :2] = out[:, :2] * out[:, 2:3]
    return out


def flip_back(heatmaps: Any, flip_pairs: Sequence[Sequence[int]]) -> Any:
    """Undo a horizontal input flip on N x K x H x W heatmaps: swap paired channels and mirror W.

    Accepts numpy arrays or torch tensors and returns the same type (a new array, input untouched).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be N x K x H x W, got shape {tuple(heatmaps.shape)}")
    perm = list(range(heatmaps.shape[1]))
    for left, right in flip_pairs:
        perm[left], perm[right] = right, left
    if isinstance(heatmaps, np.ndarray):
        return np.ascontiguousarray(heatmaps[:, perm, :, ::-1])
    return heatmaps[:, perm].flip(3)


# ----------------------------------------------------------------------------------------------------
# training augmentations (mmpose 0.x TopDownRandomFlip / HalfBodyTransform / GetRandomScaleRotation)
# ----------------------------------------------------------------------------------------------------


def random_flip(
    img: np.ndarray,
    joints: np.ndarray,
    center: np.ndarray,
    flip_pairs: Sequence[Sequence[int]],
    rng: np.random.Generator,
    flip_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Mirror image, joints and centre with probability ``flip_prob``; returns (img, joints, center, flipped)."""
    if rng.random() <= flip_prob:
        img = img[:, ::-1, :]
        joints = fliplr_joints(joints, img.shape[1], flip_pairs)
        center = center.copy()
        center[0] = img.shape[1] - center[0] - 1
        return img, joints, center, True
    return img, joints, center, False


def half_body_transform(
    joints: np.ndarray,
    upper_body_ids: Sequence[int],
    image_size: Sequence[float],
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Centre and scale of the upper or lower body's visible joints (padding 1.5); (None, None) if too few.

    As mmpose 0.x, the upper body is chosen when a standard normal draw is below 0.5.
    """
    upper, lower = [], []
    for j in range(len(joints)):
        if joints[j, 2] > 0:
            (upper if j in upper_body_ids else lower).append(joints[j, :2])
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    elif len(lower) > 2:
        selected = lower
    else:
        selected = upper
    if len(selected) < 2:
        return None, None
    sel = np.array(selected, dtype=np.float32)
    center = sel.mean(axis=0)
    w, h = sel.max(axis=0) - sel.min(axis=0)
    aspect_ratio = float(image_size[0]) / float(image_size[1])
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * 1.5
    return center.astype(np.float32), scale


def random_scale_rotation(
    scale: np.ndarray,
    rng: np.random.Generator,
    rot_factor: float = 40.0,
    scale_factor: float = 0.5,
    rot_prob: float = 0.6,
) -> tuple[np.ndarray, float]:
    """Random zoom in [1 - sf, 1 + sf] (normal, clipped) and rotation in [-2 rf, 2 rf] with prob ``rot_prob``."""
    s = scale * np.clip(rng.standard_normal() * scale_factor + 1, 1 - scale_factor, 1 + scale_factor)
    r = float(np.clip(rng.standard_normal() * rot_factor, -rot_factor * 2, rot_factor * 2))
    if rng.random() > rot_prob:
        r = 0.0
    return s.astype(np.float32), r


def normalize_image(img_rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """H x W x 3 uint8 RGB -> 3 x H x W float32, scaled to [0, 1] then normalised by mean/std."""
    img = np.asarray(img_rgb, dtype=np.float32) / 255.0
    img = (img - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class TopDownPipeline:
    """The per-person pipeline: (augment) -> affine crop -> normalise -> (targets).

    ``data_cfg`` keys used: image_size, heatmap_size, mean, std, sigma, flip_pairs, upper_body_ids (train),
    unbiased_encoding; training augmentation settings may be overridden by ``flip_prob``,
    ``num_joints_half_body``, ``prob_half_body``, ``rot_factor``, ``scale_factor``, ``rot_prob``.
    """

    def __init__(self, data_cfg: Mapping[str, Any], train: bool = False) -> None:
        self.cfg = dict(data_cfg)
        self.train = train
        self.image_size = np.array(self.cfg["image_size"], dtype=np.int64)
        self.mean = tuple(self.cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(self.cfg.get("std", (0.229, 0.224, 0.225)))
        self.flip_pairs = [tuple(p) for p in self.cfg.get("flip_pairs", ())]

    def __call__(
        self, img_rgb: np.ndarray, record: Mapping[str, Any], rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        """Transform one record (center, scale, joints in image coords) of image ``img_rgb``."""
        center = np.array(record["center"], dtype=np.float32)
        scale = np.array(record["scale"], dtype=np.float32)
        rotation = 0.0
        joints = record.get("joints")
        joints = None if joints is None else np.array(joints, dtype=np.float32)
        if self.train:
            if rng is None or joints is None:
                raise ValueError("training mode needs ground-truth joints and a random generator")
            cfg = self.cfg
            img_rgb, joints, center, _ = random_flip(
                img_rgb, joints, center, self.flip_pairs, rng, cfg.get("flip_prob", 0.5)
            )
            if (joints[:, 2].sum() > cfg.get("num_joints_half_body", 8)
                    and rng.random() < cfg.get("prob_half_body", 0.3)):
                c, s = half_body_transform(joints, cfg.get("upper_body_ids", ()), self.image_size, rng)
                if c is not None:
                    center, scale = c, s
            scale, rotation = random_scale_rotation(
                scale, rng, cfg.get("rot_factor", 40), cfg.get("scale_factor", 0.5), cfg.get("rot_prob", 0.6)
            )
        crop, trans = warp_affine_crop(img_rgb, center, scale, rotation, self.image_size)
        out: dict[str, Any] = {
            "img": normalize_image(crop, self.mean, self.std),
            "center": center.astype(np.float32),
            "scale": scale.astype(np.float32),
            "rotation": np.float32(rotation),
        }
        if joints is not None:
            vis = joints[:, 2] > 0
            joints = joints.copy()
            joints[vis, :2] = affine_transform(joints[vis, :2], trans)
            out["joints"] = joints.astype(np.float32)
        if self.train:
            from .targets import generate_target

            target, weight = generate_target(
                joints,
                self.image_size,
                self.cfg["heatmap_size"],
                float(self.cfg.get("sigma", 2.0)),
                unbiased=bool(self.cfg.get("unbiased_encoding", False)),
            )
            out["target"] = target
            out["target_weight"] = weight
        return out
