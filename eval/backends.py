"""In-process backends: a PyTorch module, and an oracle returning the codec's encoding of the ground truth."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from srpose.engines.base import Backend

if TYPE_CHECKING:  # pragma: no cover
    from srpose.tasks import PoseTask

__all__ = ["TorchBackend", "TorchImageBackend", "OracleBackend"]


class TorchBackend(Backend):
    """Wrap an ``nn.Module`` mapping N x 3 x H x W images to its raw maps (last output if a list), returned as
    ``{"heatmaps": ...}`` (bottom-up models: ``{"outputs": ...}``, heatmaps then tags).

    ``precision``: ``"fp32"``; on CUDA also ``"fp16"`` / ``"bf16"`` (autocast) and ``"fp16-weights"`` (half
    weights and inputs). ``fp16=True`` is shorthand for ``precision="fp16"``. On CUDA, ``last_timing_ms`` is the
    device time of the forward measured with CUDA events (``timing_source == "device"``) and ``last_copy_ms`` the
    host-device copies; ``infer`` also takes torch tensors (already on the device: no copy).
    """

    name = "torch"
    PRECISIONS = ("fp32", "fp16", "bf16", "fp16-weights")

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", fp16: bool = False,
                 precision: str | None = None) -> None:
        super().__init__()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available: use device='cpu'")
        precision = precision or ("fp16" if fp16 else "fp32")
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision {precision!r} is not supported: choose one of {self.PRECISIONS}")
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision!r} needs a CUDA device: pass device='cuda' or use fp32")
        self.precision = precision
        self.fp16 = precision == "fp16"
        self.model = model.eval().to(self.device)
        if precision == "fp16-weights":
            self.model = self.model.half()
        self.timing_source = "device" if self.device.type == "cuda" else "wall"
        cfg = getattr(model, "cfg", None)
        self.output_names = ["outputs" if cfg is not None and cfg.is_bottom_up else "heatmaps"]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            with torch.autocast("cuda", dtype=dtype):
                y = self.model(x)
        else:
            y = self.model(x.half() if self.precision == "fp16-weights" else x)
        if isinstance(y, (list, tuple)):
            y = y[-1]
        return y.float()

    def infer(self, images: np.ndarray | torch.Tensor, meta: Mapping[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            ev[0].record()
        if isinstance(images, torch.Tensor):
            x = images.to(self.device, torch.float32)
        else:
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            if cuda:
                ev[1].record()
            y = self._forward(x)
            if cuda:
                ev[2].record()
            out = y.cpu().numpy()
        if cuda:
            ev[3].record()
            ev[3].synchronize()
            self.last_timing_ms = ev[1].elapsed_time(ev[2])
            self.last_copy_ms = ev[0].elapsed_time(ev[1]) + ev[2].elapsed_time(ev[3])
        else:
            self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return {self.output_names[0]: out}

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class TorchImageBackend(Backend):
    """A PyTorch model run as its image-to-keypoints graph (:meth:`~srpose.tasks.PoseTask.image_module`: crop,
    normalisation, flip test, decoding and back-projection in torch on ``device``), i.e. what ``srpose export
    --image-input`` writes, without exporting: ``{input name: array}`` in (uint8 images, boxes, box image indices),
    keypoints in image pixels and person scores out. ``flip`` None: the config's; ``precision`` ``fp16`` runs the
    network under CUDA autocast (the crop geometry and decoding stay float32). On CUDA, ``last_timing_ms`` is the
    device time of the forward (CUDA events)."""

    name = "torch-image"

    def __init__(self, model: nn.Module, task: "PoseTask", *, device: str | torch.device = "cpu",
                 flip: bool | None = None, pixel_format: str = "bgr", precision: str = "fp32") -> None:
        super().__init__()
        from srpose.export.image_graph import ImageGraphOptions, image_card

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available: use device='cpu'")
        if precision not in ("fp32", "fp16") or (precision == "fp16" and self.device.type != "cuda"):
            raise ValueError(f"precision {precision!r}: fp32, or fp16 on a CUDA device")
        raw = task.make_card(decode=False, flip=False, batch=task.default_batch)
        self.card = image_card(raw, task, ImageGraphOptions(flip=flip, pixel_format=pixel_format))
        self.precision = precision
        self.module = task.image_module(model, self.card).to(self.device)
        self.input_names, self.output_names = list(self.card.input_names), list(self.card.output_names)
        self.timing_source = "device" if self.device.type == "cuda" else "wall"

    def infer(self, images: Any, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        if not isinstance(images, Mapping):
            raise ValueError(f"{self.name} takes {{input name: array}} with {self.input_names}")
        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        args = [torch.as_tensor(np.ascontiguousarray(images[n])).to(self.device) for n in self.input_names]
        with torch.inference_mode():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
                out = self.module(*args)
            if cuda:
                end.record()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        result = {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs)}
        self.last_timing_ms = start.elapsed_time(end) if cuda else (time.perf_counter() - t0) * 1e3
        return result

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class OracleBackend(Backend):
    """Returns what a perfect model would: the task codec's encoding of the batch's ground-truth joints (heatmaps,
    bottom-up: heatmaps and tag maps). An upper bound of what the decoder and the protocol allow; needs the
    ground truth (top-down: GT boxes)."""

    name = "oracle"
    needs_meta = True

    def __init__(self, task: "PoseTask") -> None:
        super().__init__()
        self.task = task
        self.output_names = list(task.io(decode=False).output_names)

    def infer(self, images: np.ndarray, meta: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        if meta is None:
            raise ValueError("the oracle backend needs the batch's ground-truth joints: evaluate with GT boxes")
        t0 = time.perf_counter()
        out = self.task.oracle_outputs(images, meta)
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return out
