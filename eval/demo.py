"""``srpose demo`` as a library call: generate a small data set (or take real COCO-format data), train a small
preset, then run the pipeline on it: ``DemoOptions -> run_demo(...) -> PipelineReport``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .pipeline import PipelineOptions, PipelineReport, run_pipeline, say
from .report import PhaseTimer, Target

__all__ = ["DEMO_PRESET", "DEMO_MIN_AP", "DEMO_MAX_AP_DROP", "DEMO_MAX_IMAGE_GRAPH_DELTA", "DEMO_TIME_BUDGET_S",
           "DemoOptions", "run_demo", "demo_targets"]

#: The demo's model: small enough to learn the generated data in a few CPU minutes (see docs/benchmarks.md).
DEMO_PRESET = "res18w16_srpose_coco_96x64"
#: What the demo must show (issue #6): a model that has learnt something, and what deployment costs in AP. AP is on
#: the 0..1 scale; the precision budgets are in AP points (1.0 AP = 0.01).
DEMO_MIN_AP = 0.70
DEMO_MAX_AP_DROP = {"fp16": 0.001, "int8": 0.010}
#: the image-to-keypoints graph (crop, flip and decoding in the graph) against the host pipeline of the same
#: precision: fp32 and fp16, whose arithmetic is deterministic; an INT8 image graph has the INT8 budget against
#: PyTorch as the INT8 crop graph has (its own rounding moves its AP by about as much as the crop interpolation)
DEMO_MAX_IMAGE_GRAPH_DELTA = 0.001
_IMAGE_VS_HOST = ("fp32", "fp16")
DEMO_TIME_BUDGET_S = 600.0


@dataclass
class DemoOptions:
    """``data``: ``synthetic`` (generated people: ``train_size`` / ``val_size`` images of ``image_size`` with
    ``people`` (min, max) per image) or ``coco`` (``pipeline.ann`` / ``pipeline.images``, training on
    ``train_ann`` / ``train_images``, default the same); training overrides (None: the preset's); ``workers``
    None: 0 on 2 cores or fewer (loader processes slow the training threads by ~18% there), else 2;
    ``clip_frames``: frames of the generated clip run through ``srpose predict`` with tracking (synthetic data
    only; 0: none)."""

    pipeline: PipelineOptions
    data: str = "synthetic"
    preset: str = DEMO_PRESET
    train_ann: str | None = None
    train_images: str | None = None
    train_size: int = 4000
    val_size: int = 2000
    image_size: tuple[int, int] = (192, 160)
    people: tuple[int, int] = (1, 1)
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    device: str | None = None
    workers: int | None = None
    eval_every: int = 0
    clip_frames: int = 48
    seed: int = 0

    def check(self) -> None:
        """Refuse bad options before anything is written."""
        for opt, val in (("--train-size", self.train_size), ("--val-size", self.val_size)):
            if val < 1:
                raise ValueError(f"{opt} must be >= 1, got {val}")
        if self.data not in ("synthetic", "coco"):
            raise ValueError(f"--data {self.data!r}: choose synthetic or coco")
        if self.data == "coco" and not (self.pipeline.ann and self.pipeline.images):
            raise ValueError("--data coco needs --ann ANN.json --images DIR (and optionally --train-ann / "
                             "--train-images)")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.clip_frames < 0:
            raise ValueError(f"--clip-frames must be >= 0 (0: no clip), got {self.clip_frames}")
        if self.eval_every < 0:
            raise ValueError(f"--eval-every must be >= 0 (0: after the last epoch only), got {self.eval_every}")
        if self.pipeline.ann or self.data == "coco":
            self.pipeline.check()
        elif self.pipeline.error_items < 1:
            raise ValueError(f"--error-persons must be >= 1, got {self.pipeline.error_items}")


def demo_targets(train_ap: float | None, report: Any, seconds: float | None = None,
                 clip: Mapping[str, Any] | None = None) -> list[Target]:
    """The demo's targets, checked against the trained AP, the parity report, (optionally) the clip's tracked
    prediction and the wall time."""
    from ._demo_clip import clip_targets

    key = _get(report, "primary_metric")
    out = [Target(f"trained model {key}", "n/a" if train_ap is None else f"{train_ap:.4f}", f">= {DEMO_MIN_AP}",
                  train_ap is not None and train_ap >= DEMO_MIN_AP)]
    models = list(_get(report, "models"))
    for m in models:
        bound = DEMO_MAX_AP_DROP.get(m["precision"])
        if bound is None:
            continue
        drop = -m["delta"][key]
        out.append(Target(f"{m['name']} {key} loss vs PyTorch", f"{drop:+.4f}", f"<= {bound:.3f}",
                          drop <= bound + 1e-12))
    crop = {m["precision"]: m for m in models if not m.get("image_input")}
    for m in models:
        host = crop.get(m["precision"])
        if m.get("image_input") and host is not None and m["precision"] in _IMAGE_VS_HOST:
            d = m["metrics"][key] - host["metrics"][key]
            out.append(Target(f"{m['name']} {key} vs the host pipeline ({host['name']})", f"{d:+.4f}",
                              f"|Δ| <= {DEMO_MAX_IMAGE_GRAPH_DELTA:.3f}", abs(d) <= DEMO_MAX_IMAGE_GRAPH_DELTA + 1e-12))
    out += clip_targets(clip)
    if seconds is not None:
        cpus = os.cpu_count()
        out.append(Target(f"wall time ({cpus} CPU cores)", f"{seconds:.0f} s", f"< {DEMO_TIME_BUDGET_S:.0f} s",
                          seconds < DEMO_TIME_BUDGET_S))
    return out


def _get(report: Any, key: str) -> Any:
    return report[key] if isinstance(report, Mapping) else getattr(report, key)


def run_demo(options: DemoOptions) -> PipelineReport:
    """Generate (or take) the data, train the preset, deploy the best checkpoint through the pipeline."""
    import torch

    from srpose.resolve import get_config
    from srpose.train.trainer import train

    from .train_hooks import make_eval_fn

    options.check()
    pipe = options.pipeline
    out = Path(pipe.out or "demo")
    out.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()
    train_ann, train_images = _data(options, out, timer)
    cfg = get_config(options.preset)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    epochs = int(options.epochs or cfg.train["epochs"])
    say(f"train {cfg.name} for {epochs} epochs on {device}")
    eval_fn = make_eval_fn(cfg, str(pipe.ann), str(pipe.images), batch_size=64)
    workers = options.workers if options.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)
    with timer.phase("train (with validation)"):
        res = train(cfg, train_ann=train_ann, train_images=train_images, work_dir=out / "train", epochs=epochs,
                    batch_size=options.batch, lr=options.lr, workers=workers, eval_every=options.eval_every,
                    eval_fn=eval_fn, seed=options.seed, device=device, checkpoint_every=epochs)
    ckpt = res.best or res.latest
    ap = res.best_metric if res.best_metric is not None else res.metrics.get("AP")
    section = _training_section(cfg.name, res, options.data, timer.seconds["train (with validation)"], device,
                                workers, ap, out)
    clip = None
    if options.data == "synthetic" and options.clip_frames:
        from ._demo_clip import clip_section, run_clip

        say(f"predict a generated {options.clip_frames}-frame clip with tracking (srpose predict)")
        with timer.phase("predict clip (tracking)"):
            clip = run_clip(cfg.name, ckpt, out, frames=options.clip_frames, seed=options.seed)
        section = [*section, *clip_section(clip)]
    pipe.out = str(out)  # the pipeline writes beside the training
    return run_pipeline(cfg, ckpt, pipe, extra_sections=section, title="SRPose-TRT demo", timer=timer,
                        targets_fn=lambda report, seconds: demo_targets(ap, report, seconds, clip))


def _data(options: DemoOptions, out: Path, timer: PhaseTimer) -> tuple[str, str]:
    """(training annotations, training images); sets the pipeline's evaluation data for generated sets."""
    from srpose.data.synthetic import generate_dataset

    pipe = options.pipeline
    if options.data != "synthetic":
        return options.train_ann or pipe.ann, options.train_images or pipe.images
    say(f"generate {options.train_size} training and {options.val_size} validation images under {out / 'data'}")
    with timer.phase("generate data"):
        gen = dict(image_size=options.image_size, people=options.people, progress=True)
        tr = generate_dataset(out / "data" / "train", num_images=options.train_size, seed=options.seed, **gen)
        va = generate_dataset(out / "data" / "val", num_images=options.val_size, seed=options.seed + 1, **gen)
    pipe.ann, pipe.images = str(va["ann"]), str(va["images"])
    return str(tr["ann"]), str(tr["images"])


def _training_section(name: str, res: Any, data: str, t_train: float, device: str, workers: int,
                      ap: float | None, out: Path) -> Sequence[str]:
    from .report import plot_loss

    loss_png = plot_loss(Path(res.log_file), out / "loss.png") if res.log_file else None
    per_epoch = ", ".join(f"{h['metrics']['AP']:.3f} (epoch {h['epoch']})" for h in res.history
                          if "AP" in h.get("metrics", {}))
    section = ["## Training", "",
               f"{name} trained {res.epochs} epochs ({res.iters} iterations) on {data} data in {t_train:.0f} s on "
               f"{device}: {res.images_per_s:.1f} images/s, data loading {100 * res.data_time_share:.0f}% of step "
               f"time ({workers} loader workers). Validation AP: {per_epoch}; the checkpoint deployed below is the "
               f"best (epoch {res.best_epoch}, AP {ap:.3f}).", ""]
    if ap is not None and ap < DEMO_MIN_AP:
        section += [f"> warning: the trained model reached AP {ap:.3f} < {DEMO_MIN_AP}; the parity figures below say "
                    "little about deployment accuracy. Train longer (--epochs).", ""]
    if loss_png:
        section += ["![training loss](loss.png)", ""]
    return section
