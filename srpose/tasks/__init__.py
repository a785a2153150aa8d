"""Pose tasks: :class:`TopDownTask` (person crops) and :class:`BottomUpTask` (whole images, associative
embedding) own what differs between the two; export, evaluation, parity, bench, serving, the pipeline and the demo
each have one code path that takes a task. :func:`task_for` is the one place that decides a config's task.
"""
from __future__ import annotations

from typing import Any

from .base import Batch, IOSpec, Poses, PoseTask, run_backend
from .bottom_up import BottomUpTask, parse_shape_profile
from .top_down import TopDownTask

__all__ = ["PoseTask", "TopDownTask", "BottomUpTask", "IOSpec", "Poses", "Batch", "task_for", "run_backend",
           "parse_shape_profile"]


def task_for(cfg: Any) -> PoseTask:
    """The task of a :class:`~srpose.config.PoseConfig` (or a preset name / config file): bottom-up for
    ``BottomUp`` / ``AssociativeEmbedding`` detectors, top-down otherwise."""
    from srpose.config import PoseConfig

    if not isinstance(cfg, PoseConfig):
        from srpose.resolve import get_config

        cfg = get_config(cfg)
    return (BottomUpTask if cfg.is_bottom_up else TopDownTask)(cfg)
