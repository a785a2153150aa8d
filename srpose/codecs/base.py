"""The codec interface and the shared top-down heatmap codec: target encoding, decoding, back-projection, flip merge.

A codec owns its parameters and everything that depends on them: the training target (``encode``), numpy decoding
(``decode``, torch too for tensors), the exportable torch decoder (``decode_module``) and the flip merge (numpy
``flip_merge``, exportable ``flip_merge_module``). It is plain data (``to_dict`` / :func:`codec_from_dict`), stored
in every exported file's card, so runtimes and servers decode exactly as the evaluator does. The numpy paths import
no torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ._heatmap_np import as_array_n2, check_heatmaps, heatmap_to_image_np

__all__ = ["Codec", "HeatmapCodec", "CODECS", "codec_from_dict", "heatmap_to_image"]

#: codec name -> class (filled by the subclasses)
CODECS: dict[str, type["Codec"]] = {}
POST_PROCESS = ("default", "unbiased", None)


class Codec:
    """Base of every codec: a name, parameters as dataclass fields, and a dict form for the artifact card."""

    name: ClassVar[str] = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name", "base") != "base":
            CODECS[cls.name] = cls

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **parameters}`` (JSON-friendly)."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {"name": self.name, **{k: _plain(v) for k, v in d.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Codec":
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names - {"name"})
        if unknown:
            raise ValueError(f"codec {cls.name!r}: unknown parameter(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k != "name"})


def codec_from_dict(d: Mapping[str, Any]) -> Codec:
    """The codec described by ``d`` (an artifact card's ``codec`` entry)."""
    name = d.get("name")
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}: expected one of {sorted(CODECS)}")
    return CODECS[str(name)].from_dict(d)


def heatmap_to_image(coords: Any, center: Any, scale: Any, heatmap_size: Sequence[int]) -> Any:
    """Map N x K x 2 heatmap-pixel coordinates to the image (mmpose ``transform_preds``, no UDP), vectorised.

    ``center`` / ``scale`` are N x 2 (scale in units of 200 px), ``heatmap_size`` is (W, H). numpy in, numpy out;
    a tensor gives a tensor on its device.
    """
    if len(heatmap_size) != 2:
        raise ValueError(f"heatmap_size must be (W, H), got {heatmap_size!r}")
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"coords must be N x K x 2, got shape {tuple(coords.shape)}")
    if _is_tensor(coords):
        from ._heatmap_torch import heatmap_to_image_torch

        return heatmap_to_image_torch(coords, center, scale, heatmap_size)
    return heatmap_to_image_np(coords, center, scale, heatmap_size)


@dataclass
class HeatmapCodec(Codec):
    """Top-down Gaussian heatmaps of ``num_joints`` joints at ``heatmap_size`` (W, H) for crops of ``input_size``
    (W, H).

    ``post_process``: sub-pixel refinement of the decoder (``"default"`` quarter-pixel shift, ``"unbiased"`` DARK
    where the codec supports it, None off). ``shift_heatmap``: mmpose's one-pixel shift of the flipped-back heatmaps
    in the flip merge. ``flip_pairs``: left/right joint pairs (swapped by the flip merge).
    """

    num_joints: int = 17
    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    flip_pairs: list[list[int]] = field(default_factory=list)
    shift_heatmap: bool = True
    post_process: str | None = "default"
    modulate_kernel: int = 11
    unbiased_encoding: bool = False

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        self.heatmap_size = tuple(int(v) for v in self.heatmap_size)  # type: ignore[assignment]
        self.flip_pairs = [[int(a), int(b)] for a, b in self.flip_pairs]
        if self.post_process in ("none", False):
            self.post_process = None
        if self.post_process not in POST_PROCESS:
            raise ValueError(f"post_process={self.post_process!r} is not supported: use 'default', 'unbiased' or "
                             "None")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    @classmethod
    def from_config(cls, cfg: Any) -> "HeatmapCodec":
        """The codec of a top-down :class:`~srpose.config.PoseConfig` (data settings and ``test_cfg``)."""
        data, test = cfg.data, cfg.test_cfg
        return cls(num_joints=int(data["num_joints"]), input_size=tuple(data["image_size"]),
                   heatmap_size=tuple(data["heatmap_size"]),
                   sigma=float(data.get("sigma", 2.0)), flip_pairs=[list(p) for p in data.get("flip_pairs", [])],
                   shift_heatmap=bool(test.get("shift_heatmap", False)),
                   post_process=test.get("post_process", "default"),
                   modulate_kernel=int(test.get("modulate_kernel", 11)),
                   unbiased_encoding=bool(data.get("unbiased_encoding", False)))

    # ------------------------------------------------------------------------------------------ encode
    def encode(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training target K x H x W (peak 1) and target weight K x 1 of K x 3 crop-space joints."""
        from srpose.data.targets import generate_target

        return generate_target(joints, self.input_size, self.heatmap_size, self.sigma, self.unbiased_encoding)

    # ------------------------------------------------------------------------------------------ decode
    def refines(self, post: bool = True) -> bool:
        """Whether decoding with ``post`` applies the sub-pixel refinement."""
        return bool(post) and self.post_process is not None

    def decode(self, heatmaps: Any, *, post: bool = True) -> Any:
        """N x K x H x W heatmaps -> N x K x 3 (x, y, score) in heatmap pixels, float32 (numpy, or torch for a
        tensor, on its device)."""
        raise NotImplementedError

    def decode_to_image(self, heatmaps: Any, center: Any, scale: Any, *, post: bool = True) -> tuple[Any, Any]:
        """Image keypoints N x K x 2 and scores N x K x 1 of heatmaps of crops with ``center`` / ``scale``."""
        n, _, h, w = check_heatmaps(heatmaps)
        if not _is_tensor(heatmaps):
            center, scale = as_array_n2(center, n, "center"), as_array_n2(scale, n, "scale")
        out = self.decode(heatmaps, post=post)
        return heatmap_to_image(out[..., :2], center, scale, (w, h)), out[..., 2:3]

    def to_image(self, coords: Any, center: Any, scale: Any) -> Any:
        """N x K x 2 heatmap-pixel coordinates (e.g. of an in-graph decoder) in image pixels."""
        return heatmap_to_image(coords, center, scale, self.heatmap_size)

    def decode_module(self, *, post: bool = True) -> Any:
        """The decoder as an exportable ``nn.Module`` (N x K x H x W -> N x K x 3 heatmap pixels); ValueError when
        this codec's settings cannot be expressed in the graph."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ flip
    def flip_merge(self, heatmaps: np.ndarray, heatmaps_flipped: np.ndarray) -> np.ndarray:
        """Average N x K x H x W heatmaps with those of the mirrored crops, flipped back (paired channels swapped,
        mirrored, shifted one pixel right with ``shift_heatmap``)."""
        from srpose.data.transforms import flip_back

        if heatmaps_flipped.shape != heatmaps.shape:
            raise ValueError(f"flipped heatmaps have shape {heatmaps_flipped.shape}, expected {heatmaps.shape}")
        back = flip_back(heatmaps_flipped, self.flip_pairs)
        if self.shift_heatmap:  # mmpose's out[..., 1:] = out[..., :-1], without overlapping in-place copies
            shifted = back.copy()
            shifted[..., 1:] = back[..., :-1]
            back = shifted
        return (heatmaps + back) * 0.5

    def flip_merge_module(self) -> Any:
        """:meth:`flip_merge` as an exportable module on a doubled batch (second half mirrored)."""
        from ._heatmap_torch import FlipMerge

        w, h = self.heatmap_size
        return FlipMerge(self.num_joints, (h, w), self.flip_pairs, self.shift_heatmap)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
