"""Checks of the inputs every data path shares: the person category of an annotation file, an image folder, and the
images that cannot be decoded (left out on request). numpy and OpenCV only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["check_person_category", "check_image_folder", "without_bad_images"]

_SHOW = 5  # how many offending items an error message lists


def _examples(items: Any) -> str:
    items = list(items)
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


def check_person_category(data: Mapping[str, Any], path: str | os.PathLike, *, required: bool = True) -> None:
    """ValueError unless a COCO-format annotation file lists the person category (id 1), which the keypoint results
    are written as: a file of other categories would score AP 0 rather than fail. ``required``: a file without a
    ``categories`` list is refused too (evaluation needs it; training does not)."""
    cats = data.get("categories")
    if cats is None:
        if required:
            raise ValueError(f"annotation file {str(path)!r} has no 'categories' list: a COCO keypoint file lists the "
                             "person category ({'id': 1, 'name': 'person', 'keypoints': [...]})")
        return
    if not isinstance(cats, list) or not all(isinstance(c, Mapping) for c in cats):
        raise ValueError(f"annotation file {str(path)!r}: 'categories' must be a list of objects")
    if not any(c.get("id") == 1 for c in cats):
        found = ", ".join(f"{c.get('id')!r} {c.get('name', '?')!r}" for c in cats[:_SHOW]) or "none"
        more = f" ({len(cats) - _SHOW} more)" if len(cats) > _SHOW else ""
        raise ValueError(f"annotation file {str(path)!r} has no person category (id 1), which the keypoint results "
                         f"are scored as; its categories: {found}{more}. Use a person keypoint file such as "
                         "person_keypoints_val2017.json")


def check_image_folder(path: str | os.PathLike, option: str = "image folder") -> None:
    """FileNotFoundError / NotADirectoryError naming an image folder that is missing or is a file."""
    p = Path(path)
    if p.is_dir():
        return
    if p.exists():
        raise NotADirectoryError(f"{option} {str(p)!r} is a file, not a folder: pass the folder that holds the images")
    raise FileNotFoundError(f"{option} {str(p)!r} does not exist")


def without_bad_images(dataset: Any, workers: int = 1) -> tuple[Any, list[str]]:
    """(a copy of ``dataset`` without the images that cannot be decoded, their file names). Every image is decoded
    once, ``workers`` at a time (OpenCV releases the GIL); the copy's ``skipped_image_ids`` name the images left out
    (the protocol then scores the others only). Works for the top-down datasets (records) and the bottom-up one
    (images)."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    from .transforms import read_image

    top_down = hasattr(dataset, "records")
    names = list(dict.fromkeys(r["image_file"] for r in dataset.records) if top_down else
                 (im["file_name"] for im in dataset.images))

    def bad(name: str) -> bool:
        try:
            read_image(Path(dataset.img_dir) / name)
            return False
        except (ValueError, OSError):
            return True

    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        failed = [n for n, b in zip(names, pool.map(bad, names)) if b]
    if not failed:
        return dataset, []
    if len(failed) == len(names):
        raise ValueError(f"none of the {len(names)} images in {dataset.img_dir!r} can be decoded (e.g. "
                         f"{_examples(failed)}): point the image folder at the images")
    gone = set(failed)
    out = copy.copy(dataset)
    if top_down:
        out.records = [r for r in dataset.records if r["image_file"] not in gone]
        ids = {r["image_id"] for r in dataset.records if r["image_file"] in gone}
        out.num_images = len(names) - len(failed)
    else:
        keep = [i for i, im in enumerate(dataset.images) if im["file_name"] not in gone]
        ids = {im["id"] for im in dataset.images if im["file_name"] in gone}
        out.images, out.gt_joints = [dataset.images[i] for i in keep], [dataset.gt_joints[i] for i in keep]
        out.num_images = len(keep)
    if hasattr(out, "_last_image"):
        del out._last_image
    out.skipped_image_ids = sorted(ids, key=repr)
    return out, failed
