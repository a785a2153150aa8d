"""Person boxes checked the same way wherever they enter: detection files (offline evaluation, crop graphs and
image-to-keypoints graphs alike) and the requests of a served model (its pre-processing). numpy only: the serving
process imports it."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["check_boxes", "BOX_RULE"]

#: what a valid box is, as the error messages say it
BOX_RULE = "must be finite with w, h > 0 (and a finite score)"


def check_boxes(boxes: Any, image_hw: Any = None, *, label: Callable[[int], str] | None = None) -> None:
    """ValueError naming the first row of N x 5 ``boxes`` (x, y, w, h, score) that has a NaN or infinite value, a
    width or height <= 0, or (with ``image_hw``: one (H, W) for every row, or N x 2, one per row) lies entirely
    outside its image. ``label(i)`` names row ``i`` in the message (default ``box i``). Vectorised."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] < 5:
        raise ValueError(f"boxes have shape {b.shape}: expected one row of 5 values (x, y, w, h, score) per person")
    name = label or (lambda i: f"box {i}")
    finite = np.isfinite(b[:, :5]).all(axis=1)
    x, y, w, h = (np.where(finite, b[:, i], 0.0) for i in range(4))
    bad = [(~(finite & (w > 0) & (h > 0)), BOX_RULE)]
    if image_hw is not None:
        hw = np.broadcast_to(np.asarray(image_hw, dtype=np.float64).reshape(-1, 2), (len(b), 2))
        inside = (x < hw[:, 1]) & (y < hw[:, 0]) & (x + w > 0) & (y + h > 0)
        bad.append((~inside, None))
    for mask, why in bad:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            if why is None:
                why = f"lies outside the {int(hw[i, 1])}x{int(hw[i, 0])} image"
            vals = ", ".join(f"{v:g}" for v in b[i, :5])
            raise ValueError(f"{name(i)} (x, y, w, h, score) = ({vals}) {why}")
