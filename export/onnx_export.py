"""PyTorch -> ONNX: a dynamic-batch FP32 graph with optional in-graph flip test and keypoint decoding.

The graph has one input ``input`` (N x 3 x H x W float32, normalised crops) and one output: ``heatmaps``
(N x K x h x w) or, with ``decode=True``, ``keypoints`` (N x K x 3: x, y, score in heatmap pixels). Bottom-up
(associative embedding) configs are handed to :mod:`export.bottom_up` (dynamic H and W, heatmaps + tag maps).
Everything a runtime needs to use the file (input size, normalisation, flip pairs, decoder, batch profile,
provenance) is stored in ``metadata_props`` as JSON-encoded strings (see :data:`METADATA_KEYS`, :func:`read_metadata`).

The in-graph flip test and decoders use only ops TensorRT handles natively (Concat, Reshape, Gather with constant
indices, ArgMax, ReduceMax, Where, arithmetic); no loops, no data-dependent shapes.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.config import PoseConfig

__all__ = [
    "INPUT_NAME", "METADATA_KEYS", "ExportWrapper", "export_onnx", "export_onnx_model", "read_metadata",
    "parse_batch", "check_batch", "model_sha256", "SUPPORTED_OPSETS",
]

INPUT_NAME = "input"
#: opset 13 is the first with per-channel Q/DQ; 17 gives TensorRT a real LayerNormalization.
SUPPORTED_OPSETS = range(13, 21)
#: metadata_props keys written by :func:`export_onnx` (values are JSON strings).
METADATA_KEYS = (
    "srpose_format", "model_name", "config", "config_source", "input_name", "output_name", "output_kind",
    "input_size", "heatmap_size", "num_joints", "output_channels", "bottom_up", "dynamic_hw", "mean", "std",
    "flip_pairs", "decoder", "test_cfg", "precision", "flip", "shift_heatmap", "decode", "decode_post", "batch_min",
    "batch_opt", "batch_max", "opset", "checkpoint_sha256", "tool_version", "torch_version",
)
METADATA_FORMAT = 1


# ----------------------------------------------------------------------------------------------- graph pieces
class FlipMerge(nn.Module):
    """Second half of a doubled batch is the mirrored input: flip its heatmaps back (swap paired channels, mirror,
    optionally shift one pixel right as mmpose's ``shift_heatmap``) and average with the first half."""

    def __init__(self, num_joints: int, heatmap_hw: tuple[int, int], flip_pairs: Sequence[Sequence[int]],
                 shift: bool):
        super().__init__()
        self.k, (self.h, self.w) = int(num_joints), (int(heatmap_hw[0]), int(heatmap_hw[1]))
        perm = list(range(self.k))
        for left, right in flip_pairs:
            if not (0 <= left < self.k and 0 <= right < self.k):
                raise ValueError(f"flip pair ({left}, {right}) is out of range for {self.k} joints")
            perm[left], perm[right] = right, left
        # mirrored column j is column W-1-j; the shift then takes column max(j-1, 0): one gather does both
        cols = [self.w - 1 - max(j - 1, 0) for j in range(self.w)] if shift else list(range(self.w - 1, -1, -1))
        self.register_buffer("perm", torch.tensor(perm, dtype=torch.int64), persistent=False)
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.int64), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(2, -1, self.k, self.h, self.w)
        back = y[1].index_select(1, self.perm).index_select(3, self.cols)
        return (y[0] + back) * 0.5


class SimpleDecode(nn.Module):
    """mmpose 0.x simple decoder (global arg-max, location -1 where the maximum is not positive, optional
    quarter-pixel shift) in exportable torch ops: N x K x H x W -> N x K x 3 (x, y, score) in heatmap pixels."""

    def __init__(self, heatmap_hw: tuple[int, int], post: bool):
        super().__init__()
        self.h, self.w = int(heatmap_hw[0]), int(heatmap_hw[1])
        self.post = bool(post)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        h, w = self.h, self.w
        k = heatmaps.shape[1]
        flat = heatmaps.reshape(-1, h * w)
        idx = flat.argmax(dim=1, keepdim=True)
        score = flat.gather(1, idx)
        positive = score > 0
        iy = torch.div(idx, w, rounding_mode="trunc")  # non-negative: trunc is floor, and no ONNX Mod
        ix = idx - iy * w
        minus1 = torch.full_like(idx, -1)
        px = torch.where(positive, ix, minus1)
        py = torch.where(positive, iy, minus1)
        x = px.to(torch.float32)
        y = py.to(torch.float32)
        if self.post:
            ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
            c = py.clamp(1, h - 2) * w + px.clamp(1, w - 2)
            nb = flat.gather(1, torch.cat([c + 1, c - 1, c + w, c - w], dim=1))
            zero = torch.zeros_like(x)
            x = x + torch.where(ok, torch.sign(nb[:, 0:1] - nb[:, 1:2]).to(torch.float32) * 0.25, zero)
            y = y + torch.where(ok, torch.sign(nb[:, 2:3] - nb[:, 3:4]).to(torch.float32) * 0.25, zero)
        return torch.cat([x, y, score.to(torch.float32)], dim=1).reshape(-1, k, 3)


class SRPoseDecode(nn.Module):
    """SRPose cell decoder (:func:`srpose.decode.decode_srpose_torch`) as a module, so its nodes are scoped
    ``/decode/...`` in the graph."""

    def __init__(self, post: bool, cell: int = 16):
        super().__init__()
        self.post, self.cell = bool(post), int(cell)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        from srpose.decode import decode_srpose_torch

        return decode_srpose_torch(heatmaps, cell=self.cell, post=self.post)


class ExportWrapper(nn.Module):
    """The model plus the optional in-graph flip test and decoder: what the ONNX graph computes.

    Node names are scoped by module: ``/model/backbone/...``, ``/model/keypoint_head/...``, ``/flip_merge/...``,
    ``/decode/...``.
    """

    def __init__(self, model: nn.Module, cfg: "PoseConfig", *, flip: bool = False, decode: bool = False):
        super().__init__()
        self.model = model
        self.flip = bool(flip)
        k = cfg.num_joints
        hw, hh = cfg.heatmap_size
        iw = cfg.image_size[0]
        test_cfg = cfg.test_cfg
        self.register_buffer("rev_w", torch.arange(iw - 1, -1, -1, dtype=torch.int64), persistent=False)
        self.flip_merge = (FlipMerge(k, (hh, hw), cfg.flip_pairs, bool(test_cfg.get("shift_heatmap", False)))
                           if flip else None)
        self.decode = _make_decoder(cfg) if decode else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.cat([x, x.index_select(3, self.rev_w)], dim=0)
        y = self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[-1]
        if self.flip_merge is not None:
            y = self.flip_merge(y)
        if self.decode is not None:
            y = self.decode(y)
        return y


def _decode_post(cfg: "PoseConfig") -> bool:
    post_process = cfg.test_cfg.get("post_process", "default")
    return post_process not in (None, False, "none")


def _make_decoder(cfg: "PoseConfig") -> nn.Module:
    decoder = str(cfg.data.get("decoder", "simple"))
    post_process = cfg.test_cfg.get("post_process", "default")
    hw, hh = cfg.heatmap_size
    if decoder == "srpose":
        if post_process == "unbiased":
            raise ValueError(f"{cfg.name}: the SRPose decoder refines only with the quarter-pixel shift, but "
                             f"test_cfg.post_process is 'unbiased'; set it to 'default' or export without --decode")
        if hh < 16 or hw < 16:
            raise ValueError(f"{cfg.name}: heatmaps of {hw}x{hh} hold no whole 16x16 SRPose cell; use a larger "
                             f"--input-size or export without --decode")
        return SRPoseDecode(_decode_post(cfg))
    if decoder == "simple":
        if post_process == "unbiased":
            raise ValueError(f"{cfg.name}: in-graph decoding supports post_process 'default' or None, not "
                             f"'unbiased' (DARK); export without --decode and let the evaluator decode the heatmaps")
        return SimpleDecode((hh, hw), _decode_post(cfg))
    raise ValueError(f"{cfg.name}: decoder {decoder!r} cannot be exported in the graph; export without --decode")


# ----------------------------------------------------------------------------------------------- helpers
def parse_batch(text: str | Sequence[int]) -> tuple[int, int, int]:
    """``"1,8,32"`` (or a sequence, or one number N meaning N,N,N) -> checked (min, opt, max)."""
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").split(",") if p]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--batch {text!r}: expected MIN,OPT,MAX integers such as 1,8,32") from None
    else:
        vals = [int(v) for v in text]
    if len(vals) == 1:
        vals = vals * 3
    return check_batch(vals)


def check_batch(batch: Sequence[int]) -> tuple[int, int, int]:
    """Validate a (min, opt, max) batch profile."""
    if len(batch) != 3:
        raise ValueError(f"batch profile {tuple(batch)} must have three values (min, opt, max), e.g. 1,8,32")
    lo, opt, hi = (int(v) for v in batch)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch profile ({lo}, {opt}, {hi}) must satisfy 1 <= min <= opt <= max")
    return lo, opt, hi


def model_sha256(model: "onnx.ModelProto | bytes | str | Path") -> str:
    """sha256 of a model's serialised bytes (or of a file)."""
    if isinstance(model, (str, Path)):
        data = Path(model).read_bytes()
    elif isinstance(model, bytes):
        data = model
    else:
        data = model.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in ONNX metadata")


def read_metadata(model: "onnx.ModelProto | str | Path") -> dict[str, Any]:
    """``metadata_props`` of an exported file, JSON values decoded (strings that are not JSON stay strings)."""
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


def set_metadata(model: "onnx.ModelProto", updates: Mapping[str, Any]) -> None:
    """Merge ``updates`` (JSON-encoded) into ``metadata_props``, keeping the keys sorted for determinism."""
    current = {p.key: p.value for p in model.metadata_props}
    current.update({k: _json(v) for k, v in updates.items()})
    del model.metadata_props[:]
    for k in sorted(current):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, current[k]


def _output_shape(model: nn.Module, cfg: "PoseConfig") -> tuple[int, int, int]:
    """(channels, h, w) of the model's output for one crop of the config's size, checked against the config."""
    w, h = cfg.image_size
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, h, w))
    if isinstance(y, (list, tuple)):
        y = y[-1]
    if y.ndim != 4 or y.shape[1] != cfg.num_joints:
        raise ValueError(f"{cfg.name}: the model returns shape {tuple(y.shape)}, expected 1 x {cfg.num_joints} x H x W")
    if (y.shape[3], y.shape[2]) != tuple(cfg.heatmap_size):
        raise ValueError(f"{cfg.name}: the model returns {y.shape[3]}x{y.shape[2]} heatmaps but the config says "
                         f"heatmap_size {cfg.heatmap_size[0]}x{cfg.heatmap_size[1]}")
    return int(y.shape[1]), int(y.shape[2]), int(y.shape[3])


def _sanitize(model: "onnx.ModelProto") -> None:
    """Drop exporter noise that is not part of the computation (doc strings), so equal weights give equal bytes."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""


# ----------------------------------------------------------------------------------------------- export
def export_onnx_model(model: nn.Module, cfg: "PoseConfig", *, batch: Sequence[int] = (1, 8, 32), flip: bool = False,
                      decode: bool = False, opset: int = 17, simplify: bool = True,
                      metadata: Mapping[str, Any] | None = None) -> "onnx.ModelProto":
    """Export ``model`` (built for ``cfg``) to a checked, metadata-carrying ``onnx.ModelProto`` (see
    :func:`export_onnx`)."""
    from srpose.models.bottom_up import is_bottom_up

    if is_bottom_up(cfg):  # heatmaps + tag maps, any image size: its own wrapper and metadata
        from srpose.export.bottom_up import export_bottom_up_model

        return export_bottom_up_model(model, cfg, decode=decode, flip=flip, batch=batch, opset=opset,
                                      simplify=simplify, metadata=metadata)
    lo, opt, hi = check_batch(batch)
    if int(opset) not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported: use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} "
                         "(17 recommended: TensorRT gets a real LayerNormalization)")
    was_training = model.training
    model.eval()
    try:
        return _export(model, cfg, (lo, opt, hi), flip, decode, int(opset), simplify, metadata)
    finally:
        model.train(was_training)


def _export(model: nn.Module, cfg: "PoseConfig", batch: tuple[int, int, int], flip: bool, decode: bool, opset: int,
            simplify: bool, metadata: Mapping[str, Any] | None) -> "onnx.ModelProto":
    import onnx

    from srpose import __version__

    lo, opt, hi = batch
    channels, hh, hw = _output_shape(model, cfg)
    wrapper = ExportWrapper(model, cfg, flip=flip, decode=decode).eval()
    out_name = "keypoints" if decode else "heatmaps"
    w, h = cfg.image_size
    dummy = torch.randn(max(lo, 2), 3, h, w, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (static H/W by design), legacy-exporter deprecation
        with torch.no_grad():
            torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=[out_name],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}},
                              opset_version=int(opset), do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        proto = _simplify(proto)
    _sanitize(proto)
    proto.graph.name = cfg.name
    test_cfg = cfg.test_cfg
    meta: dict[str, Any] = dict(
        srpose_format=METADATA_FORMAT, model_name=cfg.name, config=cfg.to_dict(), config_source=cfg.source,
        input_name=INPUT_NAME, output_name=out_name, output_kind=out_name, input_size=list(cfg.image_size),
        heatmap_size=[hw, hh], num_joints=cfg.num_joints, output_channels=channels if not decode else 3,
        bottom_up=False, dynamic_hw=False, mean=list(cfg.data["mean"]), std=list(cfg.data["std"]),
        flip_pairs=[list(p) for p in cfg.flip_pairs], decoder=str(cfg.data.get("decoder", "simple")),
        test_cfg={k: test_cfg.get(k) for k in ("flip_test", "shift_heatmap", "post_process", "modulate_kernel")},
        precision="fp32", flip=bool(flip), shift_heatmap=bool(test_cfg.get("shift_heatmap", False)),
        decode=bool(decode), decode_post=bool(decode and _decode_post(cfg)), batch_min=lo, batch_opt=opt,
        batch_max=hi, opset=int(opset), checkpoint_sha256=None, tool_version=f"srpose {__version__}",
        torch_version=torch.__version__.split("+")[0],
    )
    meta.update(metadata or {})
    set_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


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


def export_onnx(model: nn.Module, cfg: "PoseConfig", out_path: str | Path, *, batch: Sequence[int] = (1, 8, 32),
                flip: bool = False, decode: bool = False, opset: int = 17, simplify: bool = True,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Export ``model`` to ``out_path`` as an FP32 ONNX graph with a dynamic batch axis.

    ``batch`` = (min, opt, max) is stored for the TensorRT optimisation profile. ``flip`` folds the flip test into
    the graph (the batch is doubled inside), ``decode`` appends the config's decoder so the output is ``keypoints``
    (N x K x 3, heatmap pixels). ``metadata`` entries are added to (and override) the stored metadata, e.g.
    ``checkpoint_sha256``. The same weights give a byte-identical file. Written atomically.
    """
    from srpose._io import atomic_write_bytes

    proto = export_onnx_model(model, cfg, batch=batch, flip=flip,
                              decode=decode, opset=opset, simplify=simplify, metadata=metadata)
    return atomic_write_bytes(out_path, proto.SerializeToString(deterministic=True))
