"""The torch pieces of image-to-keypoints graphs (``srpose export --image-input``): what runs before and after the
network when the graph takes uint8 images instead of normalised crops.

Top-down: :class:`ImageCrops` (boxes -> the evaluator's crop geometry, one bilinear ``GridSample`` for every
person of every image, channel order and normalisation, optional mirrored crops) and :class:`ImagePeople` (optional
flip merge, the codec's decoder with its refinement, back to image pixels, the evaluator's person rescoring).
Bottom-up: :class:`ImageNormalize` (uint8 NHWC -> normalised NCHW). They are traced to ONNX separately and stitched
around an exported crop graph of any precision (:mod:`srpose.export.image_graph`), so FP16 / INT8 / mixed networks
keep their own conversion and these parts stay float32 (pixel coordinates need it).

The crop reproduces mmpose's ``TopDownAffine`` without rotation: crop pixel (u, v) samples the image at
``center + ((u, v) - input_size / 2) * zoom`` with ``zoom = scale_w * 200 / input_w`` (the box width sets the
zoom), bilinearly, zero outside the image, as ``cv2.warpAffine(..., INTER_LINEAR)`` with a constant zero border
does (OpenCV samples at 1/32 pixel and rounds to uint8, so the two agree to about one grey level, not bit for bit).

The images of a call are one tall image inside the graph: B x H x W (zero-padded to a common size by the caller)
gets one zero row appended to each image, is stacked to (B * (H + 1)) x W, and each person's sampling rows are
offset by its image index. The row coordinate is clamped to [-1, H] within its image first, so a crop reaching past
an image's top or bottom reads zeros (the appended row, or the previous image's), never a neighbour's pixels. This
takes one GridSample (TensorRT 10's parser supports it; AffineGrid it does not) without gathering a copy of an
image per person.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BoxGeometry", "ImageCrops", "ImagePeople", "ImageNormalize", "ImageToKeypoints", "channel_order"]

PIXEL_STD = 200.0


def channel_order(pixel_format: str) -> list[int]:
    """Input channel index of each RGB channel for images of ``pixel_format``."""
    if pixel_format not in ("bgr", "rgb"):
        raise ValueError(f"pixel_format {pixel_format!r}: expected 'bgr' (OpenCV's order) or 'rgb'")
    return [2, 1, 0] if pixel_format == "bgr" else [0, 1, 2]


class BoxGeometry(nn.Module):
    """P x 5 boxes (x, y, w, h, score) -> centre P x 2 and scale P x 2 (200-px units), as
    :func:`srpose.data.transforms.box_to_center_scale`: aspect ratio fixed to ``input_size`` (W, H), padded."""

    def __init__(self, input_size: Sequence[int], padding: float = 1.25) -> None:
        super().__init__()
        self.aspect = float(input_size[0]) / float(input_size[1])
        self.padding = float(padding)

    def forward(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, w, h = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
        center = torch.cat([x + w * 0.5, y + h * 0.5], dim=1)
        wide = torch.maximum(w, h * self.aspect)  # w > aspect h: h grows to w / aspect; else w grows to h aspect
        tall = torch.maximum(h, w / self.aspect)
        scale = torch.cat([wide, tall], dim=1) * (self.padding / PIXEL_STD)
        return center, scale


class ImageCrops(nn.Module):
    """uint8 images B x H x W x 3 (``pixel_format``), boxes P x 5, box image indices P -> normalised float32 crops
    P x 3 x h x w of ``input_size`` (W, H), followed by their mirror images when ``flip`` (2P crops)."""

    def __init__(self, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                 pixel_format: str = "bgr", flip: bool = False, padding: float = 1.25) -> None:
        super().__init__()
        self.w, self.h = int(input_size[0]), int(input_size[1])
        self.geometry = BoxGeometry(input_size, padding)
        self.flip = bool(flip)
        self.normalize = ChannelNormalize(mean, std, pixel_format=pixel_format)
        self.register_buffer("u", torch.arange(self.w, dtype=torch.float32) - self.w * 0.5, persistent=False)
        self.register_buffer("v", torch.arange(self.h, dtype=torch.float32) - self.h * 0.5, persistent=False)
        self.register_buffer("rev_w", torch.arange(self.w - 1, -1, -1, dtype=torch.int64), persistent=False)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, box_image: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)  # (TensorRT takes uint8 only into a Cast)
        size = torch._shape_as_tensor(x).to(torch.float32)  # traced: B, H, W stay dynamic
        x = F.pad(x, (0, 0, 0, 0, 0, 1))  # one zero row below every image
        height, width = size[1], size[2]
        tall = x.flatten(0, 1).unsqueeze(0).permute(0, 3, 1, 2)  # 1 x 3 x B(H+1) x W
        center, scale = self.geometry(boxes)
        zoom = scale[:, 0:1] * (PIXEL_STD / self.w)  # P x 1: only the box width sets the zoom (mmpose)
        xs = center[:, 0:1] + self.u[None, :] * zoom  # P x w, image pixels
        ys = center[:, 1:2] + self.v[None, :] * zoom  # P x h
        ys = torch.minimum(torch.maximum(ys, torch.full_like(ys, -1.0)), height)  # zeros past the image's rows
        ys = ys + box_image.to(torch.float32)[:, None] * (height + 1.0)
        gx = (2.0 * xs + 1.0) / width - 1.0  # GridSample's align_corners=False pixel centres
        gy = (2.0 * ys + 1.0) / (size[0] * (height + 1.0)) - 1.0
        p = boxes.shape[0]
        grid = torch.stack([gx[:, None, :].expand(p, self.h, self.w), gy[:, :, None].expand(p, self.h, self.w)], -1)
        crops = F.grid_sample(tall, grid.reshape(1, -1, self.w, 2), mode="bilinear", padding_mode="zeros",
                              align_corners=False)  # 1 x 3 x (P h) x w
        crops = crops.reshape(3, -1, self.h, self.w).permute(1, 0, 2, 3)
        crops = self.normalize(crops)
        if self.flip:
            crops = torch.cat([crops, crops.index_select(3, self.rev_w)], dim=0)
        return crops


class ImagePeople(nn.Module):
    """Network outputs for P persons (2P heatmaps when ``flip_merge`` is given: the mirrored crops' second) and
    their boxes -> keypoints P x K x 3 (x, y in image pixels, score) and person scores P (box score x mean joint
    score above ``vis_thr``, the evaluator's rescoring). ``decode`` None: the network already decodes (keypoints
    in heatmap pixels)."""

    def __init__(self, heatmap_size: Sequence[int], input_size: Sequence[int], *, decode: nn.Module | None,
                 flip_merge: nn.Module | None = None, vis_thr: float = 0.2, padding: float = 1.25) -> None:
        super().__init__()
        self.flip_merge = flip_merge
        self.decode = decode
        self.geometry = BoxGeometry(input_size, padding)
        self.hw, self.hh = int(heatmap_size[0]), int(heatmap_size[1])
        self.vis_thr = float(vis_thr)

    def forward(self, outputs: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flip_merge is not None:
            outputs = self.flip_merge(outputs)
        kp = self.decode(outputs) if self.decode is not None else outputs
        center, scale = self.geometry(boxes)
        size = scale * PIXEL_STD
        x = kp[..., 0] * (size[:, 0:1] / self.hw) + center[:, 0:1] - size[:, 0:1] * 0.5
        y = kp[..., 1] * (size[:, 1:2] / self.hh) + center[:, 1:2] - size[:, 1:2] * 0.5
        s = kp[..., 2]
        keypoints = torch.stack([x, y, s], dim=-1)
        valid = (s > self.vis_thr).to(torch.float32)
        mean = (s * valid).sum(dim=1) / torch.clamp(valid.sum(dim=1), min=1.0)
        return keypoints, mean * boxes[:, 4]


class ChannelNormalize(nn.Module):
    """float32 N x 3 x H x W pixels (0..255, channels in ``pixel_format``'s order) -> RGB, normalised by the
    config's ``mean`` / ``std`` (0..1 scale), in one gather and one multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, pixel_format: str = "bgr") -> None:
        super().__init__()
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        self.register_buffer("order", torch.tensor(channel_order(pixel_format), dtype=torch.int64), persistent=False)
        self.register_buffer("gain", (1.0 / (255.0 * std_t)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bias", (-torch.tensor([float(m) for m in mean]) / std_t).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.order) * self.gain + self.bias


class ImageNormalize(nn.Module):
    """uint8 N x H x W x 3 images (``pixel_format``) -> normalised float32 N x 3 x H x W (bottom-up)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, pixel_format: str = "bgr") -> None:
        super().__init__()
        self.normalize = ChannelNormalize(mean, std, pixel_format=pixel_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images.to(torch.float32).permute(0, 3, 1, 2))


class ImageToKeypoints(nn.Module):
    """``pre`` -> ``network`` (last output when it returns several) -> ``post`` (given the boxes, top-down): an image
    graph in PyTorch, e.g. as the parity reference or a torch backend of image inputs."""

    def __init__(self, pre: nn.Module, network: nn.Module, post: nn.Module | None) -> None:
        super().__init__()
        self.pre, self.network, self.post = pre, network, post

    def forward(self, *inputs: torch.Tensor) -> Any:
        y = self.network(self.pre(*inputs))
        if isinstance(y, (list, tuple)) and self.post is not None:
            y = y[-1]
        return y if self.post is None else self.post(y, inputs[1])
