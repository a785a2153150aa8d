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
          key_indicator: str = "AP", log_every: int = 20, keep_epoch_checkpoints: bool = True,
          channels_last: bool | None = None) -> TrainResult:
    """Train a top-down model with the official recipe of ``cfg.train`` (overridden by the arguments).

    ``batch_size`` is per process. ``eval_fn`` runs every ``eval_every`` epochs and after the last one; the best
    ``key_indicator`` value is kept as ``best.pth``. ``resume`` continues a run from one of its checkpoints;
    ``init`` starts a new run from a checkpoint's weights (keys that fit). ``max_iters`` stops early (tests,
    benchmarks). ``channels_last`` (default: ``cfg.train``'s) trains with NHWC activations, the same weights in
    another memory layout (checkpoints are saved in the usual layout). Launched by ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel.
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
    if channels_last is not None:
        tc["channels_last"] = bool(channels_last)
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
        opts = _Options(work_dir=Path(work_dir), workers=workers, amp=amp, clip=clip,
                        checkpoint_every=checkpoint_every, eval_every=eval_every, eval_fn=eval_fn, seed=seed,
                        max_iters=max_iters, progress=progress, key_indicator=key_indicator, log_every=log_every,
                        keep_epoch=keep_epoch_checkpoints)
        return _Trainer(cfg, d, opts, device=device, train_ann=train_ann, train_images=train_images, model=model,
                        init=init, sync_bn=sync_bn, resume=resume, log_file=log_file).run()
    finally:
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Options:
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
class _EpochStats:
    """Per-epoch accumulators (losses summed per stage, seconds waiting for data and per step)."""

    sums: list[float] = field(default_factory=list)
    count: int = 0
    images: int = 0
    data_s: float = 0.0
    step_s: float = 0.0
    iters: int = 0
    stopped: bool = False

    def add(self, vals: list[float], images: int, data_s: float, step_s: float) -> None:
        self.sums = vals if not self.sums else [a + b for a, b in zip(self.sums, vals)]
        self.count += 1
        self.images += images
        self.data_s += data_s
        self.step_s += step_s


class _Trainer:
    """One training run: state, one epoch at a time, evaluation and checkpoints."""

    def __init__(self, cfg: PoseConfig, d: _Dist, opt: _Options, *, device: str, train_ann: str | Path,
                 train_images: str | Path, model: nn.Module | None, init: str | Path | None, sync_bn: bool,
                 resume: str | Path | None, log_file: str | Path | None) -> None:
        from srpose.models import build_model

        self.cfg, self.d, self.opt = cfg, d, opt
        self.tc = cfg.train
        self.total_epochs, self.bs = int(self.tc["epochs"]), int(self.tc["batch_size"])
        dev = torch.device(device)
        if dev.type == "cuda" and d.enabled:
            dev = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(dev)
        self.dev = dev
        self.pin = dev.type == "cuda"
        if d.main:
            opt.work_dir.mkdir(parents=True, exist_ok=True)
        if d.enabled:
            dist.barrier()
        _seed_everything(_seed_for(opt.seed, d.rank))

        self.dataset = _make_dataset(cfg, train_ann, train_images, opt.seed)
        n = len(self.dataset)
        self.drop_last = n >= self.bs * d.world_size * 2  # never a 1-sample batch (BatchNorm) when data allows
        per_rank = n // d.world_size if self.drop_last else math.ceil(n / d.world_size)
        self.steps_per_epoch = per_rank // self.bs if self.drop_last else math.ceil(per_rank / self.bs)
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training set has {n} person boxes, fewer than one batch of {self.bs} per "
                             "process; lower --batch")

        model = build_model(cfg) if model is None else model
        if init is not None:
            _init_weights(model, init)
        model.to(dev)
        self.memory_format = torch.channels_last if self.tc.get("channels_last") else torch.contiguous_format
        model.to(memory_format=self.memory_format)
        if sync_bn and d.enabled:
            if dev.type != "cuda":
                raise ValueError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); drop "
                                 "--sync-bn on CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.train()
        self.model = model
        self.head_type = str(cfg.model.get("keypoint_head", {}).get("type", ""))
        self.optimizer = _make_optimizer(model, self.tc, float(self.tc["lr"]))
        self.scaler = torch.amp.GradScaler("cuda", enabled=opt.amp)
        self.criterion = JointsMSELoss(use_target_weight=True)

        self.start_epoch, self.global_iter = 0, 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._resume(resume)
        self.net: nn.Module = model
        if d.enabled:
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if self.pin else None)

        self.latest_path = opt.work_dir / "latest.pth"
        self.best_path = opt.work_dir / "best.pth"
        self.wrote_latest = resume is not None and self.latest_path.exists()
        self.log_path = Path(log_file) if log_file is not None else opt.work_dir / "train_log.jsonl"
        self.log = _JsonLog(self.log_path if d.main else None)
        if d.main:
            atomic_write_json(opt.work_dir / "config.json", cfg.to_dict())
            self.log.write(mode="start", config=cfg.name, epochs=self.total_epochs, batch_size=self.bs,
                           world_size=d.world_size, num_samples=n, steps_per_epoch=self.steps_per_epoch,
                           start_epoch=self.start_epoch, resume=None if resume is None else str(resume),
                           device=str(dev), amp=opt.amp, seed=opt.seed, timestamp=time.time())
        self.cur_lr = lr_at(self.tc, self.start_epoch, self.global_iter)
        self.metrics: dict[str, float] = {}

    # -- state ------------------------------------------------------------------------------------------
    def _resume(self, path: str | Path) -> None:
        ck = _load_resume(path)
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ck["state_dict"].items()}
        try:
            self.model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"resume checkpoint {path} does not fit model {self.cfg.name}: "
                                  f"{str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.opt.amp and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        meta, state = dict(ck["meta"]), dict(ck.get("trainer") or {})
        self.start_epoch = int(meta.get("epoch", 0))
        # a run stopped mid-epoch restarts that epoch, with the iteration count of its start
        self.global_iter = int(meta.get("iter", 0)) - int(state.get("partial_epoch_iters", 0))
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.history = list(state.get("history", []))
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
        extra: dict[str, Any] = dict(
            optimizer=self.optimizer.state_dict(),
            trainer=dict(best_metric=self.best_metric, best_epoch=self.best_epoch,
                         key_indicator=self.opt.key_indicator, seed=self.opt.seed, world_size=self.d.world_size,
                         partial_epoch_iters=partial, history=self.history))
        if self.opt.amp:
            extra["scaler"] = self.scaler.state_dict()
        keep = self.opt.keep_epoch and partial == 0
        target = self.opt.work_dir / f"epoch_{epoch_done}.pth" if keep else self.latest_path
        save_checkpoint(self.model, target, meta=meta, extra=extra)
        if target != self.latest_path:
            with atomic_path(self.latest_path) as tmp:
                shutil.copyfile(target, tmp)
        self.wrote_latest = True

    # -- one epoch --------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> Any:
        """This epoch's loader; shuffling, worker seeds and in-process augmentation seeded by (seed, epoch, rank)."""
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        from srpose.data import collate

        epoch_seed = _seed_for(self.opt.seed, epoch, self.d.rank)
        torch.manual_seed(epoch_seed)  # the data layer seeds in-process augmentation from torch.initial_seed()
        gen = torch.Generator()
        gen.manual_seed(epoch_seed)
        kw: dict[str, Any] = dict(batch_size=self.bs, num_workers=self.opt.workers, collate_fn=collate,
                                  drop_last=self.drop_last, generator=gen, pin_memory=self.pin)
        if self.d.enabled:
            sampler = DistributedSampler(self.dataset, num_replicas=self.d.world_size, rank=self.d.rank,
                                         shuffle=True, seed=self.opt.seed, drop_last=self.drop_last)
            sampler.set_epoch(epoch)
            return DataLoader(self.dataset, sampler=sampler, **kw)
        return DataLoader(self.dataset, shuffle=True, **kw)

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

    def train_epoch(self, epoch: int) -> _EpochStats:
        from tqdm import tqdm

        st = _EpochStats()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.total_epochs}", unit="it",
                   disable=not (self.opt.progress and self.d.main), leave=False, file=sys.stderr)
        win: list[list[float]] = []
        win_data = win_step = 0.0
        t_end = time.perf_counter()
        try:
            for batch in self._loader(epoch):
                t_data = time.perf_counter()
                vals = self._step(batch, epoch)
                t_step = time.perf_counter()
                st.add(vals, len(batch["img"]), t_data - t_end, t_step - t_end)
                st.iters += 1
                win.append(vals)
                win_data += t_data - t_end
                win_step += t_step - t_end
                t_end = t_step
                bar.set_postfix(loss=f"{vals[0]:.3g}", lr=f"{self.cur_lr:.2e}", refresh=False)
                bar.update(1)
                if self.global_iter % self.opt.log_every == 0:
                    mean = np.mean(win, axis=0).tolist()
                    self.log.write(mode="train", epoch=epoch + 1, iter=self.global_iter, lr=self.cur_lr,
                                   loss=mean[0], stage_losses=mean[1:], time=win_step / len(win),
                                   data_time=win_data / len(win), data_time_share=win_data / max(win_step, 1e-9),
                                   timestamp=time.time())
                    win, win_data, win_step = [], 0.0, 0.0
                if self.opt.max_iters is not None and self.global_iter >= self.opt.max_iters:
                    st.stopped = True
                    break
        finally:
            bar.close()
        if st.count == 0:
            raise RuntimeError(f"epoch {epoch + 1} ran no iteration; the data loader is empty")
        return st

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Run ``eval_fn``; keeps ``best.pth`` when the key indicator improves."""
        if self.pin:
            torch.cuda.empty_cache()
        metrics = _run_eval(self.opt.eval_fn, self.model, self.d)  # type: ignore[arg-type]
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
        d, opt = self.d, self.opt
        epochs_done, final_loss = self.start_epoch, float("nan")
        images = data_s = step_s = 0.0
        try:
            for epoch in range(self.start_epoch, self.total_epochs):
                t0 = time.perf_counter()
                st = self.train_epoch(epoch)
                images, data_s, step_s = images + st.images, data_s + st.data_s, step_s + st.step_s
                means = [v / st.count for v in st.sums]
                if d.enabled:  # the logged losses are averaged over ranks
                    t = torch.tensor(means, dtype=torch.float64)
                    dist.all_reduce(t)
                    means = (t / d.world_size).tolist()
                final_loss = means[0]
                _sync_buffers(self.model, d)
                partial = st.iters if (st.stopped and st.iters < self.steps_per_epoch) else 0
                epochs_done = epoch + 1 if partial == 0 else epoch
                summary: dict[str, Any] = dict(
                    epoch=epoch + 1, iter=self.global_iter, lr=self.cur_lr, loss=means[0], stage_losses=means[1:],
                    seconds=time.perf_counter() - t0, images_per_s=st.images * d.world_size / max(st.step_s, 1e-9),
                    data_time_share=st.data_s / max(st.step_s, 1e-9))
                last = epoch + 1 == self.total_epochs or st.stopped
                if opt.eval_fn is not None and partial == 0 and (
                        last or (opt.eval_every and (epoch + 1) % opt.eval_every == 0)):
                    summary["metrics"] = self.evaluate(epoch)
                self.history.append(summary)
                self.log.write(mode="epoch", timestamp=time.time(), **summary)
                if opt.progress and d.main:
                    print(_epoch_line(summary, self.total_epochs, opt.key_indicator, self.best_epoch),
                          file=sys.stderr, flush=True)
                if (opt.checkpoint_every and (epoch + 1) % opt.checkpoint_every == 0) or last:
                    self.checkpoint(epochs_done, partial)
                if d.enabled:
                    dist.barrier()
                if st.stopped:
                    break
        finally:
            self.log.close()
        return TrainResult(
            work_dir=str(opt.work_dir), epochs=epochs_done, iters=self.global_iter, final_loss=final_loss,
            latest=str(self.latest_path) if self.wrote_latest else None,
            best=str(self.best_path) if self.best_epoch is not None else None, best_metric=self.best_metric,
            best_epoch=self.best_epoch, metrics=self.metrics, history=self.history,
            images_per_s=images * d.world_size / step_s if step_s > 0 else 0.0,
            data_time_share=data_s / step_s if step_s > 0 else 0.0, weights_digest=weights_digest(self.model),
            rank=d.rank, world_size=d.world_size, log_file=str(self.log_path) if d.main else None)


def _epoch_line(summary: Mapping[str, Any], total: int, key: str, best_epoch: int | None) -> str:
    """One console line per epoch: loss, throughput and, when evaluated, the key metric."""
    line = (f"epoch {summary['epoch']}/{total}  loss {summary['loss']:.4g}  lr {summary['lr']:.2e}  "
            f"{summary['seconds']:.0f} s  {summary['images_per_s']:.1f} img/s  "
            f"data {100 * summary['data_time_share']:.0f}%")
    metrics = summary.get("metrics")
    if metrics and key in metrics:
        line += f"  {key} {metrics[key]:.4f}" + (" (best)" if best_epoch == summary["epoch"] else "")
    return line


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
