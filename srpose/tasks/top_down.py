"""The top-down task: person crops (GT or detected boxes) -> heatmaps -> keypoints -> rescoring and OKS-NMS.

Graph: one input ``input`` (N x 3 x H x W normalised crops, dynamic batch) and one output: ``heatmaps``
(N x K x h x w) or, decoded, ``keypoints`` (N x K x 3: x, y, score in heatmap pixels). The in-graph flip test
doubles the batch inside (mirror by a constant-index Gather) and merges with the codec's flip merge.

Image-to-keypoints graphs (``--image-input``, :mod:`srpose.export.image_graph`) take uint8 images, person boxes
and their image indices instead and return keypoints in image pixels and person scores: the crop, normalisation,
flip test, decoding and back-projection run inside (:meth:`TopDownTask.image_graph_parts`). The evaluator then
sends whole images (:meth:`TopDownTask.image_batches`), decoded once each.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from srpose.card import BOX_IMAGE, BOXES, IMAGES, KEYPOINTS, SCORES, ArtifactCard
from srpose.codecs import MSRAHeatmap, SRPoseHeatmap

from ._rescore import coco_results
from .base import Batch, IOSpec, Poses, PoseTask, check_finite_output, run_backend

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig

__all__ = ["TopDownTask", "INPUT_NAME"]

INPUT_NAME = "input"
#: detector type -> codec name when the config's data does not name a decoder
_CODEC_OF_TYPE = {"TopDown": "simple", "TopDownHigher": "srpose"}
_CODECS = {"simple": MSRAHeatmap, "srpose": SRPoseHeatmap}
PROTOCOLS = ("coco", "crowdpose", "mpii")


class TopDownTask(PoseTask):
    """Top-down pose estimation on COCO / CrowdPose / MPII person crops."""

    kind = "top-down"
    #: the evaluator and the server send 32 persons a batch: the profile is optimised for that
    default_batch = (1, 32, 64)
    precisions = ("fp32", "fp16", "int8")
    item = "person"

    @classmethod
    def make_codec(cls, cfg: "PoseConfig") -> Any:
        model_type = cfg.model.get("type")
        name = cfg.data.get("decoder") or _CODEC_OF_TYPE.get(str(model_type))
        if name not in _CODECS:
            raise ValueError(f"{cfg.name}: no top-down codec for decoder {name!r} (model type {model_type!r}); "
                             f"set data.decoder to one of {sorted(_CODECS)}")
        return _CODECS[name].from_config(cfg)

    # ------------------------------------------------------------------------------------------ data
    def dataset(self, ann: str, images: str, *, protocol: str | None = None, det: str | None = None,
                gt_bbox: bool = False) -> Any:
        from srpose.data.datasets import DATASET_CLASSES

        protocol = protocol or str(self.cfg.data.get("dataset", "coco"))
        if protocol not in DATASET_CLASSES:
            raise ValueError(f"unknown dataset {protocol!r}: expected one of {sorted(DATASET_CLASSES)}")
        cls = DATASET_CLASSES[protocol]
        if protocol == "mpii":
            if det:
                raise ValueError("MPII is evaluated on its annotated person boxes: drop --det")
            return cls(ann, images, self.cfg.data)
        if not det and not gt_bbox:
            raise ValueError(f"{protocol} evaluation needs person boxes: pass --det DET.json or --gt-bbox")
        return cls(ann, images, self.cfg.data, det_file=det, use_gt_bbox=bool(gt_bbox))

    def batches(self, dataset: Any, *, batch_size: int = 32, workers: int = 0,
                indices: Sequence[int] | None = None) -> Iterator[Batch]:
        from torch.utils.data import DataLoader, Subset

        from srpose.data.datasets import collate

        subset = dataset if indices is None else Subset(dataset, list(indices))
        for batch in DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                collate_fn=collate):
            batch["img"] = batch["img"].numpy()
            yield batch

    def oracle_outputs(self, images: np.ndarray, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if meta.get("joints") is None:
            raise ValueError("the oracle backend needs the batch's ground-truth joints: evaluate with GT boxes")
        joints = np.asarray(meta["joints"])
        if len(joints) != len(images):
            raise ValueError(f"oracle got {len(images)} images but {len(joints)} joint sets")
        w, h = self.codec.input_size
        if tuple(images.shape[-2:]) != (h, w):
            raise ValueError(f"oracle expects {w}x{h} crops, got {images.shape[-1]}x{images.shape[-2]}")
        hw, hh = self.codec.heatmap_size
        maps = [self.codec.encode(j)[0] for j in joints]
        return {"heatmaps": np.stack(maps) if maps else np.zeros((0, self.cfg.num_joints, hh, hw), np.float32)}

    # ------------------------------------------------------------------------------------------ graph
    def io(self, decode: bool) -> IOSpec:
        out = "keypoints" if decode else "heatmaps"
        return IOSpec(INPUT_NAME, (out,), {INPUT_NAME: {0: "batch"}, out: {0: "batch"}})

    def graph(self, model: "nn.Module", *, flip: bool, decode: bool) -> "nn.Module":
        from ._graph import GraphWrapper

        return GraphWrapper(model, flip_width=self.cfg.image_size[0] if flip else None,
                            flip_merge=self.codec.flip_merge_module() if flip else None,
                            decode=self.codec.decode_module(post=self.codec.refines()) if decode else None)

    def export_flip(self, flip: bool | None, decode: bool) -> bool:
        return bool(flip)

    def image_graph_parts(self, *, flip: bool, network_flips: bool = False, network_decodes: bool = False,
                          pixel_format: str = "bgr") -> tuple["nn.Module", "nn.Module"]:
        """(pre, post) of the image-to-keypoints graph: images + boxes -> crops (mirrored ones after them when the
        flip test is asked and the network does not flip), and network outputs + boxes -> keypoints in image
        pixels + person scores (flip merge and decoding where the network does not do them)."""
        from ._image_graph import ImageCrops, ImagePeople

        cfg, codec = self.cfg, self.codec
        around = bool(flip) and not network_flips
        pre = ImageCrops(cfg.image_size, cfg.data["mean"], cfg.data["std"], pixel_format=pixel_format, flip=around)
        post = ImagePeople(codec.heatmap_size, cfg.image_size,
                           decode=None if network_decodes else codec.decode_module(post=codec.refines()),
                           flip_merge=codec.flip_merge_module() if around else None,
                           vis_thr=float(cfg.data.get("vis_thr", 0.2)))
        return pre, post

    def check_model(self, model: "nn.Module") -> None:
        cfg = self.cfg
        w, h = cfg.image_size
        try:
            y = _heatmaps_of(model, w, h)
        except RuntimeError as e:  # the backbone's branches do not line up at this size
            raise ValueError(f"{cfg.name} cannot run at the input size {w}x{h} ({str(e).splitlines()[0]}); "
                             f"{_sizes_that_work(model, cfg)}") from None
        if y.ndim != 4 or y.shape[1] != cfg.num_joints:
            raise ValueError(f"{cfg.name}: the model returns shape {tuple(y.shape)}, expected 1 x {cfg.num_joints} "
                             "x H x W")
        if (y.shape[3], y.shape[2]) != tuple(cfg.heatmap_size):
            raise ValueError(f"{cfg.name}: the model returns {y.shape[3]}x{y.shape[2]} heatmaps at the input size "
                             f"{w}x{h} but the config says heatmap_size {cfg.heatmap_size[0]}x{cfg.heatmap_size[1]}; "
                             f"{_sizes_that_work(model, cfg)}")

    def default_hw_profile(self) -> None:
        return None

    def example_input(self, batch: tuple[int, int, int], hw_profile: Any) -> np.ndarray:
        w, h = self.cfg.image_size
        return np.random.default_rng(0).standard_normal((max(batch[0], 2), 3, h, w)).astype(np.float32)

    def parity_inputs(self, card: ArtifactCard, seed: int = 0) -> dict[str, list[Any]]:
        lo, _, hi = card.batch
        rng = np.random.default_rng(seed)
        if card.image_input:
            return {"random": [_random_image_feed(card, rng)]}
        w, h = card.input_size
        n = min(hi, max(lo, 4))
        return {"random": [rng.standard_normal((n, 3, h, w)).astype(np.float32)]}

    def image_batches(self, dataset: Any, card: ArtifactCard, *, batch_size: int = 32, workers: int = 0,
                      indices: Sequence[int] | None = None) -> Iterator[Batch]:
        """Whole-image batches of ``dataset`` for the image-to-keypoints graph of ``card``: about ``batch_size``
        persons each (within the graph's person and image profile), images decoded once by ``workers`` loader
        processes (see :mod:`srpose.tasks._image_batches`)."""
        from ._image_batches import ImageBatches, iterate, plan_batches

        plans = plan_batches(dataset, indices, persons=batch_size, max_persons=card.batch[2],
                             max_images=(card.image_batch or (1, 1, 1))[2])
        hw_max = tuple(card.hw_profile[2]) if card.hw_profile else None
        yield from iterate(ImageBatches(dataset, plans, pixel_format=card.pixel_format or "bgr", hw_max=hw_max),
                           workers)

    def image_feed(self, backend: Any, batch: Batch) -> dict[str, np.ndarray]:
        """The graph inputs of an image batch, written into ``backend.input_arrays`` (pinned memory for TensorRT);
        unpadded images are padded up to the graph's image profile at most."""
        from ._image_batches import feed_shapes, fill_feed

        card = backend.card
        hw_max = tuple(card.hw_profile[2]) if card is not None and card.hw_profile else None
        return fill_feed(batch, backend.input_arrays(feed_shapes(batch, hw_max)))

    # ------------------------------------------------------------------------------------------ inference
    def infer(self, backend: Any, batch: Batch, *, flip: bool) -> tuple[dict[str, np.ndarray], float]:
        from srpose.data.transforms import fliplr_joints

        images = batch["img"]
        meta = {k: v for k, v in batch.items() if k != "img"}
        out, secs = run_backend(backend, images, meta)
        if not flip:
            return out, secs
        if backend.decoded:
            raise ValueError(f"backend {backend.name!r} outputs decoded keypoints, so the evaluator cannot flip-test "
                             "it: export the model with the flip in the graph, or evaluate without flip")
        meta_f = dict(meta)
        if meta.get("joints") is not None:  # meta-driven backends (the oracle) see a consistent mirrored batch
            width = images.shape[-1]
            meta_f["joints"] = np.stack([fliplr_joints(j, width, self.codec.flip_pairs)
                                         for j in np.asarray(meta["joints"])])
        out_f, secs_f = run_backend(backend, np.ascontiguousarray(images[..., ::-1]), meta_f)
        name, heat = _single(out, backend)
        return {name: self.codec.flip_merge(heat, _single(out_f, backend)[1])}, secs + secs_f

    def decode(self, outputs: Mapping[str, np.ndarray], batch: Batch, *, decoded: bool, post: bool) -> Poses:
        if IMAGES in batch:  # an image-to-keypoints graph: people in image pixels already
            return self._image_poses(outputs, batch)
        name, out = _single(outputs, None)
        out = np.asarray(out, dtype=np.float32)
        check_finite_output(out, "keypoints" if decoded else "heatmaps", "the model", batch)
        b, k = len(batch["img"]), self.cfg.num_joints
        center, scale = batch["center"], batch["scale"]
        if decoded:
            if out.shape != (b, k, 3):
                raise ValueError(f"output {name!r} has shape {out.shape}, expected {b} x {k} x 3 keypoints "
                                 "(x, y, score)")
            xy, score = self.codec.to_image(out[..., :2], center, scale), out[..., 2:3]
        else:
            hw, hh = self.codec.heatmap_size
            if out.ndim != 4 or out.shape[:2] != (b, k):
                raise ValueError(f"output {name!r} has shape {out.shape}, expected {b} x {k} x H x W heatmaps")
            if (out.shape[3], out.shape[2]) != (hw, hh):
                raise ValueError(f"output {name!r} holds {out.shape[3]}x{out.shape[2]} heatmaps but the config says "
                                 f"heatmap_size {hw}x{hh}")
            xy, score = self.codec.decode_to_image(out, center, scale, post=post)
        kpts = np.concatenate([np.asarray(xy, np.float32), np.asarray(score, np.float32).reshape(b, k, 1)], -1)
        return Poses(keypoints=kpts, scores=np.asarray(batch["bbox_score"], np.float64),
                     image_ids=np.asarray(batch["image_id"], np.int64), centers=np.asarray(center, np.float32),
                     scales=np.asarray(scale, np.float32), indices=np.asarray(batch["idx"], np.int64))

    def _image_poses(self, outputs: Mapping[str, np.ndarray], batch: Batch) -> Poses:
        kpts = np.asarray(outputs.get(KEYPOINTS), np.float32) if KEYPOINTS in outputs else None
        p, k = len(batch["idx"]), self.cfg.num_joints
        if kpts is None or kpts.shape != (p, k, 3):
            raise ValueError(f"the image graph returned {({n: np.shape(v) for n, v in outputs.items()})}, expected "
                             f"{KEYPOINTS!r} of shape {p} x {k} x 3")
        check_finite_output(kpts, "keypoints", "the image graph", batch)
        return Poses(keypoints=kpts, scores=np.asarray(batch["bbox_score"], np.float64),
                     image_ids=np.asarray(batch["image_id"], np.int64), centers=np.asarray(batch["center"], np.float32),
                     scales=np.asarray(batch["scale"], np.float32), indices=np.asarray(batch["idx"], np.int64))

    def keypoints_in_input(self, outputs: Mapping[str, np.ndarray], *, decoded: bool) -> np.ndarray:
        if KEYPOINTS in outputs and SCORES in outputs:  # image graphs: image pixels are their input's
            return np.asarray(outputs[KEYPOINTS])[..., :2]
        _, out = _single(outputs, None)
        iw, ih = self.cfg.image_size
        hw, hh = self.codec.heatmap_size
        if decoded:
            return out[..., :2] * np.array([iw / hw, ih / hh], dtype=np.float32)
        n = len(out)
        center = np.tile(np.array([[iw / 2, ih / 2]], np.float32), (n, 1))
        scale = np.tile(np.array([[iw / 200, ih / 200]], np.float32), (n, 1))
        return self.codec.decode_to_image(out, center, scale)[0]

    def post_process_name(self, post: bool) -> str | None:
        return self.codec.post_process if self.codec.refines(post) else None

    # ------------------------------------------------------------------------------------------ results
    def to_results(self, poses: Poses, dataset: Any) -> list[dict[str, Any]]:
        n = len(dataset)
        seen = np.unique(poses.indices)
        if len(poses) != n or len(seen) != n:
            raise RuntimeError(f"{n - len(seen)} of {n} persons got no prediction; not reporting a partial metric")
        order = np.argsort(poses.indices, kind="stable")
        kp, cen, sca = poses.keypoints[order], poses.centers[order], poses.scales[order]
        ids = poses.image_ids[order]
        if dataset.dataset_name == "mpii":
            return [dict(image=dataset.records[int(i)]["image_file"], image_id=int(ids[j]),
                         keypoints=[float(v) for v in kp[j].reshape(-1)], score=float(kp[j, :, 2].mean()),
                         center=[float(v) for v in cen[j]], scale=[float(v) for v in sca[j]])
                    for j, i in enumerate(poses.indices[order])]
        cfg = dataset.data_cfg
        return coco_results(kp, cen, sca, poses.scores[order], ids, poses.indices[order], sigmas=dataset.sigmas,
                            vis_thr=float(cfg.get("vis_thr", 0.2)), oks_thr=float(cfg.get("oks_thr", 0.9)),
                            use_nms=bool(cfg.get("use_nms", True)))


def _random_image_feed(card: ArtifactCard, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two smooth random images of different sizes (zero-padded to one) and boxes on both, some reaching past the
    image borders: what an image graph is compared with PyTorch on."""
    import cv2

    lo, opt, hi = card.hw_profile  # type: ignore[misc]
    h, w = min(max(lo[0], 96), hi[0]), min(max(lo[1], 128), hi[1])
    sizes = [(h, w), (max(lo[0], h * 3 // 4), max(lo[1], w * 3 // 4))]
    images = np.zeros((2, h, w, 3), np.uint8)
    for b, (ih, iw) in enumerate(sizes):
        noise = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        images[b, :ih, :iw] = cv2.GaussianBlur(noise, (0, 0), 3)
    n = min(card.batch[2], 6)
    boxes = np.zeros((n, 5), np.float32)
    box_image = (np.arange(n) % 2).astype(np.int32)
    for i in range(n):
        ih, iw = sizes[box_image[i]]
        bw, bh = rng.uniform(0.2, 0.8) * iw, rng.uniform(0.3, 0.9) * ih
        boxes[i] = [rng.uniform(-0.2 * bw, iw - 0.8 * bw), rng.uniform(-0.2 * bh, ih - 0.8 * bh), bw, bh,
                    rng.uniform(0.3, 1.0)]
    return {IMAGES: images, BOXES: boxes, BOX_IMAGE: box_image}


def _single(outputs: Mapping[str, np.ndarray], backend: Any) -> tuple[str, np.ndarray]:
    """The one output of a top-down graph (any name: files without a card name theirs freely)."""
    if len(outputs) != 1:
        who = f"backend {backend.name!r}" if backend is not None else "the graph"
        raise ValueError(f"{who} returned outputs {sorted(outputs)}; a top-down graph has one (heatmaps or "
                         "keypoints)")
    return next(iter(outputs.items()))


def _heatmaps_of(model: "nn.Module", w: int, h: int) -> Any:
    import torch

    with torch.inference_mode():
        y = model(torch.zeros(1, 3, h, w))
    return y[-1] if isinstance(y, (list, tuple)) else y


def _sizes_that_work(model: "nn.Module", cfg: Any) -> str:
    """Which input sizes the model runs at with heatmaps of the config's stride: the smallest multiple m (4..128)
    for which the sizes rounded to m work, with the two nearest such sizes (a few forward passes, on failure only)."""
    w, h = cfg.image_size
    sw, sh = w / cfg.heatmap_size[0], h / cfg.heatmap_size[1]  # the heatmap stride
    for m in (4, 8, 16, 32, 64, 128):
        sizes = [(max(m, (w // m) * m), max(m, (h // m) * m)), (-(-w // m) * m, -(-h // m) * m)]
        try:
            if all((lambda y: (y.shape[3] * sw, y.shape[2] * sh) == (a, b))(_heatmaps_of(model, a, b))
                   for a, b in sizes):
                near = " or ".join(dict.fromkeys(f"{a}x{b}" for a, b in sizes))
                return f"its input width and height must be multiples of {m}, e.g. {near}"
        except RuntimeError:
            continue
    return "try a size whose width and height are multiples of 32"
