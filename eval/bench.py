"""``srpose bench``: latency and throughput of any backend (torch, ONNX Runtime, TensorRT), trtexec-style."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["add_bench_arguments", "run_bench", "make_end_to_end"]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``srpose bench``."""
    p.add_argument("model", metavar="NAME_OR_CONFIG|MODEL",
                   help="preset/config for --backend torch; an .onnx file or .engine file for the others")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"), default="torch")
    p.add_argument("--checkpoint", default=None, help="torch backend: checkpoint to load (timing does not need one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "fp16-weights"),
                   help="torch backend on CUDA: autocast fp16/bf16 or half weights (default: fp32)")
    p.add_argument("--batch", type=int, nargs="+", default=None, metavar="N",
                   help="batch sizes (default: 1 8 32; 1 for bottom-up models)")
    p.add_argument("--input-size", default=None, metavar="WxH",
                   help="bottom-up models (dynamic H and W): input size to time (default: the config's)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds per batch size (default: 1)")
    p.add_argument("--duration-s", type=float, default=3.0, help="timed seconds per batch size (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    p.add_argument("--end-to-end", action="store_true",
                   help="time preprocessing (affine crop + normalisation of each person) and decoding too")
    p.add_argument("--cuda-graph", action="store_true", help="tensorrt backend: capture a CUDA graph per batch size")
    p.add_argument("--json", dest="json_out", default=None, metavar="OUT", help="write the rows as JSON")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write latency and throughput vs batch size")
    p.add_argument("--quiet", action="store_true", help="no per-batch progress lines")


def _backend(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The backend and the data settings (input size, mean/std, decoder) it needs."""
    if args.backend == "torch":
        import torch

        from srpose import build_model, get_config, load_checkpoint

        from .backends import TorchBackend

        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = get_config(args.model)
        model = build_model(cfg)
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        from srpose.models.bottom_up import is_bottom_up

        return (TorchBackend(model, device=args.device, precision=args.precision),
                dict(cfg.data, name=cfg.name, bottom_up=is_bottom_up(cfg)))
    path = Path(args.model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist (for --backend {args.backend})")
    if args.backend == "onnxruntime":
        from srpose.engines.onnxruntime import OnnxRuntimeBackend
        from srpose.export.onnx_export import read_metadata

        if _is_true(read_metadata(path).get("bottom_up")):  # may have several outputs (decoded graphs)
            from .bottom_up import BottomUpOnnxBackend

            be = BottomUpOnnxBackend(path, providers="cuda" if args.device.startswith("cuda") else None,
                                     threads=args.threads)
        else:
            be = OnnxRuntimeBackend(path, providers="cuda" if args.device.startswith("cuda") else None,
                                    threads=args.threads)
        meta = dict(be.meta or {})
    else:
        from srpose.engines.tensorrt import TensorRTBackend, read_sidecar

        dev = int(args.device.split(":")[1]) if ":" in args.device else 0
        be = TensorRTBackend(path, device=dev, cuda_graph=args.cuda_graph)
        meta = dict((read_sidecar(path) or {}).get("onnx_metadata", {}))
    return be, _data_from_metadata(meta, path)


def _is_true(v: Any) -> bool:
    return v is True or str(v).lower() in ("1", "true")


def _data_from_metadata(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    def get(key: str) -> Any:
        v = meta.get(key)
        return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v

    size = get("image_size") or get("input_size")
    if size is None:
        raise ValueError(f"{path} has no export metadata (image_size); export it with `srpose export`")
    return dict(name=path.stem, image_size=[int(v) for v in size], mean=get("mean") or [0.485, 0.456, 0.406],
                std=get("std") or [0.229, 0.224, 0.225], decoder=get("decoder") or "srpose",
                heatmap_size=get("heatmap_size"), bottom_up=_is_true(meta.get("bottom_up")))


def make_end_to_end(backend: Any, data: dict[str, Any], seed: int = 0) -> Callable[[Any], Any]:
    """A callable timing preprocessing (one affine crop per person from a 640x480 image, normalisation),
    inference and decoding for a batch the size of its argument."""
    from srpose.data import normalize_image, warp_affine_crop
    from srpose.decode import decode_heatmaps

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    w, h = data["image_size"]
    mean, std = data["mean"], data["std"]
    kind = "srpose" if data.get("decoder") == "srpose" else "simple"

    def run(batch: Any) -> Any:
        n = len(batch)
        centers = np.stack([rng.uniform(200, 440, n), rng.uniform(150, 330, n)], 1).astype(np.float32)
        scales = np.tile(np.array([[w / 200.0 * 1.25, h / 200.0 * 1.25]], np.float32), (n, 1))
        crops = np.stack([normalize_image(warp_affine_crop(image, c, s, 0.0, (w, h))[0][..., ::-1], mean, std)
                          for c, s in zip(centers, scales)])
        out = backend.infer(crops)
        if getattr(backend, "output_kind", "heatmaps") == "heatmaps":
            return decode_heatmaps(out, centers, scales, kind=kind)
        return out

    return run


def run_bench(args: argparse.Namespace) -> int:
    """Run ``srpose bench``; prints a table, optionally writes JSON and a PNG."""
    from srpose.engines.profiler import format_table, plot_profile, profile
    from srpose._io import atomic_write_json

    if args.batch is not None and any(b < 1 for b in args.batch):
        raise ValueError(f"--batch sizes must be >= 1, got {args.batch}")
    backend, data = _backend(args)
    try:
        w, h = data["image_size"]
        if data.get("bottom_up"):
            if args.end_to_end:
                raise ValueError("--end-to-end times person crops (top-down); bottom-up models take whole images: "
                                 "drop --end-to-end")
            if args.input_size:
                from srpose.export.commands import parse_input_size

                w, h = parse_input_size(args.input_size)
        elif args.input_size:
            raise ValueError(f"--input-size applies to bottom-up models only; {data['name']} has a fixed input "
                             f"{w}x{h}")
        args.batch = args.batch or ([1] if data.get("bottom_up") else [1, 8, 32])
        e2e = make_end_to_end(backend, data) if args.end_to_end else None
        rows = profile(backend, (3, h, w), args.batch, warmup_s=args.warmup_s, duration_s=args.duration_s,
                       end_to_end=e2e, progress=not args.quiet)
    finally:
        backend.close()
    for r in rows:
        r["model"] = data["name"]
        r["device"] = args.device
        if args.backend == "torch":
            r["precision"] = args.precision
    print(format_table(rows))
    if args.json_out:
        atomic_write_json(args.json_out, rows)
        print(f"rows written to {args.json_out}", file=sys.stderr)
    if args.plot:
        plot_profile(rows, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
