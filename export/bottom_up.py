"""Bottom-up models -> ONNX with dynamic batch, height and width (aspect-preserving inputs).

Two graph kinds, one input ``input`` (N x 3 x H x W float32, H and W multiples of 64 as the bottom-up resize gives):

- raw (default): one output ``outputs`` N x (K + L) x h x w, the head's heatmaps then tag maps. Metadata
  ``output_kind`` is ``"heatmaps"`` so the generic ONNX Runtime / TensorRT backends run it; the evaluator does flip
  test, projection, NMS, top-k and grouping.
- decoded (``decode=True``): the flip test (batch doubled inside, when ``flip``), projection to the input size,
  heatmap NMS and top-k are in the graph. Outputs ``heatmaps`` N x K x H x W, ``tags`` N x K x H x W x L and
  ``candidates`` N x K x M x (3 + L) (x, y, value, tags); grouping, adjust and refine stay on the host
  (``output_kind`` ``"bottomup_candidates"``).

The shape profile (``shape_min/opt/max`` = [N, 3, H, W], plus ``height_*``/``width_*``) bounds the inputs for the
TensorRT optimisation profile; ONNX Runtime runs any size.
"""
from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from srpose.export.onnx_export import (
    INPUT_NAME,
    METADATA_FORMAT,
    SUPPORTED_OPSETS,
    _sanitize,
    _simplify,
    check_batch,
    set_metadata,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from srpose.config import PoseConfig

__all__ = ["BottomUpExportWrapper", "ShapeProfile", "default_shape_profile", "parse_shape_profile",
           "export_bottom_up_model", "export_bottom_up", "add_bottom_up_export_arguments", "run_bottom_up_export",
           "run_bottom_up_export_from_export_args"]

RAW_OUTPUT = "outputs"
DECODED_OUTPUTS = ("heatmaps", "tags", "candidates")
#: ((w, h) min, (w, h) opt, (w, h) max) input sizes.
ShapeProfile = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
_ALIGN = 64


def _round_up(x: float, base: int = _ALIGN) -> int:
    return int(-(-x // base) * base)


def default_shape_profile(input_size: int) -> ShapeProfile:
    """min = the square input; opt = the common 4:3 landscape size (704 x 512 for 512); max = 3x per side
    (aspect ratios up to 3:1)."""
    s = int(input_size)
    return (s, s), (_round_up(s * 4 / 3), s), (3 * s, 3 * s)


def parse_shape_profile(text: str | Sequence[Sequence[int]]) -> ShapeProfile:
    """``"512x512,704x512,1536x1536"`` (WxH min, opt, max) -> checked profile; sizes must be multiples of 64."""
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").lower().split(",") if p]
        try:
            sizes = [tuple(int(v) for v in p.split("x")) for p in parts]
        except ValueError:
            raise ValueError(f"--shape-profile {text!r}: expected MIN,OPT,MAX sizes WxH such as "
                             "512x512,704x512,1536x1536") from None
    else:
        sizes = [tuple(int(v) for v in s) for s in text]
    if len(sizes) != 3 or any(len(s) != 2 for s in sizes):
        raise ValueError(f"shape profile {text!r} must have three WxH sizes (min, opt, max)")
    for s in sizes:
        if s[0] < _ALIGN or s[1] < _ALIGN or s[0] % _ALIGN or s[1] % _ALIGN:
            raise ValueError(f"shape profile size {s[0]}x{s[1]} must be positive multiples of {_ALIGN} (the "
                             "bottom-up resize rounds the long side up to a multiple of 64)")
    (w0, h0), (w1, h1), (w2, h2) = sizes
    if not (w0 <= w1 <= w2 and h0 <= h1 <= h2):
        raise ValueError(f"shape profile {sizes} must satisfy min <= opt <= max in width and in height")
    return sizes[0], sizes[1], sizes[2]  # type: ignore[return-value]


def _stride(cfg: "PoseConfig") -> int:
    iw, ih = cfg.image_size
    hw, hh = cfg.heatmap_size
    if iw % hw or ih % hh or iw // hw != ih // hh:
        raise ValueError(f"{cfg.name}: input {iw}x{ih} is not an integer multiple of heatmap {hw}x{hh}")
    return iw // hw


class BottomUpExportWrapper(nn.Module):
    """The model, optionally followed by the in-graph flip test, projection, NMS and top-k
    (:class:`srpose.bottom_up.BottomUpDecode`). Node names: ``/model/...``, ``/decode/...``."""

    def __init__(self, model: nn.Module, cfg: "PoseConfig", *, decode: bool = False, flip: bool = False):
        super().__init__()
        from srpose.bottom_up import BottomUpDecode, GroupParams, flip_index_from_pairs

        if flip and not decode:
            raise ValueError("the bottom-up flip test in the graph needs --decode (the NMS runs on the merged "
                             "heatmaps); without --decode the evaluator flips on the host")
        self.model = model
        self.flip = bool(flip)
        params = GroupParams.from_test_cfg(cfg.test_cfg, cfg.num_joints)
        self.decode = BottomUpDecode(
            cfg.num_joints, flip_index_from_pairs(cfg.num_joints, cfg.flip_pairs) if flip else None,
            upsample=_stride(cfg), max_num_people=params.max_num_people, nms_kernel=params.nms_kernel,
            nms_padding=params.nms_padding, tag_per_joint=params.tag_per_joint) if decode else None

    def forward(self, x: torch.Tensor) -> Any:
        if self.flip:
            x = torch.cat([x, torch.flip(x, [3])], dim=0)
        y = self.model(x)
        if isinstance(y, (list, tuple)):
            y = y[-1]
        return y if self.decode is None else self.decode(y)


def export_bottom_up_model(model: nn.Module, cfg: "PoseConfig", *, decode: bool = False, flip: bool | None = None,
                           shape_profile: ShapeProfile | None = None, batch: Sequence[int] = (1, 1, 4),
                           opset: int = 17, simplify: bool = True,
                           metadata: Mapping[str, Any] | None = None) -> "onnx.ModelProto":
    """Export a bottom-up ``model`` (built for ``cfg``) to a checked ``onnx.ModelProto`` with dynamic N, H, W.

    ``flip`` defaults to ``test_cfg.flip_test`` when decoding (and must be off without ``decode``);
    ``shape_profile`` defaults to :func:`default_shape_profile` of the config's input size.
    """
    import onnx

    from srpose import __version__
    from srpose.bottom_up import GroupParams, flip_index_from_pairs
    from srpose.models.bottom_up import is_bottom_up

    if not is_bottom_up(cfg):
        raise ValueError(f"{cfg.name} is not a bottom-up model (model type {cfg.model.get('type')!r}); use the "
                         "top-down export")
    if int(opset) not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported: use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    lo, opt, hi = check_batch(batch)
    test_cfg = cfg.test_cfg
    flip = bool(test_cfg.get("flip_test", True)) if (flip is None and decode) else bool(flip)
    profile = shape_profile or default_shape_profile(cfg.image_size[0])
    profile = parse_shape_profile(profile)
    stride = _stride(cfg)
    was_training = model.training
    model.eval()
    try:
        wrapper = BottomUpExportWrapper(model, cfg, decode=decode, flip=flip).eval()
        out_names = list(DECODED_OUTPUTS) if decode else [RAW_OUTPUT]
        (w1, h1) = profile[1]
        dummy = torch.randn(1, 3, h1, w1, generator=torch.Generator().manual_seed(0))
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        for name in out_names:
            axes[name] = {0: "batch"} if name == "candidates" else {0: "batch", 2: "out_height", 3: "out_width"}
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, input_names=[INPUT_NAME],
                                  output_names=out_names, dynamic_axes=axes, opset_version=int(opset),
                                  do_constant_folding=True)
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        proto = _simplify(proto)
    _sanitize(proto)
    proto.graph.name = cfg.name
    params = GroupParams.from_test_cfg(test_cfg, cfg.num_joints)
    (w0, h0), (w1, h1), (w2, h2) = profile
    meta: dict[str, Any] = dict(
        srpose_format=METADATA_FORMAT, model_name=cfg.name, config=cfg.to_dict(), config_source=cfg.source,
        bottom_up=True, input_name=INPUT_NAME, output_name=out_names[0], output_names=out_names,
        output_kind="bottomup_candidates" if decode else "heatmaps", input_size=list(cfg.image_size),
        heatmap_size=list(cfg.heatmap_size), stride=stride, num_joints=cfg.num_joints, mean=list(cfg.data["mean"]),
        std=list(cfg.data["std"]), flip_pairs=[list(p) for p in cfg.flip_pairs],
        flip_index=flip_index_from_pairs(cfg.num_joints, cfg.flip_pairs), decoder="associative_embedding",
        test_cfg=dict(test_cfg), precision="fp32", flip=flip, decode=bool(decode),
        max_num_people=params.max_num_people, nms_kernel=params.nms_kernel, nms_padding=params.nms_padding,
        batch_min=lo, batch_opt=opt, batch_max=hi, dynamic_hw=True,
        height_min=h0, height_opt=h1, height_max=h2, width_min=w0, width_opt=w1, width_max=w2,
        shape_min=[lo, 3, h0, w0], shape_opt=[opt, 3, h1, w1], shape_max=[hi, 3, h2, w2], opset=int(opset),
        checkpoint_sha256=None, tool_version=f"srpose {__version__}", torch_version=torch.__version__.split("+")[0],
    )
    meta.update(metadata or {})
    set_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_bottom_up(model: nn.Module, cfg: "PoseConfig", out_path: str | Path, **kwargs: Any) -> Path:
    """:func:`export_bottom_up_model` written atomically to ``out_path`` (deterministic bytes)."""
    from srpose._io import atomic_write_bytes

    proto = export_bottom_up_model(model, cfg, **kwargs)
    return atomic_write_bytes(out_path, proto.SerializeToString(deterministic=True))


# ----------------------------------------------------------------------------------------------- parity + CLI
def reference_outputs(model: nn.Module, cfg: "PoseConfig", x: np.ndarray, *, decode: bool,
                      flip: bool) -> list[np.ndarray]:
    """What the exported graph computes, in PyTorch eager (list of outputs)."""
    wrapper = BottomUpExportWrapper(model, cfg, decode=decode, flip=flip).eval()
    with torch.no_grad():
        out = wrapper(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def parity_check(path: str | Path, model: nn.Module, cfg: "PoseConfig", sizes: Sequence[tuple[int, int]], *,
                 seed: int = 0) -> dict[str, Any]:
    """ONNX Runtime (CPU) against PyTorch on random inputs of each (w, h): max abs error and relative L2 of each
    output map (candidates compared as values only, their order may differ on ties)."""
    import onnxruntime as ort

    from srpose.export.onnx_export import read_metadata

    meta = read_metadata(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {}
    for w, h in sizes:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        ref = reference_outputs(model, cfg, x, decode=bool(meta.get("decode")), flip=bool(meta.get("flip")))
        got = sess.run(names, {INPUT_NAME: x})
        entry = {}
        for name, r, g in zip(names, ref, got):
            if r.shape != g.shape:
                raise RuntimeError(f"{path}: output {name!r} has shape {g.shape} in ONNX Runtime but {r.shape} in "
                                   f"PyTorch at input {w}x{h}")
            if name == "candidates":  # values sorted per joint: robust to tie order
                r, g = np.sort(r[..., 2], axis=-1), np.sort(g[..., 2], axis=-1)
            diff = np.abs(r.astype(np.float64) - g)
            entry[name] = dict(max_abs=float(diff.max()) if diff.size else 0.0,
                               rel_l2=float(np.linalg.norm(diff) / max(np.linalg.norm(r), 1e-12)))
        report[f"{w}x{h}"] = entry
    return report


def add_bottom_up_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of the bottom-up export (``srpose export`` for bottom-up models)."""
    from srpose.cli import add_model_args

    add_model_args(p)
    p.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--name", default=None, help="base name of the output files (default: the config's name)")
    p.add_argument("--decode", action="store_true",
                   help="flip test, projection, heatmap NMS and top-k in the graph (grouping stays on the host)")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="with --decode: leave the flip test out of the graph (default: the config's flip_test)")
    p.add_argument("--shape-profile", default=None, metavar="MIN,OPT,MAX",
                   help="input sizes WxH for TensorRT, e.g. 512x512,704x512,1536x1536 (default: derived from the "
                        "input size)")
    p.add_argument("--batch", default="1,1,4", metavar="MIN,OPT,MAX", help="batch profile (default: 1,1,4)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxsim")


def run_bottom_up_export(args: argparse.Namespace) -> int:
    """Write ``DIR/<name>.fp32.onnx`` and ``DIR/<name>.export.json`` (with a parity check against PyTorch)."""
    from srpose.export.commands import check_out_dir
    from srpose.export.onnx_export import parse_batch
    from srpose import get_config
    from srpose._io import atomic_write_json, sha256_file
    from srpose.checkpoint import build_with_weights

    cfg = get_config(args.model)
    profile = parse_shape_profile(args.shape_profile) if args.shape_profile else None
    batch = parse_batch(args.batch)
    out_dir = check_out_dir(args.out_dir)
    name = args.name or cfg.name
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"--name {name!r} must be a plain file name without folders")
    if args.flip is not None and not args.decode:
        raise ValueError("--no-flip only applies with --decode (without it the evaluator runs the flip test)")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    model, ckpt_sha = build_with_weights(cfg, args.checkpoint, command="srpose export")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.fp32.onnx"
    export_bottom_up(model, cfg, path, decode=args.decode, flip=args.flip, shape_profile=profile, batch=batch,
                     opset=args.opset, simplify=args.simplify, metadata=dict(checkpoint_sha256=ckpt_sha))
    prof = profile or default_shape_profile(cfg.image_size[0])
    parity = parity_check(path, model, cfg, [prof[0], prof[1]])
    report = dict(model=cfg.name, name=name, file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
                  decode=bool(args.decode), shape_profile=dict(zip(("min", "opt", "max"), [list(s) for s in prof])),
                  batch=dict(zip(("min", "opt", "max"), batch)), checkpoint=args.checkpoint,
                  checkpoint_sha256=ckpt_sha, parity=parity,
                  parity_reference="PyTorch eager (same flip/decode), ONNX Runtime CPU, random inputs")
    atomic_write_json(out_dir / f"{name}.export.json", report)
    for size, outs in parity.items():
        print(f"{path}  {size}: " + ", ".join(f"{k} max abs {v['max_abs']:.3g} rel L2 {v['rel_l2']:.3g}"
                                              for k, v in outs.items()))
    return 0


#: ``srpose export --batch`` default of top-down models; bottom-up exports then use :data:`BOTTOM_UP_BATCH`.
_TOP_DOWN_BATCH_DEFAULT = "1,8,32"
BOTTOM_UP_BATCH = "1,1,4"


def run_bottom_up_export_from_export_args(args: argparse.Namespace) -> int:
    """``srpose export`` on a bottom-up model: map the generic export options onto :func:`run_bottom_up_export`,
    refusing those that have no bottom-up meaning."""
    precisions = list(dict.fromkeys(getattr(args, "precision", None) or ["fp32"]))
    if precisions != ["fp32"]:
        raise ValueError(f"--precision {' '.join(precisions)}: bottom-up models export fp32 only for now; drop "
                         "--precision (TensorRT builds FP16 from the fp32 graph with `srpose build --legacy-fp16` "
                         "on TensorRT 10)")
    if getattr(args, "input_size", None):
        raise ValueError("--input-size does not apply to bottom-up models (any size runs): bound the TensorRT "
                         "input sizes with --shape-profile MIN,OPT,MAX instead")
    if getattr(args, "calib_ann", None) or getattr(args, "calib_images", None):
        raise ValueError("bottom-up models have no INT8 export yet: drop --calib-ann / --calib-images")
    if getattr(args, "flip", False) and getattr(args, "no_flip", False):
        raise ValueError("give --flip or --no-flip, not both")
    if (getattr(args, "flip", False) or getattr(args, "no_flip", False)) and not args.decode:
        raise ValueError("--flip / --no-flip on a bottom-up model need --decode (without it the evaluator runs the "
                         "flip test on the host)")
    flip = True if getattr(args, "flip", False) else (False if getattr(args, "no_flip", False) else None)
    batch = args.batch if args.batch and args.batch != _TOP_DOWN_BATCH_DEFAULT else BOTTOM_UP_BATCH
    bu = argparse.Namespace(model=args.model, checkpoint=args.checkpoint, out_dir=args.out_dir, name=args.name,
                            decode=bool(args.decode), flip=flip, shape_profile=getattr(args, "shape_profile", None),
                            batch=batch, opset=args.opset, simplify=getattr(args, "simplify", True))
    return run_bottom_up_export(bu)
