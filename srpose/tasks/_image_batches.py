"""Whole-image batches for top-down image-to-keypoints graphs: each JPEG decoded once and padded into its batch's
image array in a data-loader worker, its persons' boxes as arrays; the main thread copies each batch into the
graph's input arrays (pinned memory for TensorRT) in one piece.

A batch holds whole images: images are added while it has fewer than ``persons`` persons, never more than the
graph's ``max_persons`` or ``max_images`` (an image with more persons than ``max_persons`` is split across
batches). Nothing per person runs in Python: boxes, centres and scales are sliced from arrays made once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from srpose.card import BOX_IMAGE, BOXES, IMAGES
from srpose.data.boxes import check_boxes

__all__ = ["person_boxes", "plan_batches", "pack", "ImageBatches", "feed_shapes", "fill_feed", "pad_images", "iterate",
           "PAD_MULTIPLE"]

#: padded image sizes are rounded up to this multiple (fewer distinct shapes for TensorRT), within the profile
PAD_MULTIPLE = 32


def person_boxes(dataset: Any) -> np.ndarray:
    """N x 5 float32 boxes (x, y, w, h, score) of every record of a top-down dataset. Records without a box
    (MPII: annotated centre and scale) get the box whose padded, aspect-fixed crop is that centre and scale."""
    from srpose.data.transforms import center_scale_to_boxes

    recs = dataset.records
    rows = np.zeros((len(recs), 5), np.float64)
    boxed = np.array([r.get("bbox") is not None for r in recs], bool)
    if boxed.any():
        rows[boxed, :4] = [recs[i]["bbox"][:4] for i in np.flatnonzero(boxed)]
    if (~boxed).any():
        rest = np.flatnonzero(~boxed)
        rows[rest, :4] = center_scale_to_boxes(np.stack([recs[i]["center"] for i in rest]),
                                               np.stack([recs[i]["scale"] for i in rest]))
    rows[:, 4] = [r["bbox_score"] for r in recs]
    return rows.astype(np.float32)


def plan_batches(dataset: Any, indices: Sequence[int] | None, *, persons: int, max_persons: int,
                 max_images: int) -> list[list[tuple[str, np.ndarray]]]:
    """Batches of (image file, record indices): the records of ``indices`` (all by default) grouped by image in
    order of first appearance, packed as the module docstring says."""
    if persons < 1 or max_persons < 1 or max_images < 1:
        raise ValueError(f"persons ({persons}), max_persons ({max_persons}) and max_images ({max_images}) must be "
                         ">= 1")
    order = range(len(dataset.records)) if indices is None else [int(i) for i in indices]
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(dataset.records[i]["image_file"], []).append(i)
    packed = pack([(name, len(idx)) for name, idx in groups.items()], max_persons=max_persons,
                  max_images=max_images, target=persons)
    return [[(name, np.asarray(groups[name][part], np.int64)) for name, part in batch] for batch in packed]


def pack(groups: Sequence[tuple[Any, int]], *, max_persons: int, max_images: int,
         target: int | None = None) -> list[list[tuple[Any, slice]]]:
    """Batches of (group key, slice of its persons) for groups of (key, person count) in order: a group's persons
    in chunks of at most ``max_persons``; a batch closes before a chunk that would take it past ``max_persons``
    persons or ``max_images`` groups, and once it holds ``target`` persons (default ``max_persons``)."""
    target = max_persons if target is None else min(target, max_persons)
    batches: list[list[tuple[Any, slice]]] = []
    batch: list[tuple[Any, slice]] = []
    count = 0
    for key, n in groups:
        for s in range(0, n, max_persons):
            part = slice(s, min(s + max_persons, n))
            size = part.stop - part.start
            if batch and (count + size > max_persons or len(batch) >= max_images or count >= target):
                batches.append(batch)
                batch, count = [], 0
            batch.append((key, part))
            count += size
    if batch:
        batches.append(batch)
    return batches


class ImageBatches:
    """A map-style dataset of planned batches (torch ``DataLoader`` compatible): item ``i`` holds the images of batch
    ``i`` decoded (``pixel_format``) and zero-padded into one uint8 array B x H x W x 3 (sizes rounded up as
    :func:`feed_shapes` says, within ``hw_max``; a torch tensor when ``shared``, so loader workers hand it over in
    shared memory in one piece) and its persons' ``boxes``, ``box_image``, ``center``, ``scale``, ``bbox_score``,
    ``image_id`` and ``idx`` arrays."""

    def __init__(self, dataset: Any, plans: list[list[tuple[str, np.ndarray]]], *, pixel_format: str = "bgr",
                 hw_max: tuple[int, int] | None = None, shared: bool = False) -> None:
        self.img_dir = Path(dataset.img_dir)
        self.plans = plans
        self.pixel_format = pixel_format
        self.hw_max = hw_max
        self.shared = shared
        recs = dataset.records
        self.boxes = person_boxes(dataset)
        check_boxes(self.boxes, label=lambda i: f"person {i} (image {recs[i]['image_file']})")  # as served ones
        self.center = np.stack([np.asarray(r["center"], np.float32) for r in recs])
        self.scale = np.stack([np.asarray(r["scale"], np.float32) for r in recs])
        self.image_id = np.asarray([r["image_id"] for r in recs], np.int64)

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from srpose.data.transforms import read_image

        plan = self.plans[i]  # an image's persons are in one chunk of a batch (pack never puts two there)
        idx = np.concatenate([ix for _, ix in plan])
        box_image = np.concatenate([np.full(len(ix), b, np.int32) for b, (_, ix) in enumerate(plan)])
        batch: dict[str, Any] = dict(images=[read_image(self.img_dir / name, self.pixel_format) for name, _ in plan],
                                     boxes=self.boxes[idx],
                                     box_image=box_image, center=self.center[idx], scale=self.scale[idx],
                                     bbox_score=self.boxes[idx, 4].astype(np.float64), image_id=self.image_id[idx],
                                     idx=idx, image_file=[name for name, _ in plan])
        padded = np.empty(feed_shapes(batch, self.hw_max)[IMAGES], np.uint8)
        pad_images(batch["images"], padded)
        batch["images"] = padded
        if self.shared:
            import torch

            batch["images"] = torch.from_numpy(padded)
        return batch


def _round_up(v: int, multiple: int, limit: int | None) -> int:
    r = -(-v // multiple) * multiple
    return r if limit is None or r <= limit else max(v, min(r, limit))


def feed_shapes(batch: Mapping[str, Any], hw_max: tuple[int, int] | None = None,
                multiple: int = PAD_MULTIPLE) -> dict[str, tuple[int, ...]]:
    """Input shapes of an image batch: its images padded to a common H x W (rounded up to ``multiple`` while it
    stays within ``hw_max``); an already padded batch keeps its array's shape."""
    p = len(batch["idx"])
    images = batch["images"]
    if not isinstance(images, (list, tuple)):  # padded by the loader
        return {IMAGES: tuple(int(v) for v in images.shape), BOXES: (p, 5), BOX_IMAGE: (p,)}
    hs = [int(im.shape[0]) for im in images]
    ws = [int(im.shape[1]) for im in images]
    lim_h, lim_w = hw_max if hw_max is not None else (None, None)
    h, w = _round_up(max(hs), multiple, lim_h), _round_up(max(ws), multiple, lim_w)
    return {IMAGES: (len(hs), h, w, 3), BOXES: (p, 5), BOX_IMAGE: (p,)}


def pad_images(images: Any, dst: np.ndarray) -> np.ndarray:
    """Each image into its zero-padded slot of ``dst`` (B x H x W x 3)."""
    for b, im in enumerate(images):
        a = im.numpy() if hasattr(im, "numpy") else np.asarray(im)
        h, w = a.shape[:2]
        dst[b, :h, :w] = a
        dst[b, h:] = 0
        dst[b, :h, w:] = 0
    return dst


def fill_feed(batch: Mapping[str, Any], feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write an image batch into the graph's input arrays ``feed`` (e.g. a backend's pinned buffers): a padded batch
    in one copy, a list of images each into its zero-padded slot; returns ``feed``."""
    images = batch["images"]
    if isinstance(images, (list, tuple)):
        pad_images(images, feed[IMAGES])
    else:
        np.copyto(feed[IMAGES], images.numpy() if hasattr(images, "numpy") else images)
    feed[BOXES][...] = batch["boxes"]
    feed[BOX_IMAGE][...] = batch["box_image"]
    return dict(feed)


def iterate(source: ImageBatches, workers: int) -> Iterator[dict[str, Any]]:
    """The batches of ``source``, decoded by ``workers`` loader processes (0: in this process), in order."""
    if workers == 0:
        for i in range(len(source)):
            yield source[i]
        return
    from torch.utils.data import DataLoader

    source.shared = True
    yield from DataLoader(source, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
                          prefetch_factor=2, persistent_workers=False)


def _as_is(item: Any) -> Any:
    return item
