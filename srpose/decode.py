"""Top-down heatmap decoding as one function call, for scripts and notebooks: a thin front of the codecs.

``decode_heatmaps(heatmaps, center, scale, kind=...)`` builds the codec ``kind`` names (``"srpose"``:
:class:`~srpose.codecs.SRPoseHeatmap`, ``"simple"``: :class:`~srpose.codecs.MSRAHeatmap`) and decodes with it.
``kind`` has no default on purpose: the model's task decides the codec (``srpose.tasks.task_for(cfg).codec``);
both reproduce the official decoders exactly (``tests/_decode_ref.py`` restates those as oracles).

numpy input gives numpy output; torch input gives torch output on the same device, using torch ops only.
"""
from __future__ import annotations

from typing import Any, Literal, Tuple

from srpose.codecs import MSRAHeatmap, SRPoseHeatmap, heatmap_to_image
from srpose.codecs._heatmap_np import check_heatmaps, check_kernel, gaussian_kernel_1d

__all__ = ["decode_heatmaps", "decode_srpose_torch", "heatmap_to_image", "gaussian_kernel_1d"]

Kind = Literal["srpose", "simple"]
_KINDS = ("srpose", "simple")
_POST_PROCESS = ("default", "unbiased", None)


def decode_heatmaps(heatmaps: Any, center: Any, scale: Any, *, kind: Kind, post: bool = True,
                    post_process: str | None = "default", modulate_kernel: int = 11,
                    cell: int = 16) -> Tuple[Any, Any]:
    """Decode N x K x H x W heatmaps to image keypoints (N x K x 2) and scores (N x K x 1), float32.

    ``center`` / ``scale`` are N x 2 (mmpose units: scale in 200 px); they are cast to float32 as mmpose does.
    ``post=False`` (or ``post_process=None``) skips the sub-pixel refinement. ``kind="srpose"`` supports only
    the official quarter-pixel shift (``post_process="default"``); ``"unbiased"`` (DARK, kernel
    ``modulate_kernel``) is a ``kind="simple"`` option.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not supported: use one of {_KINDS}")
    if post_process not in _POST_PROCESS:
        raise ValueError(f"post_process={post_process!r} is not supported: use 'default', 'unbiased' or None")
    if not post:
        post_process = None
    if kind == "srpose" and post_process == "unbiased":
        raise ValueError("kind='srpose' refines only with the official quarter-pixel shift: use "
                         "post_process='default', or kind='simple' for post_process='unbiased' (DARK)")
    if post_process == "unbiased":
        check_kernel(modulate_kernel)
    _, k, h, w = check_heatmaps(heatmaps)
    common = dict(num_joints=k, heatmap_size=(w, h), input_size=(w, h), post_process=post_process,
                  modulate_kernel=modulate_kernel)
    codec = SRPoseHeatmap(cell=cell, **common) if kind == "srpose" else MSRAHeatmap(**common)
    return codec.decode_to_image(heatmaps, center, scale)


def decode_srpose_torch(heatmaps: Any, cell: int = 16, post: bool = True) -> Any:
    """SRPose cell decoder in torch ops: N x K x H x W heatmaps -> N x K x 3 (x, y, score) in heatmap pixels.

    Has no data-dependent Python control flow, so it traces into an ONNX graph (opset >= 11) and runs on any
    device. Output is float32.
    """
    from srpose.codecs._heatmap_torch import decode_srpose_torch as _decode

    return _decode(heatmaps, cell=cell, post=post)
