"""The calls of ``scripts/bench_gpu.py`` into the srpose library, in one place: configs and models, the torch
backend, decoding, MACs, profiling, the shared COCO sample, the evaluator, export and ONNX Runtime, the outputs."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from _bench_gpu_report import SECTION, render

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "coco"


def config(name: str, size: Tuple[int, int] | None) -> Any:
    from srpose import get_config

    cfg = get_config(name)
    return cfg.with_input_size(*size) if size else cfg


def build(name: str, size: Tuple[int, int] | None) -> Tuple[Any, nn.Module]:
    """(config, eval-mode model on the CPU with seeded random weights)."""
    from srpose import build_model

    cfg = config(name, size)
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def input_shape(cfg: Any) -> Tuple[int, int, int]:
    w, h = cfg.image_size
    return (3, int(h), int(w))


def decoder_kind(cfg: Any) -> str:
    """The codec the model's task decodes with (``srpose`` or ``simple``)."""
    from srpose.tasks import task_for

    return task_for(cfg).codec.name


def torch_backend(model: nn.Module, device: torch.device | str, precision: str) -> Any:
    from srpose.eval.backends import TorchBackend

    return TorchBackend(model, device=device, precision=precision)


def infer(backend: Any, images: np.ndarray) -> np.ndarray:
    """The heatmaps of a backend's ``{name: array}`` outputs."""
    out = backend.infer(images)
    return np.asarray(out["heatmaps"] if "heatmaps" in out else next(iter(out.values())), dtype=np.float32)


def decode(heatmaps: Any, center: np.ndarray, scale: np.ndarray, kind: str) -> Tuple[Any, Any]:
    from srpose.decode import decode_heatmaps

    return decode_heatmaps(heatmaps, center, scale, kind=kind)


def macs(model: nn.Module, input_shape: Tuple[int, int, int]) -> Dict[str, float]:
    from srpose.complexity import complexity_report

    c = complexity_report(model, input_shape)
    return {"gmacs_mmcv": float(c.gmacs), "gmacs_all_ops": float(c.gmacs_all_ops)}


def profile(runner: Any, input_shape: Tuple[int, ...], batches: Sequence[int], plan: SimpleNamespace,
             make_input: Callable | None = None) -> List[Dict[str, Any]]:
    from srpose.engines.profiler import profile

    return profile(runner, input_shape, batches, warmup_s=plan.warmup_s, duration_s=plan.duration_s,
                   make_input=make_input, min_iterations=plan.min_iters, progress=True)


def summarize(times_ms: Sequence[float]) -> Dict[str, float]:
    from srpose.engines.profiler import summarize

    return summarize(times_ms)


def sample_dataset(cfg: Any, work: Path | None = None, copies: int = 1, det: bool = False) -> Any:
    """The shared COCO sample with GT boxes (``det``: its detections); with ``copies`` > 1 every annotation (every
    detection) repeated."""
    from srpose.data import TopDownCocoDataset

    ann = SHARED / "test_coco.json"
    if det:
        dets = json.loads((SHARED / "test_coco_det_AP_H_56.json").read_text()) * max(1, copies)
        path = (work or Path(".")) / f"coco_det_x{copies}.json"
        path.write_text(json.dumps(dets))
        return TopDownCocoDataset(ann, SHARED, cfg.data, det_file=path, use_gt_bbox=False)
    if copies > 1 and work is not None:
        data = json.loads(ann.read_text())
        anns = [{**a, "id": i * len(data["annotations"]) + j + 1} for i in range(copies)
                for j, a in enumerate(data["annotations"])]
        ann = work / f"coco_x{copies}.json"
        ann.write_text(json.dumps({**data, "annotations": anns}))
    return TopDownCocoDataset(ann, SHARED, cfg.data, use_gt_bbox=True)


def sample_crops(cfg: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N x 3 x H x W float32 crops, N x 2 centers, N x 2 scales) of the shared COCO sample."""
    ds = sample_dataset(cfg)
    items = [ds[i] for i in range(len(ds))]
    return tuple(np.stack([np.asarray(it[k], dtype=np.float32) for it in items])  # type: ignore[return-value]
                 for k in ("img", "center", "scale"))


def evaluate_end_to_end(backend: Any, dataset: Any, cfg: Any, batch: int, workers: int) -> Dict[str, Any]:
    """Images/s through the evaluator with the config's flip test."""
    from srpose.eval.evaluator import EvalOptions, evaluate
    from srpose.tasks import task_for

    r = evaluate(task_for(cfg), backend, dataset,
                 EvalOptions(flip=None, batch_size=batch, workers=workers, progress=False))
    return {"images_per_s": float(r.images_per_s), "backend_ms_per_person": float(r.backend_ms_per_person),
            "flip": bool(r.flip), "AP": float(r.metrics["AP"])}


def export_onnx(model: nn.Module, cfg: Any, path: Path, batch_max: int) -> Path:
    from srpose.export.onnx_export import export_onnx

    return Path(export_onnx(model, cfg, path, batch=(1, min(8, batch_max), batch_max)))


def convert_fp16(src: Path, dst: Path) -> Path:
    from srpose.export.fp16 import convert_fp16

    convert_fp16(src, dst)
    return dst


def ort_backend(path: Path) -> Any:
    """ONNX Runtime on its CUDA provider; raises (with the library's reason) where the provider is absent, and
    where ONNX Runtime quietly fell back to the CPU (CUDA libraries missing)."""
    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, providers="cuda")
    active = backend.session.get_providers() if getattr(backend, "session", None) is not None else []
    if not active or active[0] != "CUDAExecutionProvider":
        backend.close()
        raise RuntimeError(f"the CUDA provider did not load (session providers: {active}): check onnxruntime-gpu "
                           "against the installed CUDA / cuDNN libraries")
    return backend


def write_outputs(out_dir: Path, result: Dict[str, Any], docs: Path | None) -> List[Path]:
    from srpose._io import atomic_write_json, atomic_write_text, replace_markdown_section

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_json(out_dir / "bench_gpu.json", result),
             atomic_write_text(out_dir / "bench_gpu.md", render(result, "# GPU benchmark"))]
    if docs is not None:
        paths.append(replace_markdown_section(docs, SECTION, render(result)))
    return [Path(p) for p in paths]
