"""PyTorch -> ONNX for any pose task: a dynamic-batch FP32 graph (bottom-up: dynamic height and width too) with
the optional in-graph flip test and decoding, carrying its artifact card in ``metadata_props``.

What the graph computes, its names and axes, its shape profile and its card come from the task
(:mod:`srpose.tasks`); this module traces, simplifies, checks and writes it. The same weights give a
byte-identical file.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn as nn

from srpose.card import ArtifactCard, card_from_onnx, card_to_onnx
from srpose.config import parse_batch
from srpose.tasks import PoseTask, parse_shape_profile, task_for

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.config import PoseConfig

__all__ = ["SUPPORTED_OPSETS", "export_onnx", "export_onnx_model", "read_metadata", "read_card_of",
           "check_batch", "parse_batch", "model_sha256", "as_task"]

#: opset 13 is the first with per-channel Q/DQ; 17 gives TensorRT a real LayerNormalization.
SUPPORTED_OPSETS = range(13, 21)


def as_task(task_or_cfg: "PoseTask | PoseConfig | str") -> PoseTask:
    """A task from a task, a config or a preset name."""
    return task_or_cfg if isinstance(task_or_cfg, PoseTask) else task_for(task_or_cfg)


def check_batch(batch: Sequence[int]) -> tuple[int, int, int]:
    """Validate a (min, opt, max) batch profile."""
    return parse_batch(list(batch), option="batch profile")


def model_sha256(model: "onnx.ModelProto | bytes | str | Path") -> str:
    """sha256 of a model's serialised bytes (or of a file)."""
    if isinstance(model, (str, Path)):
        data = Path(model).read_bytes()
    elif isinstance(model, bytes):
        data = model
    else:
        data = model.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()


def read_metadata(model: "onnx.ModelProto | str | Path") -> dict[str, Any]:
    """``metadata_props`` of an ONNX model or file, JSON values decoded (strings that are not JSON stay strings)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    out: dict[str, Any] = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out


def read_card_of(model: "onnx.ModelProto | str | Path") -> ArtifactCard:
    """The card of an ONNX model or file."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        from srpose.card import read_card

        return read_card(model)
    return card_from_onnx(model)


def _sanitize(model: "onnx.ModelProto") -> None:
    """Drop exporter noise that is not part of the computation (doc strings), so equal weights give equal bytes."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""


def _simplify(proto: "onnx.ModelProto") -> "onnx.ModelProto":
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(proto, check_n=0)
    except Exception as e:  # onnxsim failing is not fatal: the raw export is valid ONNX
        warnings.warn(f"onnxsim could not simplify the graph ({type(e).__name__}: {e}); keeping the raw export",
                      stacklevel=3)
        return proto
    if not ok:
        warnings.warn("onnxsim reported a failed check; keeping the raw export", stacklevel=3)
        return proto
    return simplified


def export_onnx_model(model: nn.Module, task: "PoseTask | PoseConfig | str", *, batch: Sequence[int] | None = None,
                      shape_profile: Any = None, flip: bool | None = None, decode: bool = False, opset: int = 17,
                      simplify: bool = True, metadata: Mapping[str, Any] | None = None) -> "onnx.ModelProto":
    """Export ``model`` (built for the task's config) to a checked ``onnx.ModelProto`` with its card.

    ``batch`` = (min, opt, max) for the TensorRT optimisation profile (default: the task's); ``shape_profile``
    bounds dynamic-size inputs (bottom-up: ``"WxH,WxH,WxH"`` or ((W, H), ...); default: the task's). ``flip``
    folds the flip test into the graph (None: the task's default), ``decode`` appends the codec's decoder.
    ``metadata``: card fields to set, e.g. ``checkpoint_sha256``.
    """
    import onnx

    from srpose import __version__

    task = as_task(task)
    lo, opt, hi = check_batch(task.default_batch if batch is None else batch)
    if int(opset) not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported: use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} "
                         "(17 recommended: TensorRT gets a real LayerNormalization)")
    hw = task.default_hw_profile()
    if shape_profile is not None:
        if hw is None:
            raise ValueError(f"{task.cfg.name} is {task.kind} with a fixed input size: a shape profile applies to "
                             "bottom-up models only")
        hw = parse_shape_profile(shape_profile)
    flip = task.export_flip(flip, decode)
    was_training = model.training
    model.eval()
    try:
        task.check_model(model)
        proto = _trace(task.graph(model, flip=flip, decode=decode).eval(), task, decode,
                       task.example_input((lo, opt, hi), hw), int(opset))
    finally:
        model.train(was_training)
    if simplify:
        proto = _simplify(proto)
    _sanitize(proto)
    proto.graph.name = task.cfg.name
    fields = dict(tool_version=f"srpose {__version__}", torch_version=torch.__version__.split("+")[0])
    fields.update(metadata or {})
    card = task.make_card(decode=decode, flip=flip, batch=(lo, opt, hi), hw_profile=hw, opset=int(opset), **fields)
    card_to_onnx(proto, card)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _trace(wrapper: nn.Module, task: PoseTask, decode: bool, example: Any, opset: int) -> "onnx.ModelProto":
    io_spec = task.io(decode)
    return trace_module(wrapper, (example,), [io_spec.input_name], io_spec.output_names, io_spec.dynamic_axes, opset)


def trace_module(module: nn.Module, example: Sequence[Any], names: Sequence[str], outputs: Sequence[str],
                 axes: Mapping[str, Mapping[int, str]], opset: int) -> "onnx.ModelProto":
    """``module`` on the ``example`` inputs traced to ONNX (the TorchScript exporter, constant folding), with these
    input and output names and dynamic axes; not simplified."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (static H/W by design), legacy-exporter deprecation
        with torch.no_grad():
            torch.onnx.export(module, tuple(torch.from_numpy(a) for a in example), buf, dynamo=False,
                              input_names=list(names), output_names=list(outputs), dynamic_axes=dict(axes),
                              opset_version=opset, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def export_onnx(model: nn.Module, task: "PoseTask | PoseConfig | str", out_path: str | Path, **kwargs: Any) -> Path:
    """:func:`export_onnx_model` written atomically to ``out_path`` (deterministic bytes)."""
    from srpose._io import atomic_write_bytes

    proto = export_onnx_model(model, task, **kwargs)
    return atomic_write_bytes(out_path, proto.SerializeToString(deterministic=True))


def record_precision(proto: "onnx.ModelProto", precision: str, details: Mapping[str, Any]) -> None:
    """Write ``precision`` and what the conversion did into a converted graph's card (graphs without a card, e.g.
    a user's own ONNX file, get plain ``precision`` / ``<precision>`` metadata entries)."""
    from srpose.card import CardError

    try:
        card = card_from_onnx(proto)
    except CardError:
        current = {p.key: p.value for p in proto.metadata_props}
        current.update(precision=json.dumps(precision), **{precision: json.dumps(dict(details), sort_keys=True)})
        del proto.metadata_props[:]
        for key in sorted(current):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, current[key]
        return
    card_to_onnx(proto, card.replace(precision=precision, precision_details={precision: dict(details)}))

