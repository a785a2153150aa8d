"""The training-time evaluation callback, one code path for both tasks: sharded prediction + gathered scoring
(``Poses.to_rows`` -> ``score_rows``) equals a plain ``evaluate`` on the same data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _export_utils import tiny_bottom_up_config, tiny_model

from srpose import build_model, get_config
from srpose.eval import EvalOptions, OracleBackend, TorchBackend, evaluate
from srpose.eval.evaluator import predict_rows, score_rows
from srpose.eval.train_hooks import make_eval_fn
from srpose.tasks import Poses, task_for

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("top-down", "bottom-up")


def _model(kind: str):
    if kind == "top-down":
        torch.manual_seed(0)
        cfg = get_config("res50_sr_coco_256x192").with_input_size(64, 64)
        return cfg, build_model(cfg)
    cfg = tiny_bottom_up_config()
    return cfg, tiny_model(cfg)


def _gather(fn, model, world: int = 2) -> list:
    """What the trainer does with ``world`` ranks: interleaved shares, gathered back in index order."""
    n = fn.num_items
    ordered = [None] * n
    for r in range(world):
        part = fn.predict(model, list(range(r, n, world)))
        assert len(part) == len(range(r, n, world))  # one result per index, as the trainer checks
        for i, res in zip(range(r, n, world), part):
            ordered[i] = res
    return ordered


@pytest.mark.parametrize("kind", TASKS)
def test_sharded_eval_matches_evaluate(kind: str, coco_sample: dict) -> None:
    cfg, model = _model(kind)
    fn = make_eval_fn(cfg, str(coco_sample["ann"]), str(coco_sample["images"]), batch_size=4, flip=False)
    results = _gather(fn, model)
    assert model.training  # the hook hands the model back in training mode
    sharded = fn.score(results)
    task = task_for(cfg)
    ds = task.gt_dataset(str(coco_sample["ann"]), str(coco_sample["images"]))
    assert fn.num_items == len(ds) == (12 if kind == "top-down" else 4)
    res = evaluate(task, TorchBackend(model), ds, EvalOptions(flip=False, batch_size=4, workers=0, progress=False))
    assert sum(len(r) for r in results) == res.num_persons > 0
    assert sharded.keys() == res.metrics.keys()
    for k in res.metrics:
        assert sharded[k] == pytest.approx(res.metrics[k], abs=1e-9), k
    assert np.isfinite(list(sharded.values())).all()
    with pytest.raises(RuntimeError, match="partial metric"):
        fn.score(results[:-1])
    with pytest.raises(RuntimeError, match="partial metric"):
        fn.score(results[:-1] + [None])
    assert fn.predict(model, []) == []  # a rank without items (more ranks than validation items)


@pytest.mark.parametrize("kind", TASKS)
def test_score_rows_equals_evaluate_on_the_same_data(kind: str, coco_sample: dict) -> None:
    """Rows predicted in two shards and concatenated score exactly as one evaluation (noisy oracle: AP < 1)."""
    cfg = get_config("res50_coco_256x192") if kind == "top-down" else get_config(
        "res50_coco_512x512").with_input_size(256, 256)
    task = task_for(cfg)
    ds = task.gt_dataset(coco_sample["ann"], coco_sample["images"])

    class Noisy(OracleBackend):
        """The oracle with joints moved by noise drawn per image, whatever the batches."""

        def infer(self, images, meta=None):
            j = [np.asarray(x, np.float32).copy() for x in meta["joints"]]
            for x, image_id in zip(j, np.asarray(meta["image_id"]).ravel()):
                x[..., :2] += np.random.default_rng(int(image_id)).normal(0, 4, x[..., :2].shape)
            return super().infer(images, dict(meta, joints=np.stack(j) if kind == "top-down" else j))

    opts = EvalOptions(flip=False, batch_size=5, workers=0, progress=False)
    res = evaluate(task, Noisy(task), ds, opts)
    assert 0.05 < res.metrics["AP"] < 0.99
    n = len(ds)
    rows = predict_rows(task, Noisy(task), ds, range(0, n, 2), opts) + predict_rows(task, Noisy(task), ds,
                                                                                     range(1, n, 2), opts)
    assert len(rows) == res.num_persons
    assert score_rows(task, ds, rows) == pytest.approx(res.metrics, abs=1e-12)
    with pytest.raises(RuntimeError, match="partial metric"):
        score_rows(task, ds, rows[:-1] + [None])


def test_poses_rows_round_trip() -> None:
    rng = np.random.default_rng(0)
    m, k = 5, 17
    poses = Poses(keypoints=rng.normal(size=(m, k, 3)).astype(np.float32), scores=rng.random(m),
                  image_ids=rng.integers(0, 10**6, m), centers=rng.normal(size=(m, 2)).astype(np.float32),
                  scales=rng.random((m, 2)).astype(np.float32), indices=np.arange(m)[::-1].copy())
    rows = poses.to_rows()
    assert len(rows) == m and all(r.dtype == np.float64 and r.shape == (3 * k + 7,) for r in rows)
    back = Poses.from_rows(rows, k)
    for f in ("keypoints", "scores", "image_ids", "centers", "scales", "indices"):
        a, b = getattr(poses, f), getattr(back, f)
        assert a.dtype.kind == b.dtype.kind, f
        np.testing.assert_array_equal(b, a, err_msg=f)
    empty = Poses.from_rows([], k)
    assert len(empty) == 0 and empty.keypoints.shape == (0, k, 3) and empty.to_rows() == []
    assert len(Poses.concat([poses, empty, poses], k)) == 2 * m
