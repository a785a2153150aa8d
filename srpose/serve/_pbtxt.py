"""Triton model configurations (``config.pbtxt``, protobuf text format) of srpose's models, as plain text."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["Tensor", "quote", "model_config", "ensemble_config", "Step"]


def quote(text: str) -> str:
    """A protobuf text-format string literal of ``text`` (backslashes and quotes escaped; ASCII expected)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Tensor:
    """One input or output of a model config: name, Triton data type (``TYPE_FP32``, ...), dims (-1: any)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    def render(self) -> str:
        dims = ", ".join(str(int(d)) for d in self.dims)
        opt = " optional: true" if self.optional else ""
        return f"  {{ name: {quote(self.name)} data_type: {self.dtype} dims: [ {dims} ]{opt} }}"


@dataclass(frozen=True)
class Step:
    """One ensemble step: the model and its tensor maps (model tensor -> ensemble tensor)."""

    model: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]

    def render(self) -> str:
        ins = " ".join(f"input_map {{ key: {quote(k)} value: {quote(v)} }}" for k, v in self.inputs.items())
        outs = " ".join(f"output_map {{ key: {quote(k)} value: {quote(v)} }}" for k, v in self.outputs.items())
        return f"    {{ model_name: {quote(self.model)} model_version: -1\n      {ins}\n      {outs} }}"


def _tensors(kind: str, tensors: Sequence[Tensor]) -> str:
    return f"{kind} [\n" + ",\n".join(t.render() for t in tensors) + "\n]\n"


def _params(params: Mapping[str, str]) -> str:
    return "".join(f"parameters {{ key: {quote(k)} value: {{ string_value: {quote(v)} }} }}\n"
                   for k, v in params.items())


def model_config(name: str, *, max_batch_size: int, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 backend: str | None = None, platform: str | None = None, instances: int = 1, kind: str = "KIND_CPU",
                 preferred_batch_sizes: Sequence[int] = (), max_queue_delay_us: int | None = None,
                 params: Mapping[str, str] | None = None, comment: str = "",
                 default_model_filename: str | None = None, optimization: str | None = None) -> str:
    """The config of one model (``backend`` python / onnxruntime, or ``platform`` tensorrt_plan / onnxruntime_onnx);
    dynamic batching when ``max_queue_delay_us`` is given; ``optimization``: an ``optimization { ... }`` block."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    lines.append(f"name: {quote(name)}")
    if platform:
        lines.append(f"platform: {quote(platform)}")
    if backend:
        lines.append(f"backend: {quote(backend)}")
    if default_model_filename:
        lines.append(f"default_model_filename: {quote(default_model_filename)}")
    lines.append(f"max_batch_size: {int(max_batch_size)}")
    text = "\n".join(lines) + "\n" + _tensors("input", inputs) + _tensors("output", outputs)
    if max_queue_delay_us is not None:
        pref = f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch_sizes)} ]\n" \
            if preferred_batch_sizes else ""
        text += f"dynamic_batching {{\n{pref}  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}\n"
    text += f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]\n"
    text += optimization or ""
    return text + _params(params or {})


def ensemble_config(name: str, *, inputs: Sequence[Tensor], outputs: Sequence[Tensor], steps: Sequence[Step],
                    params: Mapping[str, str] | None = None, comment: str = "") -> str:
    """The config of an ensemble (no batching of its own: its steps batch)."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()] if comment else []
    lines += [f"name: {quote(name)}", 'platform: "ensemble"', "max_batch_size: 0"]
    text = "\n".join(lines) + "\n" + _tensors("input", inputs) + _tensors("output", outputs)
    text += "ensemble_scheduling {\n  step [\n" + ",\n".join(s.render() for s in steps) + "\n  ]\n}\n"
    return text + _params(params or {})
