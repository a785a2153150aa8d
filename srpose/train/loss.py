"""Heatmap losses of the official recipe: mmpose 0.x ``JointsMSELoss`` and SRPose's multi-stage loss."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from srpose.data.targets import pool_target

__all__ = ["JointsMSELoss", "multi_stage_loss", "stage_weights_for", "LOW_RES_STAGE_WEIGHT"]

#: Weight of the SRPose head's first (low-resolution) stage in the total loss (official ``get_loss``).
LOW_RES_STAGE_WEIGHT = 1e-4


class JointsMSELoss(nn.Module):
    """Mean squared error of heatmaps, averaged over batch and pixels per joint, then over joints.

    As the JointsMSELoss of SRPose's mmpose fork: with ``use_target_weight`` prediction and target are both
    multiplied by the joint's weight before the squared error, so weight-0 joints contribute nothing (but still
    count in the mean). There is no 0.5 factor (that one belongs to the original HRNet code, not to mmpose).
    """

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = bool(use_target_weight)
        self.loss_weight = float(loss_weight)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor | None = None) -> torch.Tensor:
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape; "
                             "pool the target to the output's resolution first (multi_stage_loss does)")
        n, k = output.shape[:2]
        pred = output.reshape(n, k, -1).float()
        gt = target.reshape(n, k, -1).float()
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("use_target_weight=True but no target_weight given")
            w = target_weight.reshape(n, k, 1).float()
            pred, gt = pred * w, gt * w
        # mean over (batch, pixels) for each joint, summed over joints and divided by K == the global mean
        per_joint = ((pred - gt) ** 2).mean(dim=(0, 2))
        return per_joint.sum() / k * self.loss_weight


def stage_weights_for(head_type: str, num_outputs: int) -> list[float]:
    """Per-output loss weights of a head: SRPose's first (low-resolution) stage gets 1e-4, the rest 1."""
    if num_outputs < 1:
        raise ValueError(f"a head must produce at least one output, got {num_outputs}")
    if head_type == "TopDownSRPoseHead":
        return [LOW_RES_STAGE_WEIGHT] + [1.0] * (num_outputs - 1)
    return [1.0] * num_outputs


def multi_stage_loss(outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor,
                     target_weight: torch.Tensor, stage_weights: Sequence[float] | None = None, *,
                     criterion: nn.Module | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Total loss and the weighted per-stage losses of every output against the full-resolution ``target``.

    Each stage's target is ``target`` adaptively average-pooled to that output's resolution (SRPose's
    ``get_loss``); ``stage_weights`` defaults to 1 for every stage.
    """
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    outputs = list(outputs)
    if not outputs:
        raise ValueError("no model outputs to compute a loss on")
    weights = [1.0] * len(outputs) if stage_weights is None else [float(w) for w in stage_weights]
    if len(weights) != len(outputs):
        raise ValueError(f"{len(weights)} stage weights for {len(outputs)} outputs; give one weight per output")
    crit = criterion if criterion is not None else JointsMSELoss(use_target_weight=True)
    pooled: dict[tuple[int, int], Any] = {}
    losses = []
    with torch.no_grad():
        for out in outputs:
            size = (int(out.shape[-2]), int(out.shape[-1]))
            if size not in pooled:
                pooled[size] = pool_target(target, size)
    for out, w in zip(outputs, weights):
        size = (int(out.shape[-2]), int(out.shape[-1]))
        losses.append(w * crit(out, pooled[size], target_weight))
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total, losses
