"""Crop graph -> image-to-keypoints graph (``srpose export --image-input``): the pre- and post-processing of the
task (:meth:`~srpose.tasks.PoseTask.image_graph_parts`) traced to ONNX and stitched around an exported network of
any precision, so TensorRT runs everything from uint8 pixels to keypoints in image pixels in one engine.

Top-down::

    images  uint8 B x H x W x 3 ─┐                       ┌─ keypoints P x K x 3 (image pixels, score)
    boxes   float32 P x 5 ───────┼─ crop + normalise ─ network ─ flip merge ─ decode ─ to image ─┤
    box_image int32 P ───────────┘   (+ mirrored crops)                                          └─ scores P

Bottom-up: ``images`` uint8 N x H x W x 3 (the test resize done by the caller) -> normalise -> network (its own
outputs unchanged).

The network's nodes, names, casts and Q/DQ are kept as they are (node and tensor names of the pre- and
post-processing are scoped ``/preprocess/`` and ``/postprocess/``); the pre- and post-processing stay float32.
Any top-down crop graph can be wrapped: raw heatmaps (the usual case: flip and decoding are added around it), or
graphs that already flip and/or decode inside (then only what is missing is added).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from srpose.card import BOX_IMAGE, BOXES, IMAGES, KEYPOINTS, SCORES, ArtifactCard, card_from_onnx, card_to_onnx

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch.nn as nn

    from srpose.tasks import PoseTask

__all__ = ["ImageGraphOptions", "DEFAULT_IMAGE_BATCH", "DEFAULT_IMAGE_HW", "DEFAULT_PERSONS", "MIN_OPSET",
           "image_graph", "image_card", "write_image_graph", "task_of_card"]

#: (min, opt, max) images per call of a top-down image graph
DEFAULT_IMAGE_BATCH = (1, 8, 16)
#: ((H, W) min, opt, max) of the images (top-down; bottom-up keeps its export's shape profile)
DEFAULT_IMAGE_HW = ((32, 32), (480, 640), (2048, 2048))
#: (min, opt, max) persons per call: the evaluator sends 32 persons a batch
DEFAULT_PERSONS = (1, 32, 128)
#: GridSample needs opset 16
MIN_OPSET = 16


@dataclass
class ImageGraphOptions:
    """``flip``: the flip test in the graph (None: the config's ``test_cfg.flip_test``; bottom-up graphs keep what
    their export chose); ``persons`` / ``image_batch``: (min, opt, max) persons and images per call;
    ``shape_profile``: min, opt, max image sizes ``"WxH,WxH,WxH"`` (or ((W, H), ...)) of the (padded) images,
    default 32x32, 640x480, 2048x2048 (bottom-up: the export's); ``pixel_format``: ``bgr`` (OpenCV's decode, the
    default) or ``rgb``."""

    flip: bool | None = None
    persons: Sequence[int] | None = None
    image_batch: Sequence[int] | None = None
    shape_profile: Any = None
    pixel_format: str = "bgr"


def task_of_card(card: ArtifactCard) -> "PoseTask":
    """The task of an exported graph's card (its config; the card's codec decides the decoding)."""
    from srpose.config import PoseConfig
    from srpose.tasks import task_for

    if not card.config:
        raise ValueError(f"the card of {card.model_name!r} carries no config: re-export the model with "
                         "`srpose export`")
    task = task_for(PoseConfig.from_dict(card.config))
    if task.kind == "top-down" and tuple(card.input_size) != tuple(task.cfg.image_size):
        task = task_for(task.cfg.with_input_size(*card.input_size))
    return task


def _opset(proto: "onnx.ModelProto") -> int:
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _trace(module: "nn.Module", example: tuple, names: Sequence[str], outputs: Sequence[str],
           axes: dict[str, dict[int, str]], opset: int) -> "onnx.ModelProto":
    from srpose.export.onnx_export import _simplify, trace_module

    return _simplify(trace_module(module.eval(), example, names, outputs, axes, opset))


def _rename(proto: "onnx.ModelProto", scope: str, keep: dict[str, str]) -> "onnx.ModelProto":
    """Every tensor and node of ``proto`` scoped ``/scope/`` except the names in ``keep`` (renamed as it says)."""
    def scoped(n: str) -> str:
        return f"/{scope}{n}" if n.startswith("/") else f"/{scope}/.{n}"  # 'Mul_1' and '/Mul_1' stay apart

    def name(n: str) -> str:
        return keep.get(n, scoped(n)) if n else n

    g = proto.graph
    for node in g.node:
        node.name = scoped(node.name) if node.name else ""
        node.input[:] = [name(n) for n in node.input]
        node.output[:] = [name(n) for n in node.output]
    for coll in (g.initializer, g.input, g.output, g.value_info):
        for t in coll:
            t.name = name(t.name)
    return proto


def _rename_tensor(proto: "onnx.ModelProto", old: str, new: str) -> str:
    """Rename tensor ``old`` of ``proto`` (e.g. a network output that the graph's own outputs now take the name
    of); returns ``new``."""
    g = proto.graph
    for node in g.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for coll in (g.output, g.value_info):
        for t in coll:
            if t.name == old:
                t.name = new
    return new


def _stitch(core: "onnx.ModelProto", pre: "onnx.ModelProto", post: "onnx.ModelProto | None",
            outputs: Sequence[Any]) -> "onnx.ModelProto":
    """One graph: ``pre`` feeding the core's input, ``post`` reading the core's outputs (None: the core's outputs
    are the graph's); graph inputs are ``pre``'s, outputs ``outputs`` (value infos)."""
    import onnx

    g = onnx.GraphProto()
    g.CopyFrom(core.graph)
    del g.input[:]
    del g.output[:]
    g.input.extend(pre.graph.input)
    g.output.extend(outputs)
    parts = [pre] + ([post] if post is not None else [])
    nodes = list(pre.graph.node) + list(core.graph.node) + [n for p in parts[1:] for n in p.graph.node]
    del g.node[:]
    g.node.extend(nodes)
    for p in parts:  # their value infos are left out: the tracer's symbolic dims need not hold after stitching
        g.initializer.extend(p.graph.initializer)
    model = onnx.helper.make_model(g, opset_imports=list(core.opset_import))
    model.ir_version = max(core.ir_version, pre.ir_version)
    model.producer_name, model.producer_version = core.producer_name, core.producer_version
    model.metadata_props.extend(core.metadata_props)
    return model


def _top_down_parts(task: "PoseTask", card: ArtifactCard, flip: bool, pixel_format: str, opset: int
                    ) -> tuple["onnx.ModelProto", "onnx.ModelProto"]:
    import numpy as np

    pre, post = task.image_graph_parts(flip=flip, network_flips=card.flip, network_decodes=card.decode,
                                       pixel_format=pixel_format)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    boxes = np.array([[4, 4, 20, 30, 0.9], [10, 2, 30, 20, 0.5], [0, 0, 40, 36, 0.7]], np.float32)
    box_image = np.array([0, 1, 1], np.int32)
    persons = {0: "persons"}
    pre_p = _trace(pre, (images, boxes, box_image), (IMAGES, BOXES, BOX_IMAGE), ("crops",),
                   {IMAGES: {0: "images", 1: "height", 2: "width"}, BOXES: persons, BOX_IMAGE: persons,
                    "crops": {0: "crops"}}, opset)
    w, h = card.heatmap_size
    n = 6 if flip and not card.flip else 3
    out = (rng.random((n, card.num_joints, 3), dtype=np.float32) if card.decode
           else rng.random((n, card.num_joints, h, w), dtype=np.float32))
    post_p = _trace(post, (out, boxes), ("outputs", BOXES), (KEYPOINTS, SCORES),
                    {"outputs": {0: "crops"}, BOXES: persons, KEYPOINTS: persons, SCORES: persons}, opset)
    return pre_p, post_p


def image_card(card: ArtifactCard, task: "PoseTask", options: ImageGraphOptions | None = None, *,
               source: str = "card") -> ArtifactCard:
    """The card of the image-to-keypoints graph of a graph with ``card`` (its task ``task``); ValueError for a
    flip test that cannot be had around that graph."""
    from srpose.export.onnx_export import check_batch
    from srpose.tasks import parse_shape_profile

    opts = options or ImageGraphOptions()
    if task.kind != "top-down":
        if opts.flip is not None and bool(opts.flip) != card.flip:
            raise ValueError(f"{source}: bottom-up image graphs keep the flip test of the graph they wrap "
                             f"({'on' if card.flip else 'off'}); export it with{'out' if card.flip else ''} --flip")
        hw = card.hw_profile if opts.shape_profile is None else parse_shape_profile(opts.shape_profile)
        return card.replace(image_input=True, input_name=IMAGES, pixel_format=opts.pixel_format, hw_profile=hw)
    want_flip = bool(task.cfg.test_cfg.get("flip_test", True)) if opts.flip is None else bool(opts.flip)
    if card.flip and not want_flip:
        raise ValueError(f"{source} has the flip test in its graph: wrap a graph exported without --flip to get an "
                         "image graph without it")
    if card.decode and want_flip and not card.flip:
        raise ValueError(f"{source} decodes in its graph without the flip test, which cannot be added after "
                         "decoding: wrap the raw graph (exported without --decode), or ask for no flip")
    hw = DEFAULT_IMAGE_HW if opts.shape_profile is None else parse_shape_profile(opts.shape_profile, multiple=1)
    return card.replace(image_input=True, input_name=IMAGES, output_names=[KEYPOINTS, SCORES], decode=True,
                        flip=want_flip, pixel_format=opts.pixel_format, hw_profile=hw,
                        batch=check_batch(opts.persons or DEFAULT_PERSONS),
                        image_batch=check_batch(opts.image_batch or DEFAULT_IMAGE_BATCH))


def image_graph(core: "onnx.ModelProto", options: ImageGraphOptions | None = None, *,
                source: str = "ONNX model") -> "onnx.ModelProto":
    """The image-to-keypoints graph of an exported crop graph ``core`` (an ``onnx.ModelProto`` with its card)."""
    import onnx

    opts = options or ImageGraphOptions()
    card = card_from_onnx(core, source=source)
    if card.image_input:
        raise ValueError(f"{source} already takes images (it was exported with --image-input)")
    opset = _opset(core)
    if opset < MIN_OPSET:
        raise ValueError(f"{source} is opset {opset}; image-input graphs need opset >= {MIN_OPSET} (GridSample): "
                         "re-export with --opset 17")
    if len(core.graph.output) != len(card.output_names):
        raise ValueError(f"{source}: its card names outputs {card.output_names} but the graph has "
                         f"{[o.name for o in core.graph.output]}: re-export it")
    task = task_of_card(card)
    core_in = card.input_name
    new = image_card(card, task, opts, source=source)
    if task.kind == "top-down":
        pre, post = _top_down_parts(task, card, new.flip, opts.pixel_format, opset)
        net_out = _rename_tensor(core, card.output_names[0], f"/network/{card.output_names[0]}")
        _rename(pre, "preprocess", {IMAGES: IMAGES, BOXES: BOXES, BOX_IMAGE: BOX_IMAGE, "crops": core_in})
        _rename(post, "postprocess", {"outputs": net_out, BOXES: BOXES, KEYPOINTS: KEYPOINTS, SCORES: SCORES})
        outputs = list(post.graph.output)
    else:
        pre_m, _ = task.image_graph_parts(flip=card.flip, pixel_format=opts.pixel_format)
        import numpy as np

        images = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        pre = _trace(pre_m, (images,), (IMAGES,), ("normalised",),
                     {IMAGES: {0: "batch", 1: "height", 2: "width"}, "normalised": {0: "batch"}}, opset)
        _rename(pre, "preprocess", {IMAGES: IMAGES, "normalised": core_in})
        post, outputs = None, list(core.graph.output)
    model = _stitch(core, pre, post, outputs)
    card_to_onnx(model, new)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_image_graph(core_path: str | Path, out_path: str | Path, options: ImageGraphOptions | None = None) -> Path:
    """:func:`image_graph` of the ONNX file ``core_path``, written atomically to ``out_path``."""
    import onnx

    from srpose._io import atomic_write_bytes

    core = onnx.load(str(core_path))
    model = image_graph(core, options, source=str(core_path))
    return atomic_write_bytes(out_path, model.SerializeToString(deterministic=True))
