"""The training-time evaluation callback: sharded prediction + gathered scoring equals a plain evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from srpose.eval.backends import TorchBackend
from srpose.eval.evaluator import evaluate
from srpose.eval.train_hooks import make_eval_fn
from srpose import build_model, get_config
from srpose.data import TopDownCocoDataset


def test_sharded_eval_matches_evaluate(coco_sample) -> None:
    torch.manual_seed(0)
    cfg = get_config("res50_sr_coco_256x192").with_input_size(64, 64)
    model = build_model(cfg)
    fn = make_eval_fn(cfg, str(coco_sample["ann"]), str(coco_sample["images"]), batch_size=4, flip=False)
    # two "ranks": interleaved shares, gathered back in index order (what the trainer does)
    n = fn.num_items
    parts = {r: fn.predict(model, list(range(r, n, 2))) for r in (0, 1)}
    rows = [None] * n
    for r, part in parts.items():
        for i, row in zip(range(r, n, 2), part):
            rows[i] = row
    sharded = fn.score(rows)
    ds = TopDownCocoDataset(str(coco_sample["ann"]), str(coco_sample["images"]), cfg.data, use_gt_bbox=True)
    plain = evaluate(TorchBackend(model), ds, cfg.data, cfg.test_cfg, flip=False, batch_size=4, workers=0,
                     progress=False).metrics
    assert sharded.keys() == plain.keys()
    for k in plain:
        assert sharded[k] == pytest.approx(plain[k], abs=1e-9), k
    with pytest.raises(RuntimeError, match="partial metric"):
        fn.score(rows[:-1])
    assert np.isfinite(list(sharded.values())).all()
