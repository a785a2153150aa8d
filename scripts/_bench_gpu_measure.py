"""Measurement helpers of ``scripts/bench_gpu.py`` in plain torch (no srpose): timers, a profiler-compatible runner,
CUDA-graph and ``torch.compile`` forwards, error metrics, test heatmaps, the matmul rate, the copy bandwidth and the
memory traffic of a forward."""
from __future__ import annotations

import copy
import math
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

TRAFFIC_NOTE = ("bytes moved = weights read once + input read once + every activation written once and read once; "
                "activations are the outputs of every leaf module except normalisations, activation functions, "
                "dropout and identities (they fuse into their producer), counted with forward hooks at batch 1 and "
                "scaled by the batch (functional ops such as residual additions are not counted: a floor)")
_FUSED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid,
          nn.Hardswish, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.Identity, nn.Dropout, nn.Dropout2d)


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f"[bench_gpu] {msg}", file=sys.stderr, flush=True)


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def release(device: torch.device) -> None:
    """Give cached device memory back between measurements."""
    if is_cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def time_ms(fn: Callable[[], object], device: torch.device, runs: int, warmup: int = 1) -> List[float]:
    """Milliseconds per call of ``fn`` after ``warmup`` calls: CUDA events on a CUDA device, the wall clock else."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        if is_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


class Runner:
    """What the profiler reads of a backend: ``infer`` runs ``fn`` on device tensors (output left there) and sets
    ``last_timing_ms`` from CUDA events on a GPU (``timing_source == "device"``), from the wall clock on the CPU."""

    name = "torch"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device, precision: str) -> None:
        self.fn, self.device, self.precision = fn, device, precision
        self.timing_source = "device" if is_cuda(device) else "wall"
        self.last_timing_ms: float | None = None
        self.last_copy_ms: float | None = None

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        y: List[torch.Tensor] = []
        self.last_timing_ms = time_ms(lambda: y.append(self.fn(x)), self.device, 1, warmup=0)[0]
        return y[0]


def _last(y: Any) -> torch.Tensor:
    return y[-1] if isinstance(y, (list, tuple)) else y


class GraphForward:
    """A forward replayed from a ``torch.cuda.CUDAGraph`` captured per input shape: copy into the static input,
    replay, return the static output. Only the latest shape's graph is kept."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.key, self.graph = model, None, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key != self.key:
            self.graph = None  # free the previous batch size's graph and memory pool first
            self.static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.no_grad(), torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture (cuDNN algorithm choice, allocations)
                    self.model(self.static_in)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(self.graph):
                self.static_out = _last(self.model(self.static_in))
            self.key = key
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def forward_fn(model: nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The inference forward of ``model`` in ``mode``: ``eager``, ``cuda_graph`` or ``compile``."""
    if mode == "cuda_graph":
        return GraphForward(model)
    net = torch.compile(model, dynamic=False) if mode == "compile" else model

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _last(net(x))
    return forward


def dtype_of(precision: str) -> torch.dtype:
    return torch.float16 if precision == "fp16-weights" else torch.float32


def device_model(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """A copy of ``model`` on ``device``, in half precision for ``fp16-weights``."""
    m = copy.deepcopy(model).to(device)
    return m.half() if precision == "fp16-weights" else m


def make_input(device: torch.device, dtype: torch.dtype) -> Callable[[Tuple[int, ...], np.random.Generator], Any]:
    """Profiler input factory: normal random tensors already on ``device`` in ``dtype``."""
    def make(shape: Tuple[int, ...], rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(device, dtype)
    return make


def errors(ref: np.ndarray, out: np.ndarray, ref_kp: np.ndarray, kp: np.ndarray) -> Dict[str, float]:
    """Heatmap relative L2 and max abs / max, keypoint distance (mean and max) of ``out`` against ``ref``."""
    d = np.linalg.norm((np.asarray(kp) - ref_kp).reshape(-1, 2), axis=1)
    return {"rel_l2": float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)),
            "max_abs_rel": float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)),
            "kpt_mean_px": float(d.mean()), "kpt_max_px": float(d.max())}


def heatmaps(shape: Tuple[int, int, int, int], data: str, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmaps, centers, scales): uniform random maps, or for ``data="ties"`` 5-level maps (many equal maxima)
    with all-zero and all-negative maps in the first two persons."""
    rng = np.random.default_rng(seed)
    h = rng.random(shape, dtype=np.float32)
    if data == "ties":
        h = np.round(h * 4) / 4
        h[0, :3] = 0.0
        h[1, :3] = -h[1, :3] - 0.1
    center = (rng.random((shape[0], 2)) * 400).astype(np.float32)
    scale = (rng.random((shape[0], 2)) * 2 + 0.5).astype(np.float32)
    return h, center, scale


def traffic_bytes(model: nn.Module, shape: Tuple[int, int, int], batch: int, elem: int) -> Dict[str, int]:
    """Minimum memory traffic of one forward of a CPU model at ``batch`` with ``elem``-byte tensors (TRAFFIC_NOTE)."""
    counted, every = [0], [0]

    def hook(m: nn.Module, inputs: Any, out: Any) -> None:
        n = sum(t.numel() for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor))
        every[0] += n
        counted[0] += 0 if isinstance(m, _FUSED) else n
    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
    weights = sum(p.numel() for p in model.parameters()) * elem
    inp, act = batch * math.prod(shape) * elem, 2 * counted[0] * batch * elem
    return {"weight_bytes": weights, "input_bytes": inp, "activation_bytes": act,
            "activation_bytes_every_leaf": 2 * every[0] * batch * elem, "total_bytes": weights + inp + act}


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, runs: int) -> float:
    """Best dense n x n matmul rate on ``device`` in multiply-adds per second."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    c = torch.empty_like(a)
    return n ** 3 / (min(time_ms(lambda: torch.matmul(a, b, out=c), device, runs, warmup=3)) / 1e3)


def copy_bandwidth(device: torch.device, nbytes: int, runs: int) -> float:
    """Best device-memory copy bandwidth in bytes per second (read + write counted)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / (min(time_ms(lambda: dst.copy_(src), device, runs, warmup=2)) / 1e3)
