"""The card an engine built from an ONNX file carries, and the optimisation profile it is built with.

An ONNX file written by ``srpose export`` has an :class:`~srpose.card.ArtifactCard` in its metadata; the engine's
sidecar is that card plus an ``engine`` section. A file without a card (another exporter) can still be built: its
card is *derived* from the graph (see :func:`derived_card`) and the sidecar says so (``engine.onnx.card ==
"derived"``). Either way the card is checked against the graph (input name, static dims, outputs) before building.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from srpose.card import ArtifactCard, card_from_onnx

__all__ = ["load_onnx", "graph_io", "graph_inputs", "engine_card", "derived_card", "profile_of", "guess_precision"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def load_onnx(onnx_path: str | Path) -> Any:
    """The ``onnx.ModelProto`` of a file (external weights are not needed for the checks and are not loaded)."""
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises protobuf DecodeError and others
        raise ValueError(f"{onnx_path} is not a readable ONNX file ({type(e).__name__}: {e})") from None


def _dims(value_info: Any) -> list[Any]:
    """Dims of a graph input/output: ints, or the dim_param string (``"?"`` when unnamed) for dynamic ones."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def graph_inputs(proto: Any) -> list[tuple[str, list[Any]]]:
    """``[(input name, dims), ...]`` of every graph input that is not an initializer."""
    inits = {i.name for i in proto.graph.initializer}
    return [(i.name, _dims(i)) for i in proto.graph.input if i.name not in inits]


def graph_io(proto: Any, source: str = "ONNX model") -> tuple[tuple[str, list[Any]], list[tuple[str, list[Any]]]]:
    """``((input name, dims), [(output name, dims), ...])``; ValueError unless there is exactly one image input."""
    inputs = graph_inputs(proto)
    if len(inputs) != 1:
        raise ValueError(f"{source}: expected one image input, found {[n for n, _ in inputs]} (image-to-keypoints "
                         "graphs need their srpose card: export them with `srpose export --image-input`)")
    return inputs[0], [(o.name, _dims(o)) for o in proto.graph.output]


def _static(d: Any) -> bool:
    return isinstance(d, int) and d > 0


def guess_precision(proto: Any) -> str:
    """``int8`` when the graph has Q/DQ nodes, ``fp16`` when it has float16 weights, else ``fp32``."""
    if any(n.op_type in _QDQ for n in proto.graph.node):
        return "int8"
    if any(t.data_type == _FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def _unjson(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _flat_ints(props: dict[str, str], keys: Sequence[str], source: str) -> list[int] | None:
    """The flat profile keys (``batch_min`` ...) other tools read, as ints; None when any is absent."""
    if not all(k in props for k in keys):
        return None
    try:
        return [int(_unjson(props[k])) for k in keys]
    except (TypeError, ValueError):
        raise ValueError(f"{source}: metadata {list(keys)} must be integers, got {[props[k] for k in keys]}") from None


def derived_card(proto: Any, source: str) -> ArtifactCard:
    """A minimal card for an ONNX file without one.

    Taken from the graph: input/output names, input size (static H and W), heatmap size and joint count (the first
    output's static dims, else 0), opset and precision (:func:`guess_precision`). The profile comes from the flat
    metadata keys ``batch_min/opt/max`` and ``height_/width_min/opt/max`` when present, else from the static batch
    (else 1). Flip and decode are False and mean/std/flip pairs unknown (empty): such an engine runs, but the
    evaluator cannot pre-process for it without a config.
    """
    (name, dims), outputs = graph_io(proto, source)
    props = {p.key: p.value for p in proto.metadata_props}
    if len(dims) != 4:
        raise ValueError(f"{source}: input {name!r} has shape {dims}; expected N x C x H x W")
    batch = _flat_ints(props, ("batch_min", "batch_opt", "batch_max"), source)
    if batch is None:
        batch = [dims[0]] * 3 if _static(dims[0]) else [1, 1, 1]
    hw = None
    if not (_static(dims[2]) and _static(dims[3])):
        keys = [f"{d}_{k}" for k in ("min", "opt", "max") for d in ("height", "width")]
        vals = _flat_ints(props, keys, source)
        if vals is None:
            missing = [k for k in keys if k not in props]
            raise ValueError(f"{source}: input {name!r} has dynamic height/width {dims[2:]} but no card and no "
                             f"metadata {missing} for the optimisation profile: export it with `srpose export` "
                             "(bottom-up models write --shape-profile) or give the input static H and W")
        hw = [[dims[2] if _static(dims[2]) else vals[2 * i], dims[3] if _static(dims[3]) else vals[2 * i + 1]]
              for i in range(3)]
    opt_h, opt_w = (dims[2], dims[3]) if hw is None else hw[1]
    out_dims = outputs[0][1] if outputs else []
    heat = (out_dims[3], out_dims[2]) if len(out_dims) == 4 and all(_static(d) for d in out_dims[2:]) else (0, 0)
    opsets = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    return ArtifactCard(
        model_name=Path(source).stem, task="top-down" if hw is None else "bottom-up", input_size=(opt_w, opt_h),
        heatmap_size=heat, num_joints=out_dims[1] if len(out_dims) > 1 and _static(out_dims[1]) else 0,
        mean=[], std=[], flip_pairs=[], codec={"name": "unknown"}, output_names=[o for o, _ in outputs],
        input_name=name, precision=guess_precision(proto), batch=tuple(batch), hw_profile=hw,
        opset=opsets[0] if opsets else None)


def _check_image_graph(card: ArtifactCard, proto: Any, source: str) -> None:
    """An image-to-keypoints graph: the card's inputs and outputs, and a consistent profile for each input."""
    names = [n for n, _ in graph_inputs(proto)]
    outputs = [o.name for o in proto.graph.output]
    if sorted(names) != sorted(card.input_names) or sorted(outputs) != sorted(card.output_names):
        raise ValueError(f"{source}: the graph's inputs {names} / outputs {outputs} differ from its card's "
                         f"{card.input_names} / {card.output_names}: the file was edited after export; re-export it")
    for name, (lo, opt, hi) in card.input_profile().items():
        if not all(1 <= a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ValueError(f"{source}: the profile of input {name!r} (min {lo}, opt {opt}, max {hi}) must satisfy "
                             "1 <= min <= opt <= max")


def _check_against_graph(card: ArtifactCard, proto: Any, source: str) -> None:
    """The card must describe this graph: input name, 3 channels, static H/W, output names, H/W profile order."""
    if card.image_input:
        _check_image_graph(card, proto, source)
        return
    (name, dims), outputs = graph_io(proto, source)
    if len(dims) != 4 or (_static(dims[1]) and dims[1] != 3):
        raise ValueError(f"{source}: input {name!r} has shape {dims}; expected N x 3 x H x W")
    if card.input_name != name:
        raise ValueError(f"{source}: the card names input {card.input_name!r} but the graph's input is {name!r}: "
                         "the file was edited after export; re-export it")
    if sorted(card.output_names) != sorted(o for o, _ in outputs):
        raise ValueError(f"{source}: the graph's outputs {[o for o, _ in outputs]} differ from its card's "
                         f"{card.output_names}: the file was edited after export; re-export it")
    lo, opt, hi = card.input_shapes()
    for axis, label in ((2, "height"), (3, "width")):
        if _static(dims[axis]) and {lo[axis], opt[axis], hi[axis]} != {dims[axis]}:
            raise ValueError(f"{source}: the graph's input {label} is {dims[axis]} but its card's profile gives "
                             f"{lo[axis]}/{opt[axis]}/{hi[axis]} (min/opt/max): re-export the model")
        if not _static(dims[axis]) and card.hw_profile is None:
            raise ValueError(f"{source}: input {name!r} has a dynamic {label} but its card has no hw_profile "
                             "(H/W optimisation profile): re-export it with `srpose export` (bottom-up models "
                             "write --shape-profile) or give the input static H and W")
    if not all(1 <= a <= b <= c for a, b, c in zip(lo[2:], opt[2:], hi[2:])):
        raise ValueError(f"{source}: shape profile min {lo[2:]}, opt {opt[2:]}, max {hi[2:]} (H, W) must satisfy "
                         "1 <= min <= opt <= max")


def _checked_batch(card: ArtifactCard, batch: Sequence[int] | None, onnx_batch: Any, source: str) -> tuple:
    b = tuple(int(v) for v in (card.batch if batch is None else batch))
    if len(b) != 3 or not 1 <= b[0] <= b[1] <= b[2]:
        raise ValueError(f"batch range {tuple(b)} must be three integers 1 <= min <= opt <= max")
    if _static(onnx_batch) and b != (onnx_batch,) * 3:
        raise ValueError(f"{source} has a static batch of {onnx_batch}, so batch range {b} is impossible: "
                         "export with a dynamic batch (srpose export --batch MIN,OPT,MAX) or drop --batch")
    return b


def engine_card(proto: Any, source: str, batch: Sequence[int] | None = None) -> tuple[ArtifactCard, bool]:
    """(card, derived): the file's card (or :func:`derived_card`), checked against the graph, with ``batch``
    (min, opt, max) replacing the card's batch profile when given."""
    props = {p.key: p.value for p in proto.metadata_props}
    derived = "srpose_format" not in props
    card = derived_card(proto, source) if derived else card_from_onnx(proto, source=source)  # CardError: ValueError
    _check_against_graph(card, proto, source)
    first_dim = dict(graph_inputs(proto))[card.input_names[-1]][0]  # crops / images; image graphs: persons
    b = _checked_batch(card, batch, first_dim, source)
    return (card if b == card.batch else card.replace(batch=b)), derived


def profile_of(card: ArtifactCard) -> dict[str, Any]:
    """``{"input": name, "min": [N, C, H, W], "opt": [...], "max": [...]}`` of the card's optimisation profile
    (its image or crop input), plus ``"inputs": {name: {"min", "opt", "max"}}`` for every input."""
    lo, opt, hi = card.input_shapes()
    every = {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in card.input_profile().items()}
    out: dict[str, Any] = {"input": card.input_name, "min": list(lo), "opt": list(opt), "max": list(hi)}
    if len(every) > 1:
        out["inputs"] = every
    return out
