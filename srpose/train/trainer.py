"""The training loop of the official recipe (mmpose 0.x / mmcv semantics), single process or ``torchrun``.

Schedule: linear warm-up over the first ``warmup_iters`` iterations, then the step policy by epoch
(``lr = base * gamma ** #{s in lr_steps: epoch >= s}``, epochs counted from 0). The learning rate is a pure
function of (epoch, global iteration), and every epoch's shuffling and augmentation is seeded from
(seed, epoch, rank), so a resumed run continues exactly like an uninterrupted one.

Checkpoints use the official layout ``{'state_dict', 'meta': {'epoch', 'iter', 'config'}}`` (``epoch`` counts
completed epochs, as mmcv) plus ``optimizer``, ``scaler`` and ``trainer`` entries for resuming.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from srpose._io import atomic_path, atomic_write_json
from srpose.checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from srpose.config import PoseConfig, get_config
from srpose.train.loss import JointsMSELoss, multi_stage_loss, stage_weights_for

__all__ = ["TrainResult", "ShardedEval", "EvalFn", "train", "lr_at", "spawn_train", "weights_digest"]

_AUG_KEYS = ("flip_prob", "num_joints_half_body", "prob_half_body", "rot_factor", "scale_factor")


# ---------------------------------------------------------------------------------------------- public types
@dataclass
class ShardedEval:
    """Evaluation split across ranks, as mmpose's ``multi_gpu_test``: every rank runs ``predict(model, indices)``
    over its share of ``range(num_items)`` (one picklable result per index); rank 0 gathers the results in index
    order and calls ``score(results) -> metrics``. In a single process it is ``score(predict(model, all))``."""

    num_items: int
    predict: Callable[[nn.Module, Sequence[int]], Sequence[Any]]
    score: Callable[[list], Mapping[str, float]]


#: ``eval_fn(model) -> metrics`` (run on rank 0 only) or a :class:`ShardedEval` (run on every rank).
EvalFn = Union[Callable[[nn.Module], Mapping[str, float]], ShardedEval]


@dataclass
class TrainResult:
    """What a training run produced (the same on every rank, except ``rank``)."""

    work_dir: str
    epochs: int  # completed epochs
    iters: int  # optimizer steps in all
    final_loss: float  # mean loss over the last epoch run (all ranks)
    latest: str | None  # latest checkpoint, None if none was written
    best: str | None  # best checkpoint by ``key_indicator``, None without evaluation
    best_metric: float | None
    best_epoch: int | None
    metrics: dict[str, float] = field(default_factory=dict)  # of the last evaluation
    history: list[dict[str, Any]] = field(default_factory=list)  # one summary per epoch run
    images_per_s: float = 0.0  # training throughput of this run (all ranks together)
    data_time_share: float = 0.0  # share of step time spent waiting for data (rank 0)
    weights_digest: str = ""  # sha256 of the final weights (equal across ranks under DDP)
    rank: int = 0
    world_size: int = 1
    log_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- schedule
def lr_at(train_cfg: Mapping[str, Any], epoch: int, it: int, base_lr: float | None = None) -> float:
    """Learning rate at 0-based ``epoch`` and global iteration ``it`` (mmcv step policy + linear warm-up)."""
    base = float(train_cfg["lr"] if base_lr is None else base_lr)
    steps = train_cfg.get("lr_steps") or ()
    gamma = float(train_cfg.get("lr_gamma", 0.1))
    regular = base * gamma ** sum(1 for s in steps if epoch >= int(s))
    warm = int(train_cfg.get("warmup_iters") or 0)
    if warm > 0 and it < warm:
        ratio = float(train_cfg.get("warmup_ratio", 0.001))
        k = (1 - it / warm) * (1 - ratio)
        return regular * (1 - k)
    return regular


def _make_optimizer(model: nn.Module, train_cfg: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    name = str(train_cfg.get("optimizer", "Adam"))
    wd = float(train_cfg.get("weight_decay", 0.0) or 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=float(train_cfg.get("momentum", 0.9)), weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not supported; use Adam, AdamW or SGD in the config's train section")


def _grad_clip_norm(value: Any) -> float | None:
    if value in (None, False, 0):
        return None
    if isinstance(value, Mapping):
        if "max_norm" not in value:
            raise ValueError(f"grad_clip {dict(value)} lacks max_norm; use e.g. dict(max_norm=35, norm_type=2)")
        return float(value["max_norm"])
    return float(value)


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return _Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, owns_group=owns)


def _broadcast(obj: Any, d: _Dist) -> Any:
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sync_buffers(model: nn.Module, d: _Dist) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so all replicas equal the checkpoint."""
    if d.enabled:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def _run_eval(eval_fn: EvalFn, model: nn.Module, d: _Dist) -> dict[str, float]:
    """Metrics of ``model`` (the same dict on every rank); the model is left in training mode."""
    try:
        if isinstance(eval_fn, ShardedEval):
            indices = list(range(d.rank, eval_fn.num_items, d.world_size))
            part = list(eval_fn.predict(model, indices))
            if len(part) != len(indices):
                raise RuntimeError(f"ShardedEval.predict returned {len(part)} results for {len(indices)} indices")
            if d.enabled:
                parts: list[Any] = [None] * d.world_size
                dist.all_gather_object(parts, part)
            else:
                parts = [part]
            metrics = None
            if d.main:
                ordered: list[Any] = [None] * eval_fn.num_items
                for r, pr in enumerate(parts):
                    for i, res in zip(range(r, eval_fn.num_items, d.world_size), pr):
                        ordered[i] = res
                metrics = {k: float(v) for k, v in eval_fn.score(ordered).items()}
        else:
            metrics = {k: float(v) for k, v in eval_fn(model).items()} if d.main else None
        return _broadcast(metrics, d)
    finally:
        model.train()


# ---------------------------------------------------------------------------------------------- helpers
def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, then bytes), for comparing replicas."""
    h = hashlib.sha256()
    m = model.module if hasattr(model, "module") else model
    for k, v in sorted(m.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _make_dataset(cfg: PoseConfig, ann: str | Path, images: str | Path, seed: int) -> Any:
    from srpose.data import DATASET_CLASSES

    name = cfg.data.get("dataset", "coco")
    if name not in DATASET_CLASSES:
        raise ValueError(f"dataset {name!r} of config {cfg.name} cannot be trained on; "
                         f"expected one of {sorted(DATASET_CLASSES)}")
    data_cfg = dict(cfg.data)
    for k in _AUG_KEYS:
        if k in cfg.train and cfg.train[k] is not None:
            data_cfg[k] = cfg.train[k]
    kwargs: dict[str, Any] = dict(train=True)
    if name != "mpii":
        kwargs["seed"] = seed
    return DATASET_CLASSES[name](ann, images, data_cfg, **kwargs)


class _JsonLog:
    """Append-only JSON lines (rank 0); each line is flushed so a crash loses at most the line being written."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, **rec: Any) -> None:
        if self._f is not None:
            self._f.write(json.dumps(rec, default=float) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def _load_resume(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(f"resume checkpoint {path} cannot be read ({str(e).splitlines()[0] if str(e) else e})")
    if not isinstance(obj, Mapping) or "state_dict" not in obj or "meta" not in obj:
        raise CheckpointError(f"resume checkpoint {path} lacks 'state_dict'/'meta'; resume needs a checkpoint "
                              "written by `srpose train` (use --init to start from plain weights)")
    if "optimizer" not in obj:
        raise CheckpointError(f"resume checkpoint {path} has no optimizer state (it is a weights-only checkpoint); "
                              "use --init to start a new run from its weights")
    return dict(obj)


# ---------------------------------------------------------------------------------------------- train
def train(cfg: PoseConfig | str, *, train_ann: str | Path, train_images: str | Path, work_dir: str | Path,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, workers: int = 2,
          amp: bool = False, grad_clip: float | None = None, resume: str | Path | None = None,
          checkpoint_every: int = 1, eval_every: int = 0, eval_fn: EvalFn | None = None, seed: int = 0,
          device: str = "cpu", sync_bn: bool = False, max_iters: int | None = None, progress: bool = True,
          log_file: str | Path | None = None, init: str | Path | None = None, model: nn.Module | None = None,
          key_indicator: str = "AP", log_every: int = 20, keep_epoch_checkpoints: bool = True) -> TrainResult:
    """Train a top-down model with the official recipe of ``cfg.train`` (overridden by the arguments).

    ``batch_size`` is per process. ``eval_fn`` runs every ``eval_every`` epochs and after the last one; the best
    ``key_indicator`` value is kept as ``best.pth``. ``resume`` continues a run from one of its checkpoints;
    ``init`` starts a new run from a checkpoint's weights (keys that fit). ``max_iters`` stops early (tests,
    benchmarks). Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel.
    """
    cfg = get_config(cfg)
    tc = dict(cfg.train)
    if epochs is not None:
        tc["epochs"] = int(epochs)
    if batch_size is not None:
        tc["batch_size"] = int(batch_size)
    if lr is not None:
        tc["lr"] = float(lr)
    if grad_clip is not None:
        tc["grad_clip"] = grad_clip
    cfg.train = tc
    total_epochs, bs = int(tc["epochs"]), int(tc["batch_size"])
    for name, value, low in (("epochs", total_epochs, 1), ("batch_size", bs, 1), ("workers", workers, 0),
                             ("checkpoint_every", checkpoint_every, 0), ("eval_every", eval_every, 0),
                             ("log_every", log_every, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if max_iters is not None and max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if float(tc["lr"]) <= 0:
        raise ValueError(f"lr must be positive, got {tc['lr']}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available: use --device cpu")
    if amp and not device.startswith("cuda"):
        raise ValueError("--amp (float16 mixed precision) needs a CUDA device: add --device cuda or drop --amp")
    clip = _grad_clip_norm(tc.get("grad_clip"))

    d = _setup_distributed(device)
    try:
        return _train(cfg, d, train_ann=train_ann, train_images=train_images, work_dir=Path(work_dir),
                      workers=workers, amp=amp, clip=clip, resume=resume, checkpoint_every=checkpoint_every,
                      eval_every=eval_every, eval_fn=eval_fn, seed=seed, device=device, sync_bn=sync_bn,
                      max_iters=max_iters, progress=progress, log_file=log_file, init=init, model=model,
                      key_indicator=key_indicator, log_every=log_every, keep_epoch=keep_epoch_checkpoints)
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: PoseConfig, d: _Dist, *, train_ann: str | Path, train_images: str | Path, work_dir: Path,
           workers: int, amp: bool, clip: float | None, resume: str | Path | None, checkpoint_every: int,
           eval_every: int, eval_fn: EvalFn | None, seed: int, device: str, sync_bn: bool, max_iters: int | None,
           progress: bool, log_file: str | Path | None, init: str | Path | None, model: nn.Module | None,
           key_indicator: str, log_every: int, keep_epoch: bool) -> TrainResult:
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from srpose.data import collate
    from srpose.models import build_model

    tc = cfg.train
    total_epochs, bs = int(tc["epochs"]), int(tc["batch_size"])
    dev = torch.device(device)
    if dev.type == "cuda" and d.enabled:
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if d.main:
        work_dir.mkdir(parents=True, exist_ok=True)
    if d.enabled:
        dist.barrier()
    _seed_everything(_seed_for(seed, d.rank))

    dataset = _make_dataset(cfg, train_ann, train_images, seed)
    drop_last = len(dataset) >= bs * d.world_size * 2  # never a 1-sample batch (BatchNorm) when data allows
    steps_per_epoch = (len(dataset) // d.world_size) // bs if drop_last else math.ceil(
        math.ceil(len(dataset) / d.world_size) / bs)
    if steps_per_epoch < 1:
        raise ValueError(f"the training set has {len(dataset)} person boxes, fewer than one batch of {bs} per "
                         f"process; lower --batch")

    if model is None:
        model = build_model(cfg)
    if init is not None:
        _init_weights(model, init)
    model.to(dev)
    if sync_bn and d.enabled:
        if dev.type != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); drop --sync-bn "
                             "on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    head_type = str(cfg.model.get("keypoint_head", {}).get("type", ""))
    optimizer = _make_optimizer(model, tc, float(tc["lr"]))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    criterion = JointsMSELoss(use_target_weight=True)

    start_epoch, global_iter = 0, 0
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = []
    if resume is not None:
        ck = _load_resume(resume)
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ck["state_dict"].items()}
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"resume checkpoint {resume} does not fit model {cfg.name}: "
                                  f"{str(e).splitlines()[0]}") from None
        optimizer.load_state_dict(ck["optimizer"])
        if amp and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        meta, state = dict(ck["meta"]), dict(ck.get("trainer") or {})
        start_epoch = int(meta.get("epoch", 0))
        global_iter = int(meta.get("iter", 0)) - int(state.get("partial_epoch_iters", 0))
        best_metric, best_epoch = state.get("best_metric"), state.get("best_epoch")
        history = list(state.get("history", []))
        if int(state.get("world_size", d.world_size)) != d.world_size:
            warnings.warn(f"resuming a run trained on {state.get('world_size')} processes with {d.world_size}: "
                          "the data order differs from an uninterrupted run", stacklevel=2)
        if start_epoch >= total_epochs:
            warnings.warn(f"checkpoint {resume} has already completed {start_epoch} epochs of {total_epochs}: "
                          "nothing to train; raise --epochs to continue", stacklevel=2)
    net: nn.Module = model
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    log_path = Path(log_file) if log_file is not None else work_dir / "train_log.jsonl"
    log = _JsonLog(log_path if d.main else None)
    if d.main:
        atomic_write_json(work_dir / "config.json", cfg.to_dict())
        log.write(mode="start", config=cfg.name, epochs=total_epochs, batch_size=bs, world_size=d.world_size,
                  num_samples=len(dataset), steps_per_epoch=steps_per_epoch, start_epoch=start_epoch,
                  resume=None if resume is None else str(resume), device=str(dev), amp=amp, seed=seed,
                  timestamp=time.time())

    latest_path = work_dir / "latest.pth"
    best_path = work_dir / "best.pth"
    wrote_latest = resume is not None and latest_path.exists()
    metrics: dict[str, float] = {}
    final_loss = float("nan")
    epochs_done = start_epoch
    cur_lr = lr_at(tc, start_epoch, global_iter)
    n_images, t_train, data_secs, step_secs = 0, 0.0, 0.0, 0.0
    stop = False
    pin = dev.type == "cuda"

    def checkpoint(epoch_done: int, partial: int) -> None:
        nonlocal wrote_latest
        if not d.main:
            return
        meta = dict(epoch=epoch_done, iter=global_iter, config=cfg.to_dict(), time=time.strftime("%Y-%m-%d %H:%M:%S"))
        extra = dict(optimizer=optimizer.state_dict(),
                     trainer=dict(best_metric=best_metric, best_epoch=best_epoch, key_indicator=key_indicator,
                                  seed=seed, world_size=d.world_size, partial_epoch_iters=partial,
                                  history=history))
        if amp:
            extra["scaler"] = scaler.state_dict()
        target = work_dir / f"epoch_{epoch_done}.pth" if (keep_epoch and partial == 0) else latest_path
        save_checkpoint(model, target, meta=meta, extra=extra)
        if target != latest_path:
            with atomic_path(latest_path) as tmp:
                shutil.copyfile(target, tmp)
        wrote_latest = True

    try:
        for epoch in range(start_epoch, total_epochs):
            epoch_seed = _seed_for(seed, epoch, d.rank)
            torch.manual_seed(epoch_seed)  # the data layer seeds its augmentation from torch.initial_seed()
            gen = torch.Generator()
            gen.manual_seed(epoch_seed)
            if d.enabled:
                sampler = DistributedSampler(dataset, num_replicas=d.world_size, rank=d.rank, shuffle=True,
                                             seed=seed, drop_last=drop_last)
                sampler.set_epoch(epoch)
                loader = DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=workers,
                                    collate_fn=collate, drop_last=drop_last, generator=gen, pin_memory=pin)
            else:
                loader = DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers, collate_fn=collate,
                                    drop_last=drop_last, generator=gen, pin_memory=pin)
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{total_epochs}", unit="it",
                       disable=not (progress and d.main), leave=False, file=sys.stderr)
            sums = None
            count = 0
            ep_data, ep_step, ep_images = 0.0, 0.0, 0
            ep_t0 = time.perf_counter()
            t_end = time.perf_counter()
            win_losses: list[list[float]] = []
            win_data, win_step = 0.0, 0.0
            it_in_epoch = 0
            for batch in loader:
                t_data = time.perf_counter()
                img = batch["img"].to(dev, non_blocking=pin)
                target = batch["target"].to(dev, non_blocking=pin)
                weight = batch["target_weight"].to(dev, non_blocking=pin)
                cur_lr = lr_at(tc, epoch, global_iter)
                for g in optimizer.param_groups:
                    g["lr"] = cur_lr
                with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
                    outputs = net(img)
                if isinstance(outputs, torch.Tensor):
                    outputs = [outputs]
                weights = stage_weights_for(head_type, len(outputs))
                loss, stage_losses = multi_stage_loss(outputs, target, weight, weights, criterion=criterion)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, iteration "
                                             f"{global_iter + 1}; lower --lr or use --grad-clip")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
                global_iter += 1
                it_in_epoch += 1
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t_step = time.perf_counter()
                vals = [float(loss.detach())] + [float(s.detach()) for s in stage_losses]
                sums = vals if sums is None else [a + b for a, b in zip(sums, vals)]
                count += 1
                win_losses.append(vals)
                ep_data += t_data - t_end
                ep_step += t_step - t_end
                win_data += t_data - t_end
                win_step += t_step - t_end
                ep_images += len(img)
                t_end = t_step
                bar.set_postfix(loss=f"{vals[0]:.3g}", lr=f"{cur_lr:.2e}", refresh=False)
                bar.update(1)
                if global_iter % log_every == 0:
                    mean = np.mean(win_losses, axis=0).tolist()
                    n_win = len(win_losses)
                    log.write(mode="train", epoch=epoch + 1, iter=global_iter, lr=cur_lr, loss=mean[0],
                              stage_losses=mean[1:], time=win_step / n_win, data_time=win_data / n_win,
                              data_time_share=win_data / max(win_step, 1e-9), timestamp=time.time())
                    win_losses, win_data, win_step = [], 0.0, 0.0
                if max_iters is not None and global_iter >= max_iters:
                    stop = True
                    break
            bar.close()
            ep_secs = time.perf_counter() - ep_t0
            n_images += ep_images
            t_train += ep_step
            data_secs += ep_data
            step_secs += ep_step
            if count == 0:
                raise RuntimeError(f"epoch {epoch + 1} ran no iteration; the data loader is empty")
            means = [s / count for s in sums]
            if d.enabled:  # average the epoch losses over ranks for the log
                t = torch.tensor(means, dtype=torch.float64)
                dist.all_reduce(t)
                means = (t / d.world_size).tolist()
            final_loss = means[0]
            _sync_buffers(model, d)
            partial = it_in_epoch if (stop and it_in_epoch < steps_per_epoch) else 0
            epoch_done = epoch + 1 if partial == 0 else epoch
            epochs_done = epoch_done
            summary = dict(epoch=epoch + 1, iter=global_iter, lr=cur_lr,
                           loss=means[0], stage_losses=means[1:], seconds=ep_secs,
                           images_per_s=ep_images * d.world_size / max(ep_step, 1e-9),
                           data_time_share=ep_data / max(ep_step, 1e-9))
            last = (epoch + 1 == total_epochs) or stop
            if eval_fn is not None and partial == 0 and (last or (eval_every and (epoch + 1) % eval_every == 0)):
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                metrics = _run_eval(eval_fn, model, d)
                if key_indicator not in metrics:
                    raise KeyError(f"eval_fn returned {sorted(metrics)} but the key indicator is {key_indicator!r}")
                summary["metrics"] = metrics
                value = metrics[key_indicator]
                if best_metric is None or value > best_metric:
                    best_metric, best_epoch = value, epoch + 1
                    if d.main:
                        save_checkpoint(model, best_path, meta=dict(epoch=epoch + 1, iter=global_iter,
                                                                    config=cfg.to_dict(),
                                                                    **{key_indicator: value}))
            history.append(summary)
            if d.main:
                log.write(mode="epoch", timestamp=time.time(), **summary)
            if (checkpoint_every and (epoch + 1) % checkpoint_every == 0) or last:
                checkpoint(epoch_done, partial)
            if d.enabled:
                dist.barrier()
            if stop:
                break
    finally:
        log.close()

    digest = weights_digest(model)
    return TrainResult(
        work_dir=str(work_dir), epochs=epochs_done, iters=global_iter,
        final_loss=final_loss, latest=str(latest_path) if wrote_latest else None,
        best=str(best_path) if best_epoch is not None else None, best_metric=best_metric, best_epoch=best_epoch,
        metrics=metrics, history=history,
        images_per_s=n_images * d.world_size / t_train if t_train > 0 else 0.0,
        data_time_share=data_secs / step_secs if step_secs > 0 else 0.0, weights_digest=digest, rank=d.rank,
        world_size=d.world_size, log_file=str(log_path) if d.main else None)


def _init_weights(model: nn.Module, path: str | Path) -> None:
    """Load the entries of checkpoint ``path`` that fit ``model`` (same name and shape); error if none fit."""
    sd, _ = read_state_dict(path)
    own = model.state_dict()
    fit = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise CheckpointError(f"no weight of {path} fits the model (no shared key with the same shape); "
                              "is it a checkpoint of another architecture?")
    if len(fit) == len(own) == len(sd):
        load_checkpoint(model, path, strict=True)
        return
    missing = len(own) - len(fit)
    warnings.warn(f"--init {path}: loaded {len(fit)} of {len(own)} model tensors; {missing} keep their "
                  f"initialisation, {len(sd) - len(fit)} checkpoint tensors unused", stacklevel=3)
    model.load_state_dict(fit, strict=False)


# ---------------------------------------------------------------------------------------------- spawn (no torchrun)
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(rank: int, world_size: int, port: int, out_dir: str, threads: int, cfg: Any,
                 kwargs: dict[str, Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    res = train(cfg, **kwargs)
    atomic_write_json(Path(out_dir) / f"rank{rank}.json", res.to_dict())


def spawn_train(world_size: int, cfg: PoseConfig | str, **kwargs: Any) -> list[TrainResult]:
    """Run :func:`train` in ``world_size`` processes on this machine (gloo on CPU, nccl on CUDA) without
    ``torchrun``; returns every rank's :class:`TrainResult`. ``kwargs`` (``eval_fn`` included) must pickle."""
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    threads = max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory(prefix="srpose-spawn-") as out:
        mp.spawn(_spawn_entry, args=(world_size, _free_port(), out, threads, cfg, kwargs), nprocs=world_size,
                 join=True)
        results = []
        for r in range(world_size):
            d = json.loads((Path(out) / f"rank{r}.json").read_text())
            results.append(TrainResult(**d))
    return results
