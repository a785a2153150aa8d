"""Serving with NVIDIA Triton Inference Server (torch-free): the model repository of an exported graph or engine
(:mod:`srpose.serve.repository`, ``srpose triton``), the python-backend models it deploys (pre-processing,
post-processing, ONNX Runtime network: :mod:`~srpose.serve.preprocess`, :mod:`~srpose.serve.postprocess`,
:mod:`~srpose.serve.network`), a local server (:mod:`srpose.serve.server`, ``srpose serve``) and the table of Triton
containers per TensorRT version (:mod:`srpose.serve.compat`). The client is :mod:`srpose.engines.triton_client`.

Layer: above the core (codecs, transforms, rescoring, card) and the runtime (the ONNX Runtime backend and the wire
protocol), below evaluation and the CLI; never imports torch (the server's Python has none). Names are imported on
first use, so a python-backend model loads only the modules it needs.
"""
from __future__ import annotations

from srpose._lazy import lazy_getattr

_EXPORTS = {
    "RepositoryOptions": "srpose.serve.repository", "RepositoryReport": "srpose.serve.repository",
    "write_repository": "srpose.serve.repository",
    "ServeOptions": "srpose.serve.server", "TritonServer": "srpose.serve.server", "start_server": "srpose.serve.server",
    "find_tritonserver": "srpose.serve.server",
    "tensorrt_compatibility": "srpose.serve.compat",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr("srpose.serve", _EXPORTS, globals())
