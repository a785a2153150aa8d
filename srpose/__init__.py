"""SRPose-TRT: SRPose models in PyTorch, exported to ONNX and TensorRT, evaluated with the official protocol.

One installed namespace: ``srpose`` (models, data, codecs, tasks, training, the CLI), ``srpose.export``,
``srpose.engines`` and ``srpose.eval`` (the repository's top-level folders ``export/``, ``engines/``, ``eval/``).

The public names below are imported on first use (PEP 562), so ``import srpose.engines`` or ``srpose.card`` does
not import torch: the runtime layer stays torch-free.
"""
from __future__ import annotations


from srpose._lazy import lazy_getattr

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "list_models": "srpose.presets", "register_model": "srpose._registry",
    "CheckpointError": "srpose.checkpoint", "load_checkpoint": "srpose.checkpoint",
    "read_state_dict": "srpose.checkpoint", "save_checkpoint": "srpose.checkpoint",
    "PoseConfig": "srpose.config", "get_config": "srpose.resolve",
    "TopDown": "srpose.models", "build_model": "srpose.models",
    "decode_heatmaps": "srpose.decode",
    "Pose": "srpose.eval.predict",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_getattr("srpose", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
