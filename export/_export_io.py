"""Helpers of :mod:`srpose.export.model_export`: the image-input options check, the real inputs of an image
graph's parity check and the I/O shapes of a written file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from srpose.card import PIXEL_FORMATS
from srpose.tasks import PoseTask

__all__ = ["check_image_options", "real_image_feeds", "io_shapes"]


def check_image_options(task: PoseTask, opts: Any) -> None:
    """Refuse image-input options that do not fit the task or the opset."""
    from srpose.export.image_graph import MIN_OPSET
    from srpose.export.onnx_export import check_batch

    if int(opts.opset) < MIN_OPSET:
        raise ValueError(f"--image-input needs --opset {MIN_OPSET} or newer (GridSample), got {opts.opset}")
    if opts.pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"--pixel-format {opts.pixel_format!r}: expected bgr or rgb")
    if task.kind == "top-down":
        if opts.decode:
            raise ValueError("--image-input graphs always decode (keypoints in image pixels come out): drop --decode")
        if opts.shape_profile is not None:
            from srpose.tasks import parse_shape_profile

            parse_shape_profile(opts.shape_profile, multiple=1)
        if opts.image_batch is not None:
            check_batch(opts.image_batch)
    elif opts.image_batch is not None:
        raise ValueError("--image-batch applies to top-down image graphs; bottom-up ones take one image a call "
                         "(--batch)")


def real_image_feeds(task: PoseTask, card: Any, reader: Any) -> list[dict[str, Any]]:
    """The calibration reader's persons as image-graph inputs: their images, decoded once, and GT boxes."""
    from srpose.engines.base import empty_inputs
    from srpose.tasks._image_batches import feed_shapes, fill_feed

    feeds = []
    for batch in task.image_batches(reader.dataset, card, batch_size=reader.batch_size, indices=reader.indices):
        feeds.append(fill_feed(batch, empty_inputs(feed_shapes(batch, tuple(card.hw_profile[2])))))
    return feeds


def io_shapes(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(vi: Any) -> list[Any]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    def dtype(vi: Any) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    return dict(inputs=[dict(name=i.name, shape=dims(i), dtype=dtype(i)) for i in m.graph.input],
                outputs=[dict(name=o.name, shape=dims(o), dtype=dtype(o)) for o in m.graph.output])
