"""Export: PyTorch -> ONNX (FP32), strongly typed FP16 and explicit-quantisation INT8 graphs for TensorRT."""
from export.onnx_export import export_onnx, export_onnx_model, read_metadata

__all__ = ["export_onnx", "export_onnx_model", "read_metadata"]
