"""Output agreement measures shared by the export report and the parity command."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compare_outputs", "ErrorAccumulator"]


def compare_outputs(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Max abs error, relative L2 error (||out - ref|| / ||ref||; None for an all-zero reference and a non-zero
    output), cosine similarity and the reference's max abs; ValueError for non-finite values in either."""
    acc = ErrorAccumulator()
    acc.add(ref, out)
    return acc.result()


class ErrorAccumulator:
    """Streaming :func:`compare_outputs` over many batches (sums of squares, so batches can be dropped after use).

    For N x K x 3 keypoint outputs (``keypoints=True``) it also tracks the mean Euclidean (x, y) distance.
    """

    def __init__(self, keypoints: bool = False) -> None:
        self.keypoints = keypoints
        self.max_abs = 0.0
        self.ref_max = 0.0
        self.sq_err = self.sq_ref = self.sq_out = self.dot = 0.0
        self.kpt_dist_sum = 0.0
        self.kpt_count = 0
        self.count = 0

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
        for what, a in (("the reference (PyTorch)", ref), ("the output", out)):
            if not np.isfinite(a).all():
                i = np.unravel_index(int(np.flatnonzero(~np.isfinite(a))[0]), a.shape)
                raise ValueError(f"{what} holds non-finite values (first at index {list(map(int, i))}: "
                                 f"{a[i]}): the weights or the graph produce NaN/inf, no error can be measured")
        d = out - ref
        if d.size:
            self.max_abs = max(self.max_abs, float(np.abs(d).max()))
            self.ref_max = max(self.ref_max, float(np.abs(ref).max()))
        self.sq_err += float((d * d).sum())
        self.sq_ref += float((ref * ref).sum())
        self.sq_out += float((out * out).sum())
        self.dot += float((ref * out).sum())
        self.count += int(ref.shape[0]) if ref.ndim else 1
        if self.keypoints:
            dist = np.sqrt((d[..., 0] ** 2) + (d[..., 1] ** 2))
            self.kpt_dist_sum += float(dist.sum())
            self.kpt_count += int(dist.size)

    def result(self) -> dict[str, Any]:
        denom = np.sqrt(self.sq_ref * self.sq_out)
        r: dict[str, Any] = dict(
            max_abs=self.max_abs,
            # an all-zero reference has no relative error (None), unless the output is all zero too
            rel_l2=float(np.sqrt(self.sq_err / self.sq_ref)) if self.sq_ref > 0 else (0.0 if self.sq_err == 0 else
                                                                                      None),
            cosine=float(self.dot / denom) if denom > 0 else (1.0 if self.sq_err == 0 else 0.0),
            ref_max_abs=self.ref_max, samples=self.count)
        if self.keypoints:
            r["mean_kpt_px"] = self.kpt_dist_sum / self.kpt_count if self.kpt_count else 0.0
        return r
