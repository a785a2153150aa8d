"""ONNX Runtime backend: runs an exported ONNX file (FP32, FP16 or INT8 Q/DQ) on the CPU or CUDA.

Reads the export metadata (``metadata_props``, JSON values) for the output kind, the in-graph flip test and the batch
profile; files without that metadata still run (heatmap output assumed unless the output is named ``keypoints``).
Raw bottom-up exports (one output: heatmaps then tag maps, dynamic H and W) run too.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from srpose.engines.base import Backend

__all__ = ["OnnxRuntimeBackend", "resolve_providers"]

_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(providers: Sequence[str] | str | None) -> list[str]:
    """Execution providers from short names (``cpu``, ``cuda``) or full names; ``None`` means the CPU.

    Asking for CUDA on a build without it raises, naming what is available.
    """
    import onnxruntime as ort

    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    available = ort.get_available_providers()
    out = []
    for p in providers:
        full = _ALIASES.get(p.lower(), p)
        if full not in available:
            raise RuntimeError(f"ONNX Runtime provider {p!r} is not available in this onnxruntime build "
                               f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA or use 'cpu'")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")  # fallback for nodes the accelerator does not take
    return out


def _decode_meta(raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


class OnnxRuntimeBackend(Backend):
    """Run an exported ONNX model with ONNX Runtime.

    ``providers``: ``None`` (CPU), ``"cuda"`` or a list of provider names. ``threads``: intra-op threads (default:
    ONNX Runtime's choice, all physical cores). ``spin``: let idle intra-op threads spin (lowest latency on a
    dedicated machine; off by default, like PyTorch with ``OMP_WAIT_POLICY=PASSIVE``, so data-loader workers and
    other processes keep their cores). Graph optimisation level ALL. Batches larger than the exported
    ``batch_max`` are run in chunks of ``batch_max``.

    ``fp16_emulation``: run a float16 graph with explicit float16 rounding of every float16 tensor (see
    :mod:`engines._fp16_emulation`); ``None`` (default) does so on the CPU provider only, whose own float16 handling
    rounds the weights but not the activations. The attribute ``fp16_emulated`` tells which was used.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | str | None = None,
                 threads: int | None = None, fp16_emulation: bool | None = None, spin: bool = False) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for ONNX Runtime's default), got {threads}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        if not spin:  # idle workers sleep instead of spinning: data loading and other work keep their cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_list = resolve_providers(providers)
        self.session = self._open(str(self.path), opts, provider_list)
        self.fp16_emulated = False
        raw_meta = self.session.get_modelmeta().custom_metadata_map
        if fp16_emulation is not False and (fp16_emulation or provider_list == ["CPUExecutionProvider"]) \
                and '"fp16"' in raw_meta.get("precision", '"fp16"'):
            import onnx

            from srpose.engines._fp16_emulation import fp16_rounding_graph, has_float16

            proto = onnx.load(str(self.path))
            if has_float16(proto):
                self.session = self._open(fp16_rounding_graph(proto).SerializeToString(), opts, provider_list)
                self.fp16_emulated = True
        self.meta = _decode_meta(self.session.get_modelmeta().custom_metadata_map)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {[i.name for i in inputs]} -> "
                             f"{[o.name for o in outputs]}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(float)":
            raise ValueError(f"{self.path}: input {self.input_name!r} is {inputs[0].type}, expected float32 "
                             "(FP16 exports keep float32 I/O)")
        self.output_kind = str(self.meta.get("output_kind") or
                               ("keypoints" if self.output_name == "keypoints" else "heatmaps"))
        if self.output_kind not in ("heatmaps", "keypoints"):
            raise ValueError(f"{self.path}: unknown output_kind {self.output_kind!r} in the metadata")
        self.flip_in_graph = bool(self.meta.get("flip", False))
        self.precision = str(self.meta.get("precision", "fp32"))
        self.batch_min = int(self.meta.get("batch_min", 1))
        self.batch_max = int(self.meta.get("batch_max", 0)) or None
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime-{self.precision}"

    def _open(self, source: str | bytes, opts: Any, providers: list[str]) -> Any:
        import onnxruntime as ort

        try:
            return ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {first}") from None

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> np.ndarray:
        """N x 3 x H x W float32 crops -> heatmaps (N x K x h x w) or keypoints (N x K x 3), float32."""
        if self.session is None:
            raise RuntimeError(f"the ONNX Runtime backend of {self.path.name} is closed")
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"images must be N x 3 x H x W, got shape {x.shape}")
        want = self.input_shape[1:]
        if all(isinstance(d, int) for d in want) and list(x.shape[1:]) != want:
            raise ValueError(f"{self.path.name} expects N x {' x '.join(map(str, want))} crops, got shape {x.shape}; "
                             "export the model with --input-size matching the data")
        t0 = time.perf_counter()
        chunk = self.batch_max or len(x)
        if len(x) <= chunk:
            y = self.session.run([self.output_name], {self.input_name: x})[0]
        else:
            y = np.concatenate([self.session.run([self.output_name], {self.input_name: x[i:i + chunk]})[0]
                                for i in range(0, len(x), chunk)])
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"OnnxRuntimeBackend({str(self.path)!r}, precision={self.precision!r}, "
                f"output_kind={self.output_kind!r}, "
                f"flip_in_graph={self.flip_in_graph}, providers={self.providers})")
