"""Periodic evaluation during training: the eval layer's callback handed to ``srpose.train`` (sharded across ranks)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srpose.config import PoseConfig
    from srpose.train.trainer import ShardedEval

__all__ = ["make_eval_fn", "eval_fn_from_args"]


def make_eval_fn(cfg: "PoseConfig", ann: str, images: str, *, det: str | None = None, batch_size: int = 32,
                 workers: int = 0, flip: bool | None = None) -> "ShardedEval":
    """A :class:`~srpose.train.trainer.ShardedEval`: each rank predicts its share of the validation items with the
    current weights (torch backend on the model's device), rank 0 scores them with the dataset's protocol.

    The result of one item is the list of its people's rows (:meth:`~srpose.tasks.Poses.to_rows`): one row for a
    top-down person crop, any number for a bottom-up image, so the trainer's one-result-per-index gather holds for
    both tasks."""
    import torch

    from srpose.tasks import task_for
    from srpose.train.trainer import ShardedEval

    from .backends import TorchBackend
    from .evaluator import EvalOptions, predict as predict_poses, score_rows

    task = task_for(cfg)
    dataset = task.dataset(ann, images, det=det) if det else task.gt_dataset(ann, images)
    opts = EvalOptions(flip=flip, batch_size=batch_size, workers=workers, progress=False)

    def predict(model: torch.nn.Module, indices: Any) -> list:
        core = getattr(model, "module", model)  # DDP wraps the model
        device = next(core.parameters()).device
        indices = [int(i) for i in indices]
        if not indices:  # more ranks than validation items
            return []
        try:
            poses, _ = predict_poses(task, TorchBackend(core, device=device), dataset, opts, indices=indices)
        finally:
            core.train()
        per_item: dict[int, list] = {i: [] for i in indices}
        for i, row in zip(poses.indices.tolist(), poses.to_rows()):
            per_item[int(i)].append(row)
        return [per_item[i] for i in indices]

    def score(results: list) -> dict:
        if len(results) != len(dataset) or any(r is None for r in results):
            raise RuntimeError(f"got results for {sum(r is not None for r in results)} of {len(dataset)} items; not "
                               "reporting a partial metric")
        return score_rows(task, dataset, [row for item in results for row in item])

    return ShardedEval(num_items=len(dataset), predict=predict, score=score)


def eval_fn_from_args(cfg: "PoseConfig", args: Any) -> "ShardedEval":
    """The periodic evaluation ``srpose train`` builds (:mod:`srpose.cli.train`): the validation set of
    ``--val-ann/--val-images[/--val-det]``."""
    return make_eval_fn(cfg, args.val_ann, args.val_images, det=args.val_det,
                        batch_size=max(1, int(args.batch or cfg.train.get("batch_size", 32))))
