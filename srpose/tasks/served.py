"""A task's dataset through a served model (a backend with ``serves_images``, e.g. Triton): one request per image,
people in image pixels back, turned into the task's :class:`~srpose.tasks.base.Poses`.

- top-down: the dataset's person records grouped by image, in dataset order; a request carries the image file's
  bytes and its records' boxes (``bbox``, x y w h, with the box score) or, for records without a box (MPII), their
  centre and scale. The server crops, runs the network (with the flip test as the served graph/ensemble does it),
  decodes and rescales; the :class:`Poses` keep the records' centre, scale and box score, so the protocol's results
  (rescoring, OKS-NMS) are computed exactly as for a local backend.
- bottom-up: one request per image.

``served_batches`` yields groups of requests, which :func:`infer_served` sends concurrently.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from .base import Batch, Poses

if TYPE_CHECKING:  # pragma: no cover
    from .base import PoseTask

__all__ = ["served_requests", "served_batches", "wire_request", "infer_served", "decode_served"]


def _top_down_requests(dataset: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    groups: dict[Any, dict[str, Any]] = {}
    for i in indices:
        rec = dataset.records[int(i)]
        g = groups.setdefault(rec["image_file"], dict(image_file=str(Path(dataset.img_dir) / rec["image_file"]),
                                                      image_id=rec["image_id"], idx=[], rows=[], center=[],
                                                      scale=[], bbox_score=[]))
        score = float(rec["bbox_score"])
        g["rows"].append([*map(float, rec["bbox"][:4]), score] if rec.get("bbox") is not None else
                         [*map(float, rec["center"]), *map(float, rec["scale"]), score])
        g["idx"].append(int(i))
        g["center"].append(np.asarray(rec["center"], np.float32))
        g["scale"].append(np.asarray(rec["scale"], np.float32))
        g["bbox_score"].append(np.float32(score))
        g.setdefault("kind", "boxes" if rec.get("bbox") is not None else "center_scale")
        if (rec.get("bbox") is not None) != (g["kind"] == "boxes"):
            raise ValueError(f"image {rec['image_file']!r} mixes records with and without boxes")
    return list(groups.values())


def served_requests(task: "PoseTask", dataset: Any, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One request description per image of ``dataset`` (its items ``indices``, all by default), in dataset
    order: ``image_file``, ``image_id``, ``idx`` (the items it answers) and, top-down, ``rows`` of ``kind``
    boxes / center_scale with the records' ``center``, ``scale`` and ``bbox_score``."""
    indices = range(len(dataset)) if indices is None else indices
    if task.kind == "top-down":
        return _top_down_requests(dataset, indices)
    return [dict(image_file=str(Path(dataset.img_dir) / dataset.images[int(i)]["file_name"]),
                 image_id=dataset.images[int(i)]["id"], idx=[int(i)]) for i in indices]


def served_batches(task: "PoseTask", dataset: Any, *, images_per_batch: int = 32,
                   indices: Sequence[int] | None = None) -> Iterator[Batch]:
    """Groups of ``images_per_batch`` requests: ``{"requests": [...], "idx": every item index they answer}``."""
    requests = served_requests(task, dataset, indices)
    for s in range(0, len(requests), max(1, int(images_per_batch))):
        part = requests[s:s + images_per_batch]
        yield {"requests": part, "idx": np.asarray([i for r in part for i in r["idx"]], np.int64)}


def wire_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """What goes to the server: the image file's bytes and, top-down, the rows."""
    with open(request["image_file"], "rb") as f:
        out: dict[str, Any] = {"image": f.read()}
    if "rows" in request:
        out[request["kind"]] = np.asarray(request["rows"], np.float64)
    return out


def infer_served(task: "PoseTask", backend: Any, batch: Batch, *, flip: bool, concurrency: int = 8
                 ) -> tuple[list[dict[str, np.ndarray]], float]:
    """The server's answers to a batch's requests (``concurrency`` in flight) and the seconds they took.
    ``flip``: the evaluator wants a host flip test, which a served model cannot take: ValueError naming the fix."""
    if flip:
        raise ValueError(f"backend {backend.name!r} serves {task.cfg.name} without the flip test, and a client "
                         "cannot add it: evaluate with --no-flip, or write the repository with `srpose triton ... "
                         "--flip` (top-down) / serve a graph exported with --flip")
    t0 = time.perf_counter()
    wire = [wire_request(r) for r in batch["requests"]]
    outputs = backend.infer_many(wire, concurrency=concurrency)
    return outputs, time.perf_counter() - t0


def decode_served(task: "PoseTask", outputs: Sequence[Mapping[str, np.ndarray]], batch: Batch) -> Poses:
    """:class:`Poses` of the answers to a batch's requests."""
    k = task.cfg.num_joints
    parts = []
    for req, out in zip(batch["requests"], outputs):
        kpts = np.asarray(out["keypoints"], np.float32).reshape(-1, k, 3)
        if task.kind == "top-down":
            if len(kpts) != len(req["idx"]):
                raise RuntimeError(f"the server answered {len(kpts)} persons for the {len(req['idx'])} boxes of "
                                   f"{req['image_file']}")
            parts.append(Poses(keypoints=kpts, scores=np.asarray(req["bbox_score"], np.float32).astype(np.float64),
                               image_ids=np.full(len(kpts), req["image_id"], np.int64),
                               centers=np.stack(req["center"]).astype(np.float32),
                               scales=np.stack(req["scale"]).astype(np.float32),
                               indices=np.asarray(req["idx"], np.int64)))
        else:
            p = len(kpts)
            cs = np.asarray(out.get("center_scale", np.zeros(4)), np.float64).reshape(4)
            parts.append(Poses(keypoints=kpts, scores=np.asarray(out["scores"], np.float64).reshape(p),
                               image_ids=np.full(p, req["image_id"], np.int64),
                               centers=np.tile(cs[:2].astype(np.float32), (p, 1)),
                               scales=np.tile(cs[2:].astype(np.float32), (p, 1)),
                               indices=np.full(p, req["idx"][0], np.int64)))
    return Poses.concat(parts, k)
