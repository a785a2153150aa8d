"""Export: PyTorch -> ONNX for any pose task (FP32), strongly typed FP16 and explicit-quantisation (Q/DQ) INT8
graphs for TensorRT; ``ExportOptions -> export_model(...) -> ExportReport``."""
from srpose.export.calibration import CalibrationReader
from srpose.export.fp16 import convert_fp16
from srpose.export._int8_mixed import write_mixed_model
from srpose.export.int8 import quantize_int8
from srpose.export.model_export import ExportOptions, ExportReport, Fp16Options, Int8Options, export_model
from srpose.export.onnx_export import export_onnx, export_onnx_model, read_metadata

__all__ = ["CalibrationReader", "convert_fp16", "export_onnx", "export_onnx_model", "quantize_int8",
           "read_metadata", "ExportOptions", "ExportReport", "Fp16Options", "Int8Options", "export_model",
           "write_mixed_model"]
