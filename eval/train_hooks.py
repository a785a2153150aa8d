"""Periodic evaluation during training: the eval layer's callback handed to ``srpose.train`` (sharded across ranks)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srpose.config import PoseConfig
    from srpose.train.trainer import ShardedEval

__all__ = ["make_eval_fn", "eval_fn_from_args"]


def make_eval_fn(cfg: "PoseConfig", ann: str, images: str, *, det: str | None = None, batch_size: int = 32,
                 workers: int = 0, flip: bool | None = None) -> "ShardedEval":
    """A :class:`~srpose.train.trainer.ShardedEval`: each rank predicts its share of the validation persons with the
    current weights (torch backend on the model's device), rank 0 scores them with the dataset's protocol."""
    import torch

    from srpose.data import DATASET_CLASSES
    from srpose.train.trainer import ShardedEval

    from .backends import TorchBackend
    from .evaluator import predict_shard, score_rows

    name = str(cfg.data.get("dataset", "coco"))
    cls = DATASET_CLASSES[name]
    dataset = cls(ann, images, cfg.data) if name == "mpii" else \
        cls(ann, images, cfg.data, det_file=det, use_gt_bbox=det is None)

    def predict(model: torch.nn.Module, indices: Any) -> list:
        core = getattr(model, "module", model)  # DDP wraps the model
        device = next(core.parameters()).device
        backend = TorchBackend(core, device=device)
        try:
            return predict_shard(backend, dataset, cfg.data, cfg.test_cfg, list(indices), flip=flip,
                                 batch_size=batch_size, workers=workers, progress=False)
        finally:
            core.train()

    return ShardedEval(num_items=len(dataset), predict=predict, score=lambda rows: score_rows(dataset, cfg.data, rows))


def eval_fn_from_args(cfg: "PoseConfig", args: argparse.Namespace) -> "ShardedEval":
    """The ``eval_fn_factory`` of ``srpose train``: validation set from ``--val-ann/--val-images[/--val-det]``."""
    return make_eval_fn(cfg, args.val_ann, args.val_images, det=args.val_det,
                        batch_size=max(1, int(args.batch or cfg.train.get("batch_size", 32))))
