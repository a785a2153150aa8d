"""The pose task: what differs between top-down and bottom-up, owned in one place for export, evaluation, parity,
bench, serving, the pipeline and the demo.

A task is built from a :class:`~srpose.config.PoseConfig` (:func:`srpose.tasks.task_for`) and owns its codec
(the config's model type decides which). It knows

- the data: the dataset of a protocol and its batches (person crops or whole images) and the oracle's outputs;
- the graph: the export wrapper (model + optional in-graph flip test and decoder), input/output names and dynamic
  axes, the shape profile and its card;
- inference: running a backend on a batch with the flip test on the host when the graph does not fold it in, and
  decoding the outputs to :class:`Poses` in image pixels;
- the results: COCO-format keypoint results of the protocol (top-down rescoring and OKS-NMS included).

The metric itself (pycocotools, PCKh) is the evaluation layer's (``srpose.eval``).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from srpose.card import ArtifactCard

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from srpose.config import PoseConfig

__all__ = ["PoseTask", "IOSpec", "Poses", "Batch", "run_backend"]

#: one batch of a task's loader: ``img`` N x 3 x H x W float32 plus per-item metadata arrays
Batch = dict


@dataclass(frozen=True)
class IOSpec:
    """Names and dynamic axes of an exported graph."""

    input_name: str
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass
class Poses:
    """People decoded from some images, in image pixels: ``keypoints`` M x K x 3 (x, y, score), ``scores`` M (the
    person's box score, top-down, or its grouping score, bottom-up), their ``image_ids``, the ``centers`` /
    ``scales`` (M x 2, 200-px units) they were decoded with and the dataset ``indices`` of the items they came from.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    image_ids: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def concat(cls, parts: Sequence["Poses"], num_joints: int) -> "Poses":
        """All ``parts`` in order (an empty set of ``num_joints``-joint poses when there is none)."""
        if not parts:
            return cls(np.zeros((0, num_joints, 3), np.float32), np.zeros(0), np.zeros(0, np.int64),
                       np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("keypoints", "scores", "image_ids", "centers", "scales", "indices")))

    def to_rows(self) -> list[np.ndarray]:
        """One float64 row per person (keypoints, center, scale, score, image id, index): a rank's share of a
        distributed evaluation, gathered across ranks and read back by :meth:`from_rows`."""
        return [np.concatenate([self.keypoints[i].reshape(-1), self.centers[i], self.scales[i],
                                [self.scores[i], self.image_ids[i], self.indices[i]]]).astype(np.float64)
                for i in range(len(self))]

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], num_joints: int) -> "Poses":
        if not len(rows):
            return cls.concat([], num_joints)
        a = np.stack(rows)
        k3 = 3 * num_joints
        return cls(a[:, :k3].reshape(-1, num_joints, 3).astype(np.float32), a[:, k3 + 4], a[:, k3 + 5].astype(np.int64),
                   a[:, k3:k3 + 2].astype(np.float32), a[:, k3 + 2:k3 + 4].astype(np.float32),
                   a[:, k3 + 6].astype(np.int64))


def run_backend(backend: Any, images: np.ndarray, meta: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float]:
    """``backend.infer`` on a batch (with the batch metadata for backends that need it) and its wall seconds."""
    t0 = time.perf_counter()
    out = backend.infer(images, meta) if backend.needs_meta else backend.infer(images)
    if not isinstance(out, Mapping):
        raise TypeError(f"backend {backend.name!r} returned {type(out).__name__}; backends return a dict of named "
                        "outputs")
    return dict(out), time.perf_counter() - t0


def check_finite_output(array: Any, what: str, source: str, batch: Mapping[str, Any]) -> None:
    """ValueError naming the first item of a batch (axis 0 of ``array``: person, or image) whose ``what`` (heatmaps,
    keypoints, ...) holds a NaN or infinity, with its image file."""
    a = np.asarray(array)
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.ndim else ~np.isfinite(a).reshape(1)
    if not bad.any():
        return
    j = int(np.flatnonzero(bad)[0])
    idx, files = batch.get("idx"), batch.get("image_file")
    item = f"item {int(np.asarray(idx).reshape(-1)[j])}" if idx is not None and np.size(idx) > j else f"item {j}"
    if files is not None:
        k = int(batch["box_image"][j]) if "box_image" in batch else j if len(files) > j else 0
        item += f" (image {files[k]})"
    raise ValueError(f"{source} produced non-finite {what} for {int(bad.sum())} of {len(bad)} items "
                     f"of a batch, the first for {item}: check the weights and the graph (an FP16 overflow?)")


class PoseTask(ABC):
    """Base of the top-down and bottom-up tasks (see the module docstring)."""

    #: ``top-down`` or ``bottom-up`` (the card's ``task``)
    kind: ClassVar[str]
    #: (min, opt, max) batch of the TensorRT profile when the user gives none
    default_batch: ClassVar[tuple[int, int, int]]
    #: what one item of the dataset is, for throughput figures: ``person`` (crop) or ``image``
    item: ClassVar[str]
    #: graph precisions the export supports for this task
    precisions: ClassVar[tuple[str, ...]]

    def __init__(self, cfg: "PoseConfig") -> None:
        self.cfg = cfg
        self.codec = self.make_codec(cfg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg.name!r}, codec={self.codec.name!r})"

    @classmethod
    @abstractmethod
    def make_codec(cls, cfg: "PoseConfig") -> Any:
        """The codec of ``cfg`` (the task's decision)."""

    # ------------------------------------------------------------------------------------------ data
    @abstractmethod
    def dataset(self, ann: str, images: str, *, protocol: str | None = None, det: str | None = None,
                gt_bbox: bool = False) -> Any:
        """The evaluation dataset of ``protocol`` (default: the config's) on ``ann`` / ``images``; ValueError for
        options the protocol does not take (e.g. person boxes for bottom-up)."""

    def gt_dataset(self, ann: str, images: str) -> Any:
        """The dataset scored without detections: ground-truth person boxes (top-down) or whole images."""
        return self.dataset(ann, images, gt_bbox=self.kind == "top-down")

    def input_shape(self) -> tuple[int, int, int]:
        """(3, H, W) of the config's input (bottom-up: the square base size), e.g. for benchmarks."""
        w, h = self.cfg.image_size
        return 3, h, w

    @abstractmethod
    def batches(self, dataset: Any, *, batch_size: int = 32, workers: int = 0,
                indices: Sequence[int] | None = None) -> Iterator[Batch]:
        """The dataset's items (all, or ``indices``) in batches (bottom-up: one image each)."""

    @abstractmethod
    def oracle_outputs(self, images: np.ndarray, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """What a perfect model returns for a batch: the codec's encoding of the ground-truth joints."""

    # ------------------------------------------------------------------------------------------ graph
    @abstractmethod
    def io(self, decode: bool) -> IOSpec:
        """Input/output names and dynamic axes of the raw (``decode=False``) or decoded graph."""

    @abstractmethod
    def graph(self, model: "nn.Module", *, flip: bool, decode: bool) -> "nn.Module":
        """What the exported graph computes: ``model`` plus the optional in-graph flip test and decoder; returns a
        tuple of tensors in :meth:`io` order (or one tensor)."""

    @abstractmethod
    def export_flip(self, flip: bool | None, decode: bool) -> bool:
        """The in-graph flip of an export asked with ``flip`` (None: the task's default); ValueError when it
        cannot be combined with ``decode``."""

    @abstractmethod
    def check_model(self, model: "nn.Module") -> None:
        """ValueError unless ``model``'s outputs fit the config (channels, heatmap size)."""

    @abstractmethod
    def default_hw_profile(self) -> tuple[tuple[int, int], ...] | None:
        """((H, W) min, opt, max) of dynamic-size graphs; None for fixed-size inputs."""

    @abstractmethod
    def example_input(self, batch: tuple[int, int, int], hw_profile: Any) -> np.ndarray:
        """The input traced by the exporter."""

    @abstractmethod
    def parity_inputs(self, card: ArtifactCard, seed: int = 0) -> dict[str, list[np.ndarray]]:
        """Named groups of random inputs on which an export is compared with PyTorch."""

    def compare_view(self, name: str, array: np.ndarray) -> np.ndarray:
        """The view of output ``name`` that must agree across runtimes (e.g. values without their order)."""
        return array

    def make_card(self, *, decode: bool, flip: bool, batch: tuple[int, int, int], hw_profile: Any = None,
                  opset: int | None = None, **fields: Any) -> ArtifactCard:
        """The card of an export of this task's config with these settings (``fields``: provenance)."""
        cfg = self.cfg
        return ArtifactCard(
            model_name=cfg.name, task=self.kind, input_size=cfg.image_size, heatmap_size=cfg.heatmap_size,
            num_joints=cfg.num_joints, mean=list(cfg.data["mean"]), std=list(cfg.data["std"]),
            flip_pairs=[list(p) for p in cfg.flip_pairs], codec=self.codec.to_dict(),
            output_names=list(self.io(decode).output_names), input_name=self.io(decode).input_name, decode=decode,
            flip=flip, batch=batch, hw_profile=hw_profile, opset=opset, config=cfg.to_dict(),
            config_source=cfg.source, **fields)

    @abstractmethod
    def image_graph_parts(self, *, flip: bool, network_flips: bool = False, network_decodes: bool = False,
                          pixel_format: str = "bgr") -> tuple["nn.Module", "nn.Module | None"]:
        """(pre, post) torch modules that turn a crop / image graph into an image-to-keypoints graph
        (:mod:`srpose.export.image_graph`): uint8 images in, normalised network inputs out; network outputs in,
        the graph's outputs out (None: the network's outputs are the graph's)."""

    def reference_for(self, model: "nn.Module", card: ArtifactCard) -> Callable[[Any], dict]:
        """PyTorch eager of what the graph of ``card`` computes (crop or image input), for parity checks: its
        input (an array, or ``{input name: array}`` for image graphs) -> ``{output name: array}``."""
        if not card.image_input:
            return self.reference(model, flip=card.flip, decode=card.decode)
        import torch

        module = self.image_module(model, card)

        def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in card.input_names]
            with torch.no_grad():
                out = module(*args)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return {n: o.float().numpy() for n, o in zip(card.output_names, outs)}

        return run

    def image_module(self, model: "nn.Module", card: ArtifactCard) -> "nn.Module":
        """``model`` as the image-to-keypoints graph of ``card`` computes it, in PyTorch (eval mode): the graph's
        inputs in (tensors, in ``card.input_names`` order), its outputs out."""
        from ._image_graph import ImageToKeypoints

        pre, post = self.image_graph_parts(flip=card.flip, pixel_format=card.pixel_format or "bgr")
        net = self.graph(model, flip=False, decode=False) if post is not None else \
            self.graph(model, flip=card.flip, decode=card.decode)
        return ImageToKeypoints(pre, net, post).eval()

    def reference(self, model: "nn.Module", *, flip: bool, decode: bool) -> Callable[[np.ndarray], dict]:
        """PyTorch eager of :meth:`graph`: images -> ``{output name: array}``, for parity checks."""
        import torch

        wrapper = self.graph(model, flip=flip, decode=decode).eval()
        names = self.io(decode).output_names

        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                out = wrapper(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return {n: o.float().numpy() for n, o in zip(names, outs)}

        return run

    # ------------------------------------------------------------------------------------------ inference
    @abstractmethod
    def infer(self, backend: Any, batch: Batch, *, flip: bool) -> tuple[dict[str, np.ndarray], float]:
        """Backend outputs of a batch, the mirrored pass included when ``flip`` (host flip test); and the seconds
        spent in the backend."""

    @abstractmethod
    def decode(self, outputs: Mapping[str, np.ndarray], batch: Batch, *, decoded: bool, post: bool) -> Poses:
        """:class:`Poses` of a batch from :meth:`infer`'s outputs; ``decoded``: the graph ends in the decoder;
        ``post``: the codec's refinement (top-down sub-pixel shift / DARK, bottom-up adjust and refine)."""

    def keypoints_in_input(self, outputs: Mapping[str, np.ndarray], *, decoded: bool) -> np.ndarray | None:
        """N x K x 2 keypoints in input pixels of one batch's outputs (keypoint parity), or None where the task
        has no per-item keypoints to compare (bottom-up)."""
        return None

    def host_flip(self, backend: Any, flip: bool | None) -> bool:
        """Whether the evaluator runs the mirrored pass itself: the flip test is on (``flip``, None: the config's
        ``flip_test``) and the backend's graph does not fold it in. ValueError for ``flip=False`` (``--no-flip``)
        with a backend that flips anyway (in its graph, or a server's ensemble): its results would be the flip
        test's."""
        if flip is False and backend.flip_in_graph:
            path = getattr(backend, "path", None) or getattr(backend, "engine_path", None)
            name = Path(path).name if path else getattr(backend, "model", None) or backend.name
            if getattr(backend.card, "flip", False):
                how = (f"{name} has the flip test in its graph: export the graph without it (srpose export without "
                       "--flip; --image-input graphs: --no-flip) to evaluate without the flip test")
            else:
                how = (f"the served model {name} runs the flip test (its repository was written with it): write a "
                       "repository without it (srpose triton MODEL --out REPO --no-flip) and serve that")
            raise ValueError(f"--no-flip cannot be honoured: {how}; or drop --no-flip")
        want = bool(self.cfg.test_cfg.get("flip_test", True)) if flip is None else bool(flip)
        return want and not backend.flip_in_graph

    # ------------------------------------------------------------------------------------------ results
    @abstractmethod
    def to_results(self, poses: Poses, dataset: Any) -> list[dict[str, Any]]:
        """Keypoint results of the protocol (COCO results format, MPII: per person in dataset order)."""

    def post_process_name(self, post: bool) -> str | None:
        """What the decoder's refinement is called in reports, None when off."""
        return None
