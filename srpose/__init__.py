"""SRPose-TRT: SRPose models in PyTorch, exported to ONNX and TensorRT, evaluated with the official protocol."""
from __future__ import annotations

__version__ = "0.1.0"

from srpose._registry import list_models, register_model
from srpose.checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from srpose.config import PoseConfig, get_config
from srpose.models import TopDown, build_model


def decode_heatmaps(*args, **kwargs):  # noqa: ANN002, ANN003 - thin re-export, see srpose.decode.decode_heatmaps
    """Decode N x K x H x W heatmaps to image-coordinate keypoints and scores (see :mod:`srpose.decode`)."""
    from srpose.decode import decode_heatmaps as _decode

    return _decode(*args, **kwargs)


__all__ = [
    "__version__", "build_model", "load_checkpoint", "save_checkpoint", "read_state_dict", "get_config",
    "list_models", "register_model", "PoseConfig", "TopDown", "CheckpointError", "decode_heatmaps",
]
