"""PyTorch models: backbones, heads, the detectors and its builder."""
from srpose.models.builder import build_model
from srpose.models.detector import BottomUp, TopDown

__all__ = ["build_model", "TopDown", "BottomUp"]
