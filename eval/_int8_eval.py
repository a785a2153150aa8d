"""Measuring one FP16 set of the INT8 search: its mixed INT8/FP16 graph run in ONNX Runtime on the held-out crops
(AP with the dataset's protocol, PCKh on MPII; keypoint error and output error against the FP32 graph), with a JSON
cache of every result.

Per graph: ``metrics`` (AP, AP50, AP75, AR; MPII: PCKh, PCKh@0.1), ``kpt_px`` (mean distance of the decoded
keypoints to the FP32 graph's, input pixels, every crop) and ``out_rel_l2`` (relative L2 error of the outputs
against the FP32 graph's, the first ``error_items`` crops: the FP32 outputs of those are kept in memory). The crops
are read once and kept in memory; the FP32 graph's outputs are computed the first time a graph has to be run, so a
search whose results are all cached runs no inference and reads no image. The cache file is keyed by everything a
result depends on (the caller's key: FP32 graph, calibration, validation data, groups, settings) and written after
every new result, so a search stopped by its time limit resumes where it stopped.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from srpose.tasks import PoseTask, Poses

__all__ = ["CACHE_FORMAT", "Budget", "BudgetSpent", "SetEvaluator", "primary_metric", "set_id"]

CACHE_FORMAT = "srpose-int8-search-3"  # 3: INT8 graphs in float16 outside INT8, #22
_METRICS = ("AP", "AP50", "AP75", "AR")
#: the evaluator's MPII names (mmpose's PCKh table) -> the search's
_PCKH = {"Mean": "PCKh", "Mean@0.1": "PCKh@0.1"}


def primary_metric(dataset_name: str) -> str:
    """The metric the search budgets, on the 0..1 scale: PCKh@0.5 on MPII (``PCKh``), keypoint AP otherwise."""
    return "PCKh" if dataset_name == "mpii" else "AP"


def set_id(fp16: Iterable[int]) -> str:
    """The cache key of an FP16 set (group indices): sorted, comma-separated (``""``: all-INT8)."""
    return ",".join(str(i) for i in sorted(set(fp16)))


class BudgetSpent(Exception):
    """Raised instead of running a graph once the search's time or evaluation budget is spent."""


@dataclass
class Budget:
    """The search's bound: ``deadline`` (``time.perf_counter()`` value) and ``max_runs`` graphs run (the
    reference graphs, which every answer needs, are not counted and always run)."""

    deadline: float | None = None
    max_runs: int | None = None
    runs: int = 0
    reason: str | None = None

    def check(self) -> None:
        if self.max_runs is not None and self.runs >= self.max_runs:
            self.reason = f"the evaluation budget ({self.max_runs} graphs run) is spent"
        elif self.deadline is not None and time.perf_counter() > self.deadline:
            self.reason = "the time limit is reached"
        if self.reason:
            raise BudgetSpent(self.reason)


@dataclass
class SetEvaluator:
    """Results of FP16 sets (group indices) on ``dataset``: ``build(fp16_nodes, out_path)`` writes the mixed graph
    of a set; results are cached in ``cache_file`` under ``key``. ``runs`` / ``hits`` count graphs run and
    results read from the cache; ``on_result(tag, cached)`` is called after every result (progress)."""

    task: PoseTask
    dataset: Any
    fp32_path: Path
    groups: Sequence[Any]
    build: Callable[[list[str], Path], Any]
    cache_file: Path
    key: str
    flip: bool = False
    post: bool = True
    batch_size: int = 32
    threads: int | None = None
    error_items: int = 128
    budget: Budget = field(default_factory=Budget)
    on_result: Callable[[str, bool], None] | None = None
    runs: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = self._load()
        self._batches: list[dict[str, Any]] | None = None
        self._ref_kpts: list[np.ndarray] | None = None
        self._ref_out: list[dict[str, np.ndarray]] = []

    # ------------------------------------------------------------------------------------------ public
    @property
    def metric(self) -> str:
        """The key of ``result["metrics"]`` the search budgets (:func:`primary_metric`)."""
        return primary_metric(self.dataset.dataset_name)

    def fp32(self) -> dict[str, Any]:
        """The FP32 graph's result (keypoint error 0 by definition)."""
        return self._cached("fp32", lambda: self._run_file(self.fp32_path, reference=True), mandatory=True)

    def fp16_set(self, fp16: Iterable[int], *, mandatory: bool = False) -> dict[str, Any]:
        """The result of the mixed graph with the groups ``fp16`` in FP16 and every other group in INT8."""
        fp16 = sorted(set(fp16))
        nodes = [n for i in fp16 for n in self.groups[i].nodes]
        return self._cached(set_id(fp16), lambda: self._run_built(nodes), mandatory=mandatory)

    def graph(self, tag: str, write: Callable[[Path], Any], *, mandatory: bool = False) -> dict[str, Any]:
        """The result of another graph (``write(path)`` writes it), cached as ``tag``."""
        def run() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="srpose-int8-search-") as tmp:
                path = Path(tmp) / "graph.onnx"
                write(path)
                return self._run_file(path)
        return self._cached(tag, run, mandatory=mandatory)

    def known(self, fp16: Iterable[int]) -> dict[str, Any] | None:
        """The cached result of an FP16 set, or None."""
        return self.results.get(set_id(fp16))

    # ------------------------------------------------------------------------------------------ running
    def _cached(self, tag: str, run: Callable[[], dict[str, Any]], *, mandatory: bool) -> dict[str, Any]:
        if tag in self.results:
            self.hits += 1
            if self.on_result is not None:
                self.on_result(tag, True)
            return self.results[tag]
        if not mandatory:
            self.budget.check()
        t0 = time.perf_counter()
        result = run()
        result["seconds"] = round(time.perf_counter() - t0, 3)
        self.results[tag] = result
        self.runs += 1
        self.budget.runs += 0 if mandatory else 1
        self._save()
        if self.on_result is not None:
            self.on_result(tag, False)
        return result

    def _run_built(self, nodes: list[str]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="srpose-int8-search-") as tmp:
            path = Path(tmp) / "mixed.onnx"
            self.build(nodes, path)
            return self._run_file(path)

    def _run_file(self, path: Path, *, reference: bool = False) -> dict[str, Any]:
        from srpose.engines.onnxruntime import OnnxRuntimeBackend
        from srpose.export.compare import ErrorAccumulator

        from .evaluator import score

        batches = self._data()
        if not reference and self._ref_kpts is None:
            self._ref_out = []
            self._run_file(self.fp32_path, reference=True)
        backend = OnnxRuntimeBackend(path, threads=self.threads)
        kpt_err, out_err = ErrorAccumulator(keypoints=True), ErrorAccumulator()
        parts, kpts, seen = [], [], 0
        try:
            for i, batch in enumerate(batches):
                out, _ = self.task.infer(backend, batch, flip=self.flip)
                parts.append(self.task.decode(out, batch, decoded=backend.decoded, post=self.post))
                kp = self.task.keypoints_in_input(out, decoded=backend.decoded)
                views = {k: self.task.compare_view(k, v) for k, v in out.items()} if seen < self.error_items else None
                seen += len(batch["img"])
                if reference:
                    kpts.append(kp)
                    if views is not None:
                        self._ref_out.append(views)
                    continue
                kpt_err.add(self._ref_kpts[i], kp)  # type: ignore[index]
                if views is not None:
                    for k, v in views.items():
                        out_err.add(self._ref_out[i][k], v)
        finally:
            backend.close()
        if reference:
            self._ref_kpts = kpts
        metrics = score(self.task, self.dataset, Poses.concat(parts, self.task.cfg.num_joints),
                        backend_name=path.name)[0]
        named = {**{k: float(metrics[k]) for k in _METRICS if k in metrics},
                 **{_PCKH[k]: float(v) for k, v in metrics.items() if k in _PCKH}}
        rel_l2 = 0.0 if reference else out_err.result()["rel_l2"]
        if rel_l2 is None:  # the search weighs each group by its share of the output error
            raise ValueError(f"{self.fp32_path.name} outputs all zeros on the held-out crops, so {path.name}'s "
                             "output error has no relative size: check the checkpoint (a trained model's heatmaps "
                             "are not all zero)")
        return dict(metrics=named,
                    kpt_px=0.0 if reference else float(kpt_err.result()["mean_kpt_px"]),
                    out_rel_l2=float(rel_l2))

    def _data(self) -> list[dict[str, Any]]:
        """The held-out crops, read once (without training targets)."""
        if self._batches is None:
            self._batches = [{k: v for k, v in b.items() if k not in ("target", "target_weight")}
                             for b in self.task.batches(self.dataset, batch_size=self.batch_size, workers=0)]
        return self._batches

    # ------------------------------------------------------------------------------------------ the cache file
    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # a damaged cache is recomputed, not trusted
        if data.get("format") != CACHE_FORMAT or data.get("key") != self.key:
            return {}
        return dict(data.get("results", {}))

    def _save(self) -> None:
        from srpose._io import atomic_write_json

        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.cache_file, dict(format=CACHE_FORMAT, key=self.key, model=self.fp32_path.name,
                                                groups=[g.name for g in self.groups], results=self.results))
