"""Runtimes (torch-free): ONNX Runtime and TensorRT backends, the engine builder and the profiler.

:func:`open_backend` is the one place that maps a model file (or server URL) to its backend.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from srpose.card import ENGINE_SUFFIXES

__all__ = ["open_backend", "backend_kind", "parse_device"]

#: URL schemes of served models (Triton Inference Server)
SERVER_SCHEMES = ("grpc://", "http://", "https://")


def parse_device(device: str | int | None) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` / ``"cuda:1"`` / ``1`` -> ("cuda", index); ValueError otherwise."""
    if device is None or device == "cpu":
        return "cpu", 0
    if isinstance(device, int):
        return "cuda", device
    text = str(device)
    if text == "cuda":
        return "cuda", 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise ValueError(f"device {device!r} must be cpu, cuda or cuda:N")


def backend_kind(model: str | os.PathLike) -> str | None:
    """The backend :func:`open_backend` gives ``model``: ``"triton"`` (a server URL), ``"tensorrt"`` (``.engine`` /
    ``.plan``), ``"onnxruntime"`` (``.onnx``), or None (not a model file or URL)."""
    text = str(model)
    if text.startswith(SERVER_SCHEMES):
        return "triton"
    suffix = Path(text).suffix
    return "tensorrt" if suffix in ENGINE_SUFFIXES else "onnxruntime" if suffix == ".onnx" else None


def open_backend(model: str | os.PathLike, *, device: str | int | None = "cpu", threads: int | None = None,
                 **options: Any) -> Any:
    """The backend running ``model``: ``.onnx`` -> ONNX Runtime (CPU, or CUDA for ``device="cuda[:N]"``),
    ``.engine`` / ``.plan`` -> TensorRT on GPU ``N``, ``grpc://`` / ``http://`` URLs -> a Triton server.
    ``options`` go to the backend's constructor (e.g. ``cuda_graph`` for TensorRT)."""
    kind, index = parse_device(device)
    runtime = backend_kind(model)
    if runtime == "triton":
        from srpose.engines.triton_client import TritonBackend

        return TritonBackend(str(model), **options)
    path = Path(model)
    if runtime == "tensorrt":
        if kind != "cuda":
            raise ValueError(f"{path} is a TensorRT engine: it runs on a GPU, pass --device cuda (or cuda:N)")
        from srpose.engines.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=index, **options)
    if runtime == "onnxruntime":
        from srpose.engines.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers="cuda" if kind == "cuda" else None, threads=threads, **options)
    raise ValueError(f"model file {path}: expected an .onnx graph, a TensorRT .engine/.plan or a grpc:// / http:// "
                     "Triton URL")
