"""One training run: the :class:`Trainer` (model, optimizer, state), its optimizer step, epoch loop, evaluation and
checkpoints. :func:`srpose.train.trainer.train` resolves the arguments and drives it."""
from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from srpose._io import atomic_write_json
from srpose.checkpoint import save_checkpoint
from srpose.config import PoseConfig
from srpose.train._checkpoint import init_weights, restore, weights_digest, write_checkpoint
from srpose.train._data import epoch_loader, epoch_plan, make_dataset, seed_everything, seed_for
from srpose.train._dist import Dist, mean_over_ranks, run_eval, sync_buffers
from srpose.train._log import JsonLog, epoch_line
from srpose.train._schedule import lr_at, make_optimizer
from srpose.train._types import EvalFn, TrainResult
from srpose.train.loss import JointsMSELoss, multi_stage_loss, stage_weights_for

__all__ = ["Options", "EpochStats", "Trainer"]


@dataclass
class Options:
    """The run settings of :func:`~srpose.train.trainer.train` that are not part of the config."""

    work_dir: Path
    workers: int
    amp: bool
    clip: float | None
    checkpoint_every: int
    eval_every: int
    eval_fn: EvalFn | None
    seed: int
    max_iters: int | None
    progress: bool
    key_indicator: str
    log_every: int
    keep_epoch: bool


@dataclass
class EpochStats:
    """Per-epoch accumulators (losses summed per stage, seconds waiting for data and per step)."""

    sums: list[float] = field(default_factory=list)
    count: int = 0
    images: int = 0
    data_s: float = 0.0
    step_s: float = 0.0
    iters: int = 0
    stopped: bool = False

    def add(self, vals: list[float], images: int, data_s: float, step_s: float) -> None:
        """Account one step: its losses, batch size and timings."""
        self.sums = vals if not self.sums else [a + b for a, b in zip(self.sums, vals)]
        self.count += 1
        self.images += images
        self.data_s += data_s
        self.step_s += step_s


@dataclass
class _Window:
    """Steps since the last ``mode="train"`` log line."""

    vals: list[list[float]] = field(default_factory=list)
    data_s: float = 0.0
    step_s: float = 0.0


class Trainer:
    """One training run: state, one epoch at a time, evaluation and checkpoints."""

    def __init__(self, cfg: PoseConfig, d: Dist, opt: Options, *, device: str, train_ann: str | Path,
                 train_images: str | Path, model: nn.Module | None, init: str | Path | None, sync_bn: bool,
                 resume: str | Path | None, log_file: str | Path | None) -> None:
        from srpose.models import build_model

        self.cfg, self.d, self.opt = cfg, d, opt
        self.tc = cfg.train
        self.total_epochs, self.bs = int(self.tc["epochs"]), int(self.tc["batch_size"])
        self.dev = _device(device, d)
        self.pin = self.dev.type == "cuda"
        if d.main:
            opt.work_dir.mkdir(parents=True, exist_ok=True)
        if d.enabled:
            dist.barrier()
        seed_everything(seed_for(opt.seed, d.rank))

        self.dataset = make_dataset(cfg, train_ann, train_images, opt.seed)
        self.drop_last, self.steps_per_epoch = epoch_plan(len(self.dataset), self.bs, d.world_size)

        model = build_model(cfg) if model is None else model
        if init is not None:
            init_weights(model, init)  # its warning's stacklevel assumes this call depth
        self.memory_format = torch.channels_last if self.tc.get("channels_last") else torch.contiguous_format
        self.model = _place(model, self.dev, self.memory_format, sync_bn=sync_bn, d=d)
        self.head_type = str(cfg.model.get("keypoint_head", {}).get("type", ""))
        self.optimizer = make_optimizer(self.model, self.tc, float(self.tc["lr"]))
        self.scaler = torch.amp.GradScaler("cuda", enabled=opt.amp)
        self.criterion = JointsMSELoss(use_target_weight=True)

        self.start_epoch, self.global_iter = 0, 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._resume(resume)
        self.net: nn.Module = self.model
        if d.enabled:
            self.net = nn.parallel.DistributedDataParallel(self.model,
                                                           device_ids=[self.dev.index] if self.pin else None)

        self.latest_path = opt.work_dir / "latest.pth"
        self.best_path = opt.work_dir / "best.pth"
        self.wrote_latest = resume is not None and self.latest_path.exists()
        self.log_path = Path(log_file) if log_file is not None else opt.work_dir / "train_log.jsonl"
        self.log = JsonLog(self.log_path if d.main else None)
        if d.main:
            self._start_log(resume)
        self.cur_lr = lr_at(self.tc, self.start_epoch, self.global_iter)
        self.metrics: dict[str, float] = {}

    def _start_log(self, resume: str | Path | None) -> None:
        """``config.json`` and the log's ``mode="start"`` record (rank 0)."""
        atomic_write_json(self.opt.work_dir / "config.json", self.cfg.to_dict())
        self.log.write(mode="start", config=self.cfg.name, epochs=self.total_epochs, batch_size=self.bs,
                       world_size=self.d.world_size, num_samples=len(self.dataset),
                       steps_per_epoch=self.steps_per_epoch, start_epoch=self.start_epoch,
                       resume=None if resume is None else str(resume), device=str(self.dev), amp=self.opt.amp,
                       seed=self.opt.seed, timestamp=time.time())

    # -- state ------------------------------------------------------------------------------------------
    def _resume(self, path: str | Path) -> None:
        """Continue from resume checkpoint ``path``: weights, optimizer, scaler, schedule position and best."""
        meta, state = restore(path, self.model, self.optimizer, self.scaler if self.opt.amp else None,
                              self.cfg.name)
        self.start_epoch = int(meta.get("epoch", 0))
        # a run stopped mid-epoch restarts that epoch, with the iteration count of its start
        self.global_iter = int(meta.get("iter", 0)) - int(state.get("partial_epoch_iters", 0))
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.history = list(state.get("history", []))
        # stacklevel 3: the warnings are attributed to train(), which builds the trainer
        if int(state.get("world_size", self.d.world_size)) != self.d.world_size:
            warnings.warn(f"resuming a run trained on {state.get('world_size')} processes with "
                          f"{self.d.world_size}: the data order differs from an uninterrupted run", stacklevel=3)
        if self.start_epoch >= self.total_epochs:
            warnings.warn(f"checkpoint {path} has already completed {self.start_epoch} epochs of "
                          f"{self.total_epochs}: nothing to train; raise --epochs to continue", stacklevel=3)

    def checkpoint(self, epoch_done: int, partial: int) -> None:
        """``epoch_<n>.pth`` (when kept) and ``latest.pth``, with everything needed to resume (rank 0)."""
        if not self.d.main:
            return
        meta = dict(epoch=epoch_done, iter=self.global_iter, config=self.cfg.to_dict(),
                    time=time.strftime("%Y-%m-%d %H:%M:%S"))
        state = dict(best_metric=self.best_metric, best_epoch=self.best_epoch, key_indicator=self.opt.key_indicator,
                     seed=self.opt.seed, world_size=self.d.world_size, partial_epoch_iters=partial,
                     history=self.history)
        keep = self.opt.keep_epoch and partial == 0
        target = self.opt.work_dir / f"epoch_{epoch_done}.pth" if keep else self.latest_path
        write_checkpoint(self.model, target, self.latest_path, meta=meta, optimizer=self.optimizer,
                         scaler=self.scaler if self.opt.amp else None, trainer_state=state)
        self.wrote_latest = True

    # -- one epoch --------------------------------------------------------------------------------------
    def _step(self, batch: Mapping[str, Any], epoch: int) -> list[float]:
        """One optimizer step; returns [total loss, per-stage losses...]."""
        img = batch["img"].to(self.dev, non_blocking=self.pin, memory_format=self.memory_format)
        target = batch["target"].to(self.dev, non_blocking=self.pin)
        weight = batch["target_weight"].to(self.dev, non_blocking=self.pin)
        self.cur_lr = lr_at(self.tc, epoch, self.global_iter)
        for g in self.optimizer.param_groups:
            g["lr"] = self.cur_lr
        with torch.autocast("cuda", dtype=torch.float16) if self.opt.amp else contextlib.nullcontext():
            outputs = self.net(img)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        weights = stage_weights_for(self.head_type, len(outputs))
        loss, stage_losses = multi_stage_loss(outputs, target, weight, weights, criterion=self.criterion)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, iteration "
                                     f"{self.global_iter + 1}; lower --lr or use --grad-clip")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.opt.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_iter += 1
        if self.pin:
            torch.cuda.synchronize(self.dev)
        return [float(loss.detach())] + [float(x.detach()) for x in stage_losses]

    def train_epoch(self, epoch: int) -> EpochStats:
        """Train one epoch (or up to ``max_iters``), logging every ``log_every`` iterations; its statistics."""
        from tqdm import tqdm

        st = EpochStats()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.total_epochs}", unit="it",
                   disable=not (self.opt.progress and self.d.main), leave=False, file=sys.stderr)
        win = _Window()
        t_end = time.perf_counter()
        try:
            for batch in epoch_loader(self.dataset, epoch, seed=self.opt.seed, rank=self.d.rank,
                                      world_size=self.d.world_size, batch_size=self.bs, workers=self.opt.workers,
                                      drop_last=self.drop_last, pin=self.pin):
                t_data = time.perf_counter()
                vals = self._step(batch, epoch)
                t_step = time.perf_counter()
                st.add(vals, len(batch["img"]), t_data - t_end, t_step - t_end)
                st.iters += 1
                win.vals.append(vals)
                win.data_s += t_data - t_end
                win.step_s += t_step - t_end
                t_end = t_step
                bar.set_postfix(loss=f"{vals[0]:.3g}", lr=f"{self.cur_lr:.2e}", refresh=False)
                bar.update(1)
                if self.global_iter % self.opt.log_every == 0:
                    self._log_window(epoch, win)
                    win = _Window()
                if self.opt.max_iters is not None and self.global_iter >= self.opt.max_iters:
                    st.stopped = True
                    break
        finally:
            bar.close()
        if st.count == 0:
            raise RuntimeError(f"epoch {epoch + 1} ran no iteration; the data loader is empty")
        return st

    def _log_window(self, epoch: int, win: _Window) -> None:
        """The ``mode="train"`` record: mean losses and timings of the steps in ``win``."""
        mean = np.mean(win.vals, axis=0).tolist()
        self.log.write(mode="train", epoch=epoch + 1, iter=self.global_iter, lr=self.cur_lr, loss=mean[0],
                       stage_losses=mean[1:], time=win.step_s / len(win.vals), data_time=win.data_s / len(win.vals),
                       data_time_share=win.data_s / max(win.step_s, 1e-9), timestamp=time.time())

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Run ``eval_fn``; keeps ``best.pth`` when the key indicator improves."""
        if self.pin:
            torch.cuda.empty_cache()
        metrics = run_eval(self.opt.eval_fn, self.model, self.d)  # type: ignore[arg-type]
        key = self.opt.key_indicator
        if key not in metrics:
            raise KeyError(f"eval_fn returned {sorted(metrics)} but the key indicator is {key!r}")
        if self.best_metric is None or metrics[key] > self.best_metric:
            self.best_metric, self.best_epoch = metrics[key], epoch + 1
            if self.d.main:
                save_checkpoint(self.model, self.best_path, meta=dict(
                    epoch=epoch + 1, iter=self.global_iter, config=self.cfg.to_dict(), **{key: metrics[key]}))
        self.metrics = metrics
        return metrics

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train from the start (or resumed) epoch to the last one, or until ``max_iters``; the run's result."""
        d, opt = self.d, self.opt
        epochs_done, final_loss = self.start_epoch, float("nan")
        images = data_s = step_s = 0.0
        try:
            for epoch in range(self.start_epoch, self.total_epochs):
                t0 = time.perf_counter()
                st = self.train_epoch(epoch)
                images, data_s, step_s = images + st.images, data_s + st.data_s, step_s + st.step_s
                means = mean_over_ranks([v / st.count for v in st.sums], d)  # the logged losses: mean of ranks
                final_loss = means[0]
                sync_buffers(self.model, d)
                partial = st.iters if (st.stopped and st.iters < self.steps_per_epoch) else 0
                epochs_done = epoch + 1 if partial == 0 else epoch
                summary = self._summary(epoch, st, means, time.perf_counter() - t0)
                last = epoch + 1 == self.total_epochs or st.stopped
                if opt.eval_fn is not None and partial == 0 and (
                        last or (opt.eval_every and (epoch + 1) % opt.eval_every == 0)):
                    summary["metrics"] = self.evaluate(epoch)
                self.history.append(summary)
                self.log.write(mode="epoch", timestamp=time.time(), **summary)
                if opt.progress and d.main:
                    print(epoch_line(summary, self.total_epochs, opt.key_indicator, self.best_epoch),
                          file=sys.stderr, flush=True)
                if (opt.checkpoint_every and (epoch + 1) % opt.checkpoint_every == 0) or last:
                    self.checkpoint(epochs_done, partial)
                if d.enabled:
                    dist.barrier()
                if st.stopped:
                    break
        finally:
            self.log.close()
        return self._result(epochs_done, final_loss, images, data_s, step_s)

    def _summary(self, epoch: int, st: EpochStats, means: list[float], seconds: float) -> dict[str, Any]:
        """The epoch's history entry (and ``mode="epoch"`` log record) before evaluation."""
        return dict(epoch=epoch + 1, iter=self.global_iter, lr=self.cur_lr, loss=means[0], stage_losses=means[1:],
                    seconds=seconds, images_per_s=st.images * self.d.world_size / max(st.step_s, 1e-9),
                    data_time_share=st.data_s / max(st.step_s, 1e-9))

    def _result(self, epochs_done: int, final_loss: float, images: float, data_s: float,
                step_s: float) -> TrainResult:
        """The :class:`TrainResult` of the run (``images`` / ``data_s`` / ``step_s``: totals over the epochs run)."""
        d = self.d
        return TrainResult(
            work_dir=str(self.opt.work_dir), epochs=epochs_done, iters=self.global_iter, final_loss=final_loss,
            latest=str(self.latest_path) if self.wrote_latest else None,
            best=str(self.best_path) if self.best_epoch is not None else None, best_metric=self.best_metric,
            best_epoch=self.best_epoch, metrics=self.metrics, history=self.history,
            images_per_s=images * d.world_size / step_s if step_s > 0 else 0.0,
            data_time_share=data_s / step_s if step_s > 0 else 0.0, weights_digest=weights_digest(self.model),
            rank=d.rank, world_size=d.world_size, log_file=str(self.log_path) if d.main else None)


def _device(device: str, d: Dist) -> torch.device:
    """The torch device of this rank (``cuda:<local rank>`` under DDP on CUDA, made current)."""
    dev = torch.device(device)
    if dev.type == "cuda" and d.enabled:
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    return dev


def _place(model: nn.Module, dev: torch.device, memory_format: torch.memory_format, *, sync_bn: bool,
           d: Dist) -> nn.Module:
    """``model`` on ``dev`` in ``memory_format`` (SyncBatchNorm under DDP when asked), in training mode."""
    model.to(dev)
    model.to(memory_format=memory_format)
    if sync_bn and d.enabled:
        if dev.type != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); drop "
                             "--sync-bn on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    return model
