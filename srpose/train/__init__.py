"""Training: the official SRPose / mmpose 0.x recipe (losses, schedule, checkpoints, DDP) in plain PyTorch."""
from srpose.train.loss import LOW_RES_STAGE_WEIGHT, JointsMSELoss, multi_stage_loss, stage_weights_for
from srpose.train.trainer import EvalFn, ShardedEval, TrainResult, lr_at, spawn_train, train, weights_digest

__all__ = [
    "JointsMSELoss", "multi_stage_loss", "stage_weights_for", "LOW_RES_STAGE_WEIGHT",
    "train", "spawn_train", "lr_at", "TrainResult", "ShardedEval", "EvalFn", "weights_digest",
]
