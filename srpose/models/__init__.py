"""PyTorch models: backbones, heads, the top-down detector and its builder."""
from srpose.models.builder import build_model
from srpose.models.detector import TopDown

__all__ = ["build_model", "TopDown"]
