"""The network as a python-backend model running the exported graph in ONNX Runtime (``--runtime
python-onnxruntime``): for servers without Triton's ONNX Runtime backend (the ``nvidia-pytriton`` wheel carries the
python backend only), and what the tests serve.

It runs the graph with the evaluator's runtime, :class:`~srpose.engines.onnxruntime.OnnxRuntimeBackend` (same
session options, same float16 emulation on the CPU), on the dynamic batcher's merged batch: the requests Triton hands
over together are concatenated along the batch, run at once and split back, so the person crops of concurrent
requests share one inference. Image-to-keypoints graphs take one image with its persons a request (their inputs are
ragged: nothing to concatenate), each answered on its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from srpose.card import INPUT_DTYPES
from srpose.engines.onnxruntime import OnnxRuntimeBackend

from ._triton import input_array, model_params, respond, respond_all

__all__ = ["OnnxRuntimeNetworkModel", "MODEL_FILE", "PARAM_THREADS"]

MODEL_FILE = "model.onnx"
#: model-config parameter: ONNX Runtime intra-op threads ("" or absent: ONNX Runtime's default)
PARAM_THREADS = "srpose_threads"


class OnnxRuntimeNetworkModel:
    """``TritonPythonModel`` of a ``<name>_network`` model written with ``--runtime python-onnxruntime``."""

    def initialize(self, args: Mapping[str, str]) -> None:
        params = model_params(args)
        self.model = args.get("model_name", "network")
        path = Path(args["model_repository"]) / str(args["model_version"]) / MODEL_FILE
        threads = params.get(PARAM_THREADS) or None
        self.backend = OnnxRuntimeBackend(path, threads=int(threads) if threads else None)
        self.input_name = self.backend.input_name
        self.batches: list[int] = []  # merged batch sizes, for tests and logs

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.backend.image_input:  # one image and its persons a request
            def one(request: Any) -> dict[str, np.ndarray]:
                feed = {n: input_array(request, n, INPUT_DTYPES.get(n, np.float32)) for n in self.backend.input_names}
                self.batches.append(len(feed[self.backend.input_names[-1]]))
                return self.backend.infer(feed)

            return respond(requests, one, self.model)
        try:
            arrays = [input_array(r, self.input_name, np.float32) for r in requests]
            outputs: list[dict[str, np.ndarray]] = [{} for _ in requests]
            for group in _same_shape_groups(arrays):  # the batcher merges equal shapes; be safe with any mix
                merged = np.concatenate([arrays[i] for i in group])
                out = self.backend.infer(merged)
                self.batches.append(len(merged))
                start = 0
                for i in group:
                    n = len(arrays[i])
                    outputs[i] = {k: v[start:start + n] for k, v in out.items()}
                    start += n
            return respond_all(requests, outputs, self.model)
        except Exception as e:  # one failure answers the whole merged batch
            return respond_all(requests, e, self.model)

    def finalize(self) -> None:
        self.backend.close()


def _same_shape_groups(arrays: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape[1:]), []).append(i)
    return list(groups.values())
