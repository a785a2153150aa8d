"""ONNX Runtime backend: runs any exported ONNX graph (FP32, FP16, INT8 Q/DQ; top-down or bottom-up, raw or
decoded) on the CPU or CUDA and returns every output by name.

The file's :class:`~srpose.card.ArtifactCard` (ONNX metadata) tells the precision, the in-graph flip and decode and
the batch profile; files without a card still run (``card`` is None).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from srpose.card import INPUT_DTYPES, ArtifactCard, CardError
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


class OnnxRuntimeBackend(Backend):
    """Run an ONNX model with ONNX Runtime.

    ``providers``: ``None`` (CPU), ``"cuda"`` or a list of provider names. ``threads``: intra-op threads (default:
    ONNX Runtime's choice, all physical cores). ``spin``: let idle intra-op threads spin (lowest latency on a
    dedicated machine; off by default, like PyTorch with ``OMP_WAIT_POLICY=PASSIVE``, so data-loader workers and
    other processes keep their cores). Graph optimisation level ALL. Batches larger than the card's ``batch``
    maximum are run in chunks of that size.

    ``fp16_emulation``: run a float16 graph with explicit float16 rounding of every float16 tensor (see
    :mod:`srpose.engines._fp16_emulation`); ``None`` (default) does so on the CPU provider only, whose own float16
    handling rounds the weights but not the activations. The attribute ``fp16_emulated`` tells which was used.
    """

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | str | None = None,
                 threads: int | None = None, fp16_emulation: bool | None = None, spin: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for ONNX Runtime's default), got {threads}")
        opts = _session_options(threads, spin)
        provider_list = resolve_providers(providers)
        # the card comes from a first session, not from onnx.load: the served network's Python has onnxruntime
        # but no onnx package; a graph that needs float16 emulation (and onnx) gets a second session below
        self.session = self._open(str(self.path), opts, provider_list)
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.card: ArtifactCard | None = ArtifactCard.from_metadata(props, source=str(self.path))
        except CardError:
            if "srpose_format" in props:  # a card that is there but broken is an error, not "no card"
                raise
            self.card = None
        self.precision = self.card.precision if self.card is not None else "fp32"
        self.fp16_emulated = False
        cpu_only = provider_list == ["CPUExecutionProvider"]
        # INT8 graphs are float16 outside their INT8 layers (opset-19 float16 Q/DQ): ONNX Runtime's CPU kernels
        # would run them in float32 and its WeightBiasQuantization pass miscomputes float16 Q/DQ, so they get the
        # same float16-rounding emulation as FP16 and mixed graphs (the arithmetic TensorRT runs)
        maybe_fp16 = self.card is None or self.precision in ("fp16", "mixed", "int8")
        if fp16_emulation is not False and (fp16_emulation or cpu_only) and maybe_fp16:
            self._emulate_fp16(opts, provider_list)
        self._check_io()
        self.batch_max = self.card.batch[2] if self.card is not None else None
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime-{self.precision}"

    def _emulate_fp16(self, opts: Any, providers: list[str]) -> None:
        import onnx

        from srpose.engines._fp16_emulation import fp16_rounding_graph, has_float16

        proto = onnx.load(str(self.path))
        if has_float16(proto):
            self.session = self._open(fp16_rounding_graph(proto).SerializeToString(), opts, providers)
            self.fp16_emulated = True

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.card is not None and self.card.image_input:
            self._check_image_io(inputs)
        elif len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one image input, got {[i.name for i in inputs]}")
        elif inputs[0].type != "tensor(float)":
            raise ValueError(f"{self.path}: input {inputs[0].name!r} is {inputs[0].type}, expected float32 "
                             "(FP16 exports keep float32 I/O)")
        else:
            self.input_name = inputs[0].name
            self.input_shape = list(inputs[0].shape)
            self.input_names = [self.input_name]
        if self.card is not None and sorted(self.card.output_names) != sorted(self.output_names):
            raise ValueError(f"{self.path}: the graph's outputs {self.output_names} differ from its card's "
                             f"{self.card.output_names}: the file was edited after export; re-export it")

    def _check_image_io(self, inputs: Any) -> None:
        """An image-to-keypoints graph: the card's inputs, with their dtypes."""
        card = self.card
        assert card is not None
        types = {i.name: i.type for i in inputs}
        want = {n: "tensor(" + {"float32": "float", "int32": "int32", "uint8": "uint8"}[INPUT_DTYPES.get(n, "float32")]
                + ")" for n in card.input_names}
        if types != want:
            raise ValueError(f"{self.path}: the graph's inputs {types} differ from what its card describes {want}: "
                             "the file was edited after export; re-export it")
        self.input_names = list(card.input_names)
        self.input_name = card.input_name
        self.input_shape = list(next(i.shape for i in inputs if i.name == card.input_name))

    def _open(self, source: str | bytes, opts: Any, providers: list[str]) -> Any:
        import onnxruntime as ort

        try:
            return ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"ONNX Runtime cannot load {self.path}: {first}") from None

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """N x 3 x H x W float32 images (image graphs: ``{input name: array}``) -> ``{output name: float32
        array}``."""
        if self.session is None:
            raise RuntimeError(f"the ONNX Runtime backend of {self.path.name} is closed")
        if isinstance(images, Mapping):
            return self._infer_feed(images)
        if len(self.input_names) != 1:
            raise ValueError(f"{self.path.name} takes {self.input_names}: pass {{input name: array}}")
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"images must be N x 3 x H x W, got shape {x.shape}")
        want = self.input_shape[1:]
        if any(isinstance(d, int) and d != v for d, v in zip(want, x.shape[1:])):
            raise ValueError(f"{self.path.name} expects N x {' x '.join(map(str, want))} inputs, got shape "
                             f"{x.shape}; export the model with --input-size matching the data")
        t0 = time.perf_counter()
        chunk = self.batch_max or max(len(x), 1)  # an empty batch runs once, as one empty chunk
        parts = [self.session.run(self.output_names, {self.input_name: x[i:i + chunk]})
                 for i in range(0, max(len(x), 1), chunk)]
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        if len(parts) == 1:
            return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, parts[0])}
        return {n: np.concatenate([np.asarray(p[i], dtype=np.float32) for p in parts])
                for i, n in enumerate(self.output_names)}

    def _infer_feed(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {self.input_names}; missing {missing}")
        args = {n: np.ascontiguousarray(feed[n], dtype=INPUT_DTYPES.get(n, "float32")) for n in self.input_names}
        t0 = time.perf_counter()
        outs = self.session.run(self.output_names, args)
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"OnnxRuntimeBackend({str(self.path)!r}, precision={self.precision!r}, decoded={self.decoded}, "
                f"flip_in_graph={self.flip_in_graph}, providers={self.providers})")


def _session_options(threads: int | None, spin: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not spin:  # idle workers sleep instead of spinning: data loading and other work keep their cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
