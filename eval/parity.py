"""Parity: exported models (ONNX, TensorRT engines, served models) against the PyTorch reference on the same data,
for any task: ``ParityOptions -> run_parity(...) -> ParityReport``.

For each model: output error against the PyTorch graph it was exported from, on the batches the evaluator feeds it
(max abs, relative L2, cosine; the first ``error_items`` items, all by default), mean keypoint distance in input
pixels (top-down; image pixels for image-to-keypoints graphs, whose reference is the same graph in PyTorch), AP/AR
(PCKh for MPII) and their deltas to PyTorch over every item, the distance of its final keypoints to PyTorch's
with the host pipeline (median and p99, image pixels; top-down), and backend throughput.
The report renders as Markdown and a bar chart; ``max_ap_drop`` turns an accuracy loss into a failure.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from srpose.engines.base import Backend, batch_items
from srpose.export.compare import ErrorAccumulator
from srpose.tasks import PoseTask

from .evaluator import EvalOptions, evaluate

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

__all__ = ["ParityOptions", "ParityReport", "ParityProbe", "run_parity", "config_for_models", "config_of_models"]


@dataclass
class ParityOptions:
    """``flip``: the reference's flip test (None: the config's); ``error_items``: compare outputs on the first N
    items only (None: all; AP always covers every item); ``device`` / ``threads`` for the model backends;
    ``reference_results``: also write the PyTorch keypoints there; ``checkpoint_sha256``: warn about models
    exported from another checkpoint; ``max_ap_drop``: the gate of :meth:`ParityReport.failed`."""

    flip: bool | None = None
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    device: str = "cpu"
    progress: bool = False
    error_items: int | None = None
    reference_results: str | Path | None = None
    checkpoint_sha256: str | None = None
    max_ap_drop: float | None = None

    def check(self) -> None:
        if self.error_items is not None and self.error_items < 1:
            raise ValueError(f"error_items must be >= 1 (or None for all), got {self.error_items}")
        if self.max_ap_drop is not None and self.max_ap_drop < 0:
            raise ValueError(f"max_ap_drop must be >= 0, got {self.max_ap_drop}")


@dataclass
class ParityReport:
    """One row per compared model plus the PyTorch reference; ``unit`` is what ``items`` counts (``person`` crops
    top-down, ``image`` bottom-up); ``people`` the people scored."""

    model: str
    task: str
    dataset: str
    unit: str
    items: int
    images: int
    flip: bool
    primary_metric: str
    input_size: list[int]
    reference: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_ap_drop: float | None = None

    @property
    def failed(self) -> list[str]:
        """Names of the models whose primary metric is more than ``max_ap_drop`` below the reference."""
        if self.max_ap_drop is None:
            return []
        key = self.primary_metric
        return [m["name"] for m in self.models if -m["delta"][key] > self.max_ap_drop + 1e-12]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


class ParityProbe(Backend):
    """Wraps a backend: returns its outputs unchanged while comparing them with the PyTorch ``reference`` on the
    same batch (the first ``max_items`` items; all when ``None``) and timing the wrapped backend alone.

    ``passes``: backend calls per item (2 when the evaluator runs the flip test on the host: the item and its
    mirror); ``items`` and ``compared`` count dataset items, so throughput and the comparison bound mean the same
    with and without the host flip (both passes of a compared item are compared)."""

    def __init__(self, backend: Backend, task: PoseTask, reference: Callable[[np.ndarray], dict], *,
                 max_items: int | None = None, passes: int = 1) -> None:
        super().__init__()
        self.backend, self.task, self.reference = backend, task, reference
        self.name, self.card, self.needs_meta = backend.name, backend.card, False
        self.output_names = list(backend.output_names)
        self.errors = ErrorAccumulator()
        self.kpt = ErrorAccumulator(keypoints=True)
        self.backend_ms, self._items, self._compared = 0.0, 0, 0  # backend inputs (passes x items)
        self.max_items = max_items
        self.passes = int(passes)

    @property
    def items(self) -> float:
        """Dataset items run so far."""
        return self._items / self.passes

    @property
    def compared(self) -> int:
        """Dataset items whose outputs were compared with the reference."""
        return -(-self._compared // self.passes)

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        out = self.backend.infer(images)
        self.last_timing_ms = self.backend.last_timing_ms
        self.backend_ms += float(self.backend.last_timing_ms or 0.0)
        items = batch_items(images)
        self._items += items
        if self.max_items is None or self._compared < self.max_items * self.passes:
            # the reference reruns PyTorch on the batch: bounded, as it costs more than most backends
            ref = self.reference(images)
            for name, r in ref.items():
                self.errors.add(self.task.compare_view(name, r), self.task.compare_view(name, out[name]))
            kp_ref = self.task.keypoints_in_input(ref, decoded=self.decoded)
            if kp_ref is not None:
                self.kpt.add(kp_ref, self.task.keypoints_in_input(out, decoded=self.decoded))
            self._compared += items
        return out

    def input_arrays(self, shapes: Any) -> dict[str, np.ndarray]:
        return self.backend.input_arrays(shapes)

    def close(self) -> None:
        self.backend.close()


def _final_keypoint_distance(res: Any, ref: Any) -> dict[str, float | None]:
    """Median and p99 distance (image pixels) of a model's final keypoints to PyTorch's, item by item."""
    if res.keypoints is None or ref.keypoints is None or res.task != "top-down" or \
            res.keypoints.shape != ref.keypoints.shape or not len(res.keypoints):
        return dict(image_kpt_px_median=None, image_kpt_px_p99=None)
    d = np.linalg.norm(res.keypoints[..., :2] - ref.keypoints[..., :2], axis=-1)
    return dict(image_kpt_px_median=float(np.median(d)), image_kpt_px_p99=float(np.percentile(d, 99)))


def _primary(metrics: Mapping[str, float]) -> str:
    return "AP" if "AP" in metrics else ("Mean" if "Mean" in metrics else next(iter(metrics)))


def run_parity(task: PoseTask, model: "nn.Module", models: Sequence[str | Path], dataset: Any,
               options: ParityOptions | None = None) -> ParityReport:
    """Evaluate the PyTorch ``model`` and each of ``models`` (files or server URLs) on ``dataset``."""
    from .backends import TorchBackend

    opts = options or ParityOptions()
    opts.check()
    ref_flip = bool(task.cfg.test_cfg.get("flip_test", True) if opts.flip is None else opts.flip)
    ev = EvalOptions(flip=ref_flip, batch_size=opts.batch_size, workers=opts.workers, progress=opts.progress,
                     results_file=opts.reference_results)
    ref = evaluate(task, TorchBackend(model), dataset, ev)
    report = ParityReport(
        model=task.cfg.name, task=task.kind, dataset=ref.dataset, unit=task.item, items=len(dataset),
        images=ref.num_images, flip=ref_flip, primary_metric=_primary(ref.metrics),
        input_size=list(task.cfg.image_size), max_ap_drop=opts.max_ap_drop,
        reference=dict(name="pytorch", precision="fp32", metrics=ref.metrics, people=ref.num_persons,
                       items_per_s=1e3 / ref.backend_ms_per_person if ref.backend_ms_per_person else None,
                       backend_ms_per_item=ref.backend_ms_per_person))
    from srpose.engines import SERVER_SCHEMES

    for path in models:
        if str(path).startswith(SERVER_SCHEMES):
            report.models.append(_compare_served(task, str(path), dataset, ref, ref_flip, opts, report.warnings))
            continue
        report.models.append(_compare_one(task, model, path, dataset, ref, ref_flip, opts, report.warnings))
    return report


def _compare_served(task: PoseTask, url: str, dataset: Any, ref: Any, ref_flip: bool, opts: ParityOptions,
                    warnings: list[str]) -> dict[str, Any]:
    """A served model (Triton URL): AP/AR and their deltas, and the keypoint distance to PyTorch's in image pixels
    (output errors do not apply: the server returns people, not maps)."""
    from srpose.engines import open_backend

    backend = open_backend(url)
    notes = []
    if backend.flip_in_graph != ref_flip:
        notes.append(f"{url} runs the flip test {'on' if backend.flip_in_graph else 'off'}; the reference "
                     f"{'on' if ref_flip else 'off'}")
    try:
        res = evaluate(task, backend, dataset, EvalOptions(flip=None if backend.flip_in_graph else False,
                                                          progress=opts.progress))
    finally:
        backend.close()
    kpt = None
    if task.kind == "top-down" and res.keypoints is not None and ref.keypoints is not None:
        kpt = float(np.linalg.norm(res.keypoints[..., :2] - ref.keypoints[..., :2], axis=-1).mean())
        notes.append(f"{url}: mean keypoint distance to PyTorch {kpt:.3f} image px (output errors do not apply to "
                     "a served model)")
    warnings.extend(notes)
    return dict(file=url, name=url, precision=backend.precision, output_kind="people",
                flip_in_graph=backend.flip_in_graph,
                flip=res.flip, metrics=res.metrics, delta={k: res.metrics[k] - ref.metrics[k] for k in res.metrics
                                                           if k in ref.metrics},
                people=res.num_persons, output_error={k: None for k in ("max_abs", "rel_l2", "cosine", "ref_max_abs")},
                error_items=len(dataset), mean_kpt_px=None, image_kpt_px=kpt, items_per_s=res.images_per_s,
                backend_ms_per_item=res.backend_ms_per_person, notes=notes, **_final_keypoint_distance(res, ref))


def _compare_one(task: PoseTask, model: "nn.Module", path: str | Path, dataset: Any, ref: Any,
                 ref_flip: bool, opts: ParityOptions, warnings: list[str]) -> dict[str, Any]:
    from srpose.engines import open_backend

    ref_metrics = ref.metrics
    backend = open_backend(path, device=opts.device, threads=opts.threads)
    name = Path(str(path)).name
    notes, model_flip = [], ref_flip
    sha = backend.card.checkpoint_sha256 if backend.card is not None else None
    if opts.checkpoint_sha256 and sha and sha != opts.checkpoint_sha256:
        notes.append(f"{name} was exported from another checkpoint (sha256 {sha[:12]}...)")
    if backend.flip_in_graph and not ref_flip:
        notes.append(f"{name} has the flip test in its graph; the reference runs without flip")
    if backend.flip_in_graph:
        model_flip = None  # the graph (or the server) flips, whatever the reference does
    if backend.decoded and ref_flip and not backend.flip_in_graph:
        notes.append(f"{name} decodes in its graph without an in-graph flip: evaluated without flip")
        model_flip = False
    reference = task.reference_for(model, backend.card) if backend.card is not None else \
        task.reference(model, flip=False, decode=False)
    probe = ParityProbe(backend, task, reference, max_items=opts.error_items,
                        passes=2 if task.host_flip(backend, model_flip) else 1)
    try:
        res = evaluate(task, probe, dataset, EvalOptions(flip=model_flip, batch_size=opts.batch_size,
                                                          workers=opts.workers, progress=opts.progress))
    finally:
        probe.close()
    err = probe.errors.result()
    warnings.extend(notes)
    return dict(
        file=str(path), name=name, precision=backend.precision, output_kind=backend.card.output_kind
        if backend.card is not None else "heatmaps", flip_in_graph=backend.flip_in_graph,
        flip=res.flip, metrics=res.metrics, delta={k: res.metrics[k] - ref_metrics[k] for k in res.metrics
                                                   if k in ref_metrics},
        people=res.num_persons, output_error={k: err[k] for k in ("max_abs", "rel_l2", "cosine", "ref_max_abs")},
        error_items=probe.compared,
        mean_kpt_px=probe.kpt.result()["mean_kpt_px"] if probe.kpt.count else None,
        image_input=backend.image_input, **_final_keypoint_distance(res, ref),
        items_per_s=probe.items / (probe.backend_ms / 1e3) if probe.backend_ms else None,
        backend_ms_per_item=probe.backend_ms / probe.items if probe.items else None, notes=notes)


def config_of_models(models: Sequence[str | Path]) -> Any:
    """The config stored in the card of the first model file that has one (the config they were exported from)."""
    from srpose.card import CardError, read_card
    from srpose.config import PoseConfig
    from srpose.engines import SERVER_SCHEMES

    missing = [str(f) for f in models if not str(f).startswith(SERVER_SCHEMES) and not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"model file {missing[0]} does not exist")
    for f in models:
        if str(f).startswith(SERVER_SCHEMES):
            continue
        try:
            card = read_card(f)
        except CardError:
            continue
        if card.config:
            return PoseConfig.from_dict(card.config)
    raise ValueError("none of the model files carries its config (served models and files without an srpose card "
                     "do not): name it, srpose parity NAME_OR_CONFIG ...")


def config_for_models(task: PoseTask, models: Sequence[str | Path]) -> PoseTask:
    """The task at the input size the model files were exported with (all must agree; top-down)."""
    from srpose.card import CardError, read_card
    from srpose.engines import SERVER_SCHEMES
    from srpose.tasks import task_for

    sizes = {}
    for f in models:
        if str(f).startswith(SERVER_SCHEMES):
            continue
        if not Path(f).is_file():
            raise FileNotFoundError(f"model file {f} does not exist")
        try:
            card = read_card(f)
        except CardError:
            continue  # a file without a card runs at the config's input size
        if card.task != task.kind:
            raise ValueError(f"{f} is a {card.task} model but {task.cfg.name} is {task.kind}: compare models of "
                             "the same config")
        sizes[str(f)] = tuple(card.input_size)
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise ValueError(f"the models were exported at different input sizes {sorted(distinct)}: compare models of "
                         "one input size at a time")
    if distinct and task.kind == "top-down":
        w, h = distinct.pop()
        if (w, h) != tuple(task.cfg.image_size):
            return task_for(copy.deepcopy(task.cfg).with_input_size(w, h))
    return task
