"""The bottom-up task (mmpose 0.x protocol): whole images resized with aspect kept -> heatmaps + tags -> grouped
people -> COCO AP. No person boxes.

Graph: one input ``input`` (N x 3 x H x W, dynamic batch, height and width; H and W multiples of 64 as the
bottom-up resize gives) and either the raw head output ``outputs`` (N x (K + L) x h x w) or, decoded, the flip test
(batch doubled inside), projection, heatmap NMS and top-k in the graph with outputs ``heatmaps`` N x K x H x W,
``tags`` N x K x H x W x L and ``candidates`` N x K x M x (3 + L); grouping, adjust and refine stay on the host.
The shape profile bounds H and W for TensorRT; ONNX Runtime runs any size.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from srpose.card import IMAGES, ArtifactCard
from srpose.codecs import AssociativeEmbedding

from .base import Batch, IOSpec, Poses, PoseTask, check_finite_output, run_backend

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig

__all__ = ["BottomUpTask", "parse_shape_profile", "RAW_OUTPUT", "DECODED_OUTPUTS"]

INPUT_NAME = "input"
RAW_OUTPUT = "outputs"
DECODED_OUTPUTS = ("heatmaps", "tags", "candidates")
_ALIGN = 64


def _round_up(x: float, base: int = _ALIGN) -> int:
    return int(math.ceil(x / base) * base)


def parse_shape_profile(text: str | Sequence[Sequence[int]], *, multiple: int = _ALIGN) -> tuple[tuple[int, int], ...]:
    """``"512x512,704x512,1536x1536"`` (WxH min, opt, max) -> checked ((H, W) min, opt, max); sizes must be
    multiples of ``multiple`` (64 for bottom-up network inputs, as the bottom-up resize gives; 1 for the images of an
    image-input graph)."""
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").lower().split(",") if p]
        try:
            sizes = [tuple(int(v) for v in p.split("x")) for p in parts]
        except ValueError:
            raise ValueError(f"--shape-profile {text!r}: expected MIN,OPT,MAX sizes WxH such as "
                             "512x512,704x512,1536x1536") from None
    else:
        sizes = [tuple(int(v) for v in s) for s in text]
    if len(sizes) != 3 or any(len(s) != 2 for s in sizes):
        raise ValueError(f"shape profile {text!r} must have three WxH sizes (min, opt, max)")
    for w, h in sizes:
        if w < multiple or h < multiple or w % multiple or h % multiple:
            raise ValueError(f"shape profile size {w}x{h} must be positive multiples of {multiple}" +
                             (" (the bottom-up resize rounds the long side up to a multiple of 64)"
                              if multiple == _ALIGN else ""))
    (w0, h0), (w1, h1), (w2, h2) = sizes
    if not (w0 <= w1 <= w2 and h0 <= h1 <= h2):
        raise ValueError(f"shape profile {sizes} must satisfy min <= opt <= max in width and in height")
    return tuple((h, w) for w, h in sizes)


class BottomUpTask(PoseTask):
    """Bottom-up (associative embedding) pose estimation on whole COCO images."""

    kind = "bottom-up"
    default_batch = (1, 1, 4)
    precisions = ("fp32", "fp16")
    item = "image"

    @classmethod
    def make_codec(cls, cfg: "PoseConfig") -> AssociativeEmbedding:
        decoder = cfg.data.get("decoder", AssociativeEmbedding.name)
        if decoder != AssociativeEmbedding.name:
            raise ValueError(f"{cfg.name}: bottom-up models decode with associative embedding, not {decoder!r}")
        return AssociativeEmbedding.from_config(cfg)

    # ------------------------------------------------------------------------------------------ data
    def dataset(self, ann: str, images: str, *, protocol: str | None = None, det: str | None = None,
                gt_bbox: bool = False) -> Any:
        from srpose.data.bottom_up import BottomUpCocoDataset

        if det or gt_bbox:
            raise ValueError("bottom-up evaluation uses whole images, no person boxes: drop --det / --gt-bbox")
        protocol = protocol or str(self.cfg.data.get("dataset", "coco"))
        if protocol != "coco":
            raise ValueError(f"bottom-up evaluation supports the COCO protocol only, not {protocol!r}")
        return BottomUpCocoDataset(ann, images, self.cfg.data)

    def batches(self, dataset: Any, *, batch_size: int = 1, workers: int = 0,
                indices: Sequence[int] | None = None) -> Iterator[Batch]:
        from torch.utils.data import DataLoader, Subset

        subset = dataset if indices is None else Subset(dataset, list(indices))
        for item in DataLoader(subset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity):
            img = np.asarray(item["img"])
            yield dict(img=(img if img.dtype == np.uint8 else img.astype(np.float32, copy=False))[None],
                       center=np.asarray(item["center"])[None],
                       scale=np.asarray(item["scale"])[None], image_id=np.asarray([item["image_id"]]),
                       idx=np.asarray([item["idx"]]), joints=[item["joints"]], image_file=[item["image_file"]])

    def image_batches(self, dataset: Any, card: ArtifactCard, *, batch_size: int = 1, workers: int = 0,
                      indices: Sequence[int] | None = None) -> Iterator[Batch]:
        """:meth:`batches` with the resized uint8 pixels (``card.pixel_format``) an image-input graph takes."""
        import copy

        pixels = copy.copy(dataset)
        pixels.pixels = card.pixel_format or "bgr"
        yield from self.batches(pixels, batch_size=batch_size, workers=workers, indices=indices)

    def oracle_outputs(self, images: np.ndarray, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if meta.get("joints") is None:
            raise ValueError("the bottom-up oracle needs the image's ground-truth joints (meta['joints'])")
        joints = list(meta["joints"])
        if len(joints) != len(images):
            raise ValueError(f"oracle got {len(images)} images but {len(joints)} joint sets")
        h, w = images.shape[2:]
        return {RAW_OUTPUT: np.stack([self.codec.encode(j, (w, h)) for j in joints])}

    # ------------------------------------------------------------------------------------------ graph
    def io(self, decode: bool) -> IOSpec:
        names = DECODED_OUTPUTS if decode else (RAW_OUTPUT,)
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        for name in names:
            axes[name] = {0: "batch"} if name == "candidates" else {0: "batch", 2: "out_height", 3: "out_width"}
        return IOSpec(INPUT_NAME, names, axes)

    def graph(self, model: "nn.Module", *, flip: bool, decode: bool) -> "nn.Module":
        from ._graph import GraphWrapper

        self.export_flip(flip, decode)
        return GraphWrapper(model, flip_dynamic=flip, decode=self.codec.decode_module(flip=flip) if decode else None)

    def export_flip(self, flip: bool | None, decode: bool) -> bool:
        if flip and not decode:
            raise ValueError("the bottom-up flip test in the graph needs --decode (the NMS runs on the merged "
                             "heatmaps); without --decode the evaluator flips on the host")
        if flip is None:
            return bool(decode and self.cfg.test_cfg.get("flip_test", True))
        return bool(flip)

    def check_model(self, model: "nn.Module") -> None:
        import torch

        s, stride = self.cfg.image_size[0], self.codec.stride
        with torch.inference_mode():
            y = model(torch.zeros(1, 3, s, s))
        if isinstance(y, (list, tuple)):
            y = y[-1]
        want = (1, self.cfg.num_joints + self.codec.tag_channels, s // stride, s // stride)
        if tuple(y.shape) != want:
            raise ValueError(f"{self.cfg.name}: the model returns shape {tuple(y.shape)} for a {s}x{s} input, "
                             f"expected {want} (K heatmaps + L tag maps at 1/{stride})")

    def default_hw_profile(self) -> tuple[tuple[int, int], ...]:
        """min: the square input; opt: the common 4:3 landscape size (704 x 512 for 512); max: 3x per side."""
        s = int(self.cfg.image_size[0])
        return (s, s), (s, _round_up(s * 4 / 3)), (3 * s, 3 * s)

    def example_input(self, batch: tuple[int, int, int], hw_profile: Any) -> np.ndarray:
        h, w = hw_profile[1]
        return np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)

    def parity_inputs(self, card: ArtifactCard, seed: int = 0) -> dict[str, list[Any]]:
        rng = np.random.default_rng(seed)
        profile = card.hw_profile or self.default_hw_profile()
        if card.image_input:
            return {f"{w}x{h}": [{IMAGES: rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)}] for h, w in profile[:2]}
        return {f"{w}x{h}": [rng.standard_normal((1, 3, h, w)).astype(np.float32)] for h, w in profile[:2]}

    def image_graph_parts(self, *, flip: bool, network_flips: bool = False, network_decodes: bool = False,
                          pixel_format: str = "bgr") -> tuple["nn.Module", None]:
        """(uint8 N x H x W x 3 -> normalised N x 3 x H x W, None): the caller still does the test resize."""
        from ._image_graph import ImageNormalize

        return ImageNormalize(self.cfg.data["mean"], self.cfg.data["std"], pixel_format=pixel_format), None

    def compare_view(self, name: str, array: np.ndarray) -> np.ndarray:
        # candidates of equal value may come out of top-k in any order: compare the sorted values per joint
        return np.sort(array[..., 2], axis=-1) if name == "candidates" else array

    # ------------------------------------------------------------------------------------------ inference
    def infer(self, backend: Any, batch: Batch, *, flip: bool) -> tuple[dict[str, np.ndarray], float]:
        from srpose.data.bottom_up import mirror_joints

        images = batch["img"]
        meta = dict(joints=batch["joints"], image_id=batch["image_id"])
        pixels = images.dtype == np.uint8
        hw, w_axis = _image_hw(images), (2 if pixels else 3)
        out, secs = run_backend(backend, {IMAGES: images} if pixels else images, meta)
        if backend.decoded:
            for name, y in out.items():
                check_finite_output(y, f"{name!r}", f"backend {backend.name!r}", batch)
            return out, secs
        out = {RAW_OUTPUT: self._raw(out, backend.name, hw)}
        check_finite_output(out[RAW_OUTPUT], "heatmaps and tags", f"backend {backend.name!r}", batch)
        if flip:
            w = images.shape[w_axis]
            meta_f = dict(meta, joints=[mirror_joints(j, w, self.codec.flip_index) for j in batch["joints"]])
            mirrored = np.ascontiguousarray(np.flip(images, w_axis))
            out_f, secs_f = run_backend(backend, {IMAGES: mirrored} if pixels else mirrored, meta_f)
            out["outputs_flipped"] = self._raw(out_f, backend.name, hw)
            check_finite_output(out["outputs_flipped"], "heatmaps and tags of the mirrored image",
                                f"backend {backend.name!r}", batch)
            secs += secs_f
        return out, secs

    def _raw(self, out: Mapping[str, np.ndarray], name: str, hw: tuple[int, int]) -> np.ndarray:
        if len(out) != 1:
            raise ValueError(f"backend {name!r} returned outputs {sorted(out)}; a raw bottom-up graph has one")
        y = np.asarray(next(iter(out.values())), dtype=np.float32)
        k = self.cfg.num_joints
        if y.ndim != 4 or y.shape[0] != 1 or y.shape[1] not in (2 * k, k + 1):
            raise ValueError(f"backend {name!r} returned shape {y.shape}; a bottom-up backend returns 1 x (K + L) x "
                             f"h x w with K = {k} heatmaps and L = {k} (or 1) tag maps")
        h, w = hw
        if h % y.shape[2] or w % y.shape[3] or h // y.shape[2] != w // y.shape[3]:
            raise ValueError(f"backend {name!r} returned {y.shape[3]}x{y.shape[2]} maps for a {w}x{h} input: not an "
                             "integer downscale")
        return y

    def decode(self, outputs: Mapping[str, np.ndarray], batch: Batch, *, decoded: bool, post: bool) -> Poses:
        center, scale = batch["center"][0], batch["scale"][0]
        on = None if post else False
        if decoded:
            missing = [n for n in DECODED_OUTPUTS if n not in outputs]
            if missing:
                raise ValueError(f"a decoded bottom-up graph needs outputs {list(DECODED_OUTPUTS)}, got "
                                 f"{sorted(outputs)}")
            people = self.codec.decode_candidates(outputs["heatmaps"][0], outputs["tags"][0],
                                                  outputs["candidates"][0], center, scale, adjust=on, refine=on)
        else:
            h, w = _image_hw(batch["img"])
            people = self.codec.decode(outputs[RAW_OUTPUT], outputs.get("outputs_flipped"), center, scale,
                                       input_size=(w, h), adjust=on, refine=on)
        p = len(people)
        return Poses(keypoints=people.keypoints, scores=people.scores,
                     image_ids=np.repeat(np.asarray(batch["image_id"], np.int64), p),
                     centers=np.tile(np.asarray(center, np.float32), (p, 1)),
                     scales=np.tile(np.asarray(scale, np.float32), (p, 1)),
                     indices=np.repeat(np.asarray(batch["idx"], np.int64), p))

    def host_flip(self, backend: Any, flip: bool | None) -> bool:
        return super().host_flip(backend, flip) and not backend.decoded

    def post_process_name(self, post: bool) -> str | None:
        return self.codec.post_process_name() if post else None

    # ------------------------------------------------------------------------------------------ results
    def to_results(self, poses: Poses, dataset: Any) -> list[dict[str, Any]]:
        return [dict(image_id=int(poses.image_ids[i]), category_id=1,
                     keypoints=[float(v) for v in poses.keypoints[i].reshape(-1)], score=float(poses.scores[i]))
                for i in range(len(poses))]


def _identity(x: Any) -> Any:
    return x


def _image_hw(images: np.ndarray) -> tuple[int, int]:
    """(H, W) of a batch: uint8 N x H x W x 3 pixels (image-input graphs) or float N x 3 x H x W."""
    return tuple(images.shape[1:3] if images.dtype == np.uint8 else images.shape[2:])  # type: ignore[return-value]
