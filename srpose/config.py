"""Model + data configuration: the PoseConfig dataclass, its defaults and small parsers (no torch).

Presets live in :mod:`srpose.presets`; :func:`srpose.resolve.get_config` turns a preset name, an official mmpose
``.py`` config or a project ``.json`` config into a PoseConfig.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from srpose._mmcfg import ConfigError
from srpose.keypoints import dataset_meta

DEFAULT_TEST_CFG = dict(flip_test=True, post_process="default", shift_heatmap=True, modulate_kernel=11)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Training defaults of the official recipe (Adam 5e-4, linear warm-up 500 iterations, steps at 170/200, 210 epochs).
DEFAULT_TRAIN_CFG = dict(
    optimizer="Adam", lr=5e-4, weight_decay=0.0, warmup_iters=500, warmup_ratio=0.001, lr_steps=(170, 200),
    lr_gamma=0.1, epochs=210, batch_size=32, flip_prob=0.5, num_joints_half_body=8, prob_half_body=0.3,
    rot_factor=40, scale_factor=0.5, grad_clip=None,
    channels_last=False,  # not in mmpose: NHWC activations, 1.6x faster CPU training of the demo preset (measured)
)
#: detector type names of bottom-up configs (SRPose / early mmpose 0.x, later mmpose 0.x).
BOTTOM_UP_TYPES = ("BottomUp", "AssociativeEmbedding")


@dataclass
class PoseConfig:
    """Everything needed to build, train, export and evaluate one model."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAIN_CFG))
    source: str = "preset"

    @property
    def is_bottom_up(self) -> bool:
        """The model is a bottom-up (associative embedding) detector."""
        return self.model.get("type") in BOTTOM_UP_TYPES

    @property
    def test_cfg(self) -> dict[str, Any]:
        """Test settings (flip_test, shift_heatmap, post_process, modulate_kernel)."""
        return {**DEFAULT_TEST_CFG, **self.model.get("test_cfg", {})}

    @property
    def image_size(self) -> tuple[int, int]:
        """Input size as (width, height)."""
        return tuple(self.data["image_size"])  # type: ignore[return-value]

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """Output heatmap size as (width, height)."""
        return tuple(self.data["heatmap_size"])  # type: ignore[return-value]

    @property
    def num_joints(self) -> int:
        return int(self.data["num_joints"])

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        return [tuple(p) for p in self.data["flip_pairs"]]  # type: ignore[misc]

    def input_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of one input crop."""
        w, h = self.image_size
        return (3, h, w)

    def with_input_size(self, width: int, height: int) -> "PoseConfig":
        """A copy with another input size (heatmap size scaled by the same factor); used for small test inputs."""
        cfg = copy.deepcopy(self)
        iw, ih = self.image_size
        hw, hh = self.heatmap_size
        cfg.data["image_size"] = [width, height]
        cfg.data["heatmap_size"] = [width * hw // iw, height * hh // ih]
        bb = cfg.model["backbone"]
        if "image_size" in bb:
            bb["image_size"] = [width, height]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PoseConfig":
        missing = [k for k in ("name", "model", "data") if k not in d]
        if missing:
            raise ConfigError(f"config dict lacks the key(s) {missing}: it needs name, model and data")
        return cls(name=d["name"], model=d["model"], data=d["data"],
                   train={**DEFAULT_TRAIN_CFG, **d.get("train", {})}, source=d.get("source", "dict"))


def parse_wxh(text: str, *, option: str = "size", minimum: int = 16, multiple: int = 1) -> tuple[int, int]:
    """``"192x256"`` -> ``(192, 256)`` (width, height); ValueError naming ``option`` when malformed, smaller than
    ``minimum`` or not a multiple of ``multiple``."""
    try:
        w, h = (int(v) for v in str(text).lower().replace(" ", "").split("x"))
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected WxH such as 192x256") from None
    if w < minimum or h < minimum:
        raise ValueError(f"{option} {text!r}: width and height must be >= {minimum}")
    if w % multiple or h % multiple:
        raise ValueError(f"{option} {text!r}: width and height must be multiples of {multiple}")
    return w, h


def parse_batch(text: str | Sequence[int], *, option: str = "--batch") -> tuple[int, int, int]:
    """``"1,8,32"`` (or a sequence; one number N means N,N,N) -> checked (min, opt, max) batch profile; ValueError
    naming ``option`` when malformed or not 1 <= min <= opt <= max."""
    if isinstance(text, str):
        try:
            vals = [int(p) for p in text.replace(" ", "").split(",") if p]
        except ValueError:
            raise ValueError(f"{option} {text!r}: expected MIN,OPT,MAX integers such as 1,8,32") from None
    else:
        vals = [int(v) for v in text]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"{option} {text!r} must have three values (min, opt, max), e.g. 1,8,32")
    lo, opt, hi = vals
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"{option} ({lo}, {opt}, {hi}) must satisfy 1 <= min <= opt <= max")
    return lo, opt, hi


def make_data_cfg(dataset: str = "coco", *, image_size=(192, 256), heatmap_size=(48, 64), sigma: float = 2.0,
                  decoder: str = "simple", **overrides: Any) -> dict[str, Any]:
    """The data settings of a top-down model on ``dataset``."""
    meta = dataset_meta(dataset)
    d = dict(
        dataset=dataset, image_size=list(image_size), heatmap_size=list(heatmap_size),
        num_joints=len(meta["joints"]), flip_pairs=[list(p) for p in meta["flip_pairs"]],
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), sigma=sigma, decoder=decoder,
        use_gt_bbox=False, det_bbox_thr=0.0, oks_thr=0.9, vis_thr=0.2, soft_nms=False,
    )
    d.update(overrides)
    return d


def bottom_up_test_cfg(nms_kernel: int = 5, **overrides: Any) -> dict[str, Any]:
    """The official bottom-up ``test_cfg`` (single scale, flip test, adjust and refine)."""
    cfg = dict(num_joints=17, max_num_people=30, scale_factor=[1], with_heatmaps=[True], with_ae=[True],
               project2image=True, nms_kernel=nms_kernel, nms_padding=(nms_kernel - 1) // 2, tag_per_joint=True,
               detection_threshold=0.1, tag_threshold=1, use_detection_val=True, ignore_too_much=False,
               adjust=True, refine=True, flip_test=True)
    cfg.update(overrides)
    return cfg
