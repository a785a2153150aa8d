"""``srpose export --int8-engine modelopt``: the INT8 graph written by NVIDIA ModelOpt's ONNX quantiser instead of
ours, for comparison (as ``--fp16-engine modelopt`` does for FP16).

ModelOpt (``nvidia-modelopt[onnx]``) pulls onnxruntime-gpu, cupy and an older onnx, so it is not a dependency: it
runs in this Python when it can be imported here, else in ModelOpt's own environment (``SRPOSE_MODELOPT_PYTHON``,
or ``.venv-modelopt/bin/python`` under the current folder, which ``make modelopt-deps`` builds) through
:mod:`srpose.export._modelopt_run`. Calibration: the same crops as our INT8 export, ModelOpt's CPU calibration
(``max`` or ``entropy``), ``high_precision_dtype="fp16"``; ``exclude`` patterns become ModelOpt's node-name
regular expressions. The output gets the FP32 file's card with ``precision="int8"`` and
``precision_details["int8"]`` (``engine: modelopt``).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["modelopt_python", "quantize_with_modelopt"]


def modelopt_python() -> str | None:
    """The Python that can run ModelOpt's quantiser: this one, ``SRPOSE_MODELOPT_PYTHON``, ``.venv-modelopt``."""
    try:
        if importlib.util.find_spec("modelopt.onnx.quantization") is not None:
            return sys.executable
    except (ModuleNotFoundError, ValueError):
        pass
    for cand in (os.environ.get("SRPOSE_MODELOPT_PYTHON"), str(Path(".venv-modelopt") / "bin" / "python")):
        if cand and Path(cand).is_file():
            return cand
    return None


def quantize_with_modelopt(fp32_path: Path, out_path: str | Path, calibration: Iterable[Any], *, method: str,
                           exclude: Sequence[str], input_name: str = "input") -> dict[str, Any]:
    """Write ModelOpt's INT8 graph of ``fp32_path`` to ``out_path`` (atomically); returns the card's details."""
    import numpy as np
    import onnx

    from srpose._io import atomic_write_bytes
    from srpose.export._int8_graph import DEFAULT_OP_TYPES, quantized_nodes
    from srpose.export.fp16 import _matches
    from srpose.export.onnx_export import record_precision

    if method not in ("max", "entropy"):
        raise ValueError(f"INT8 engine 'modelopt' calibrates with max or entropy, not {method!r}")
    python = modelopt_python()
    if python is None:
        raise RuntimeError("INT8 engine 'modelopt' needs NVIDIA ModelOpt: `make modelopt-deps` (an environment of its "
                           "own, .venv-modelopt) or SRPOSE_MODELOPT_PYTHON=/path/to/python; or use the built-in "
                           "quantiser (--int8-engine srpose)")
    crops = np.concatenate([np.asarray(b[input_name] if isinstance(b, dict) else b, np.float32) for b in calibration])
    source = onnx.load(str(fp32_path))
    names = [n.name for n in source.graph.node if _matches(n.name, exclude)]
    with tempfile.TemporaryDirectory(prefix="srpose-modelopt-") as tmp:
        np.save(Path(tmp) / "crops.npy", crops)
        out_tmp = Path(tmp) / "int8.onnx"
        cmd = [python, str(Path(__file__).with_name("_modelopt_run.py")), str(fp32_path), str(out_tmp), "--calib",
               str(Path(tmp) / "crops.npy"), "--method", method, "--input-name", input_name]
        if names:
            cmd += ["--exclude", *(f"^{re.escape(n)}$" for n in names)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not out_tmp.is_file():
            raise RuntimeError(f"ModelOpt ({python}) failed on {fp32_path.name}: {r.stderr.strip()[-1500:]}")
        model = onnx.load(str(out_tmp))
    details = dict(engine="modelopt", method=method, calibration_crops=int(len(crops)), excluded_nodes=names,
                   quantized_nodes=len(quantized_nodes(model, DEFAULT_OP_TYPES)))
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    record_precision(model, "int8", details)
    atomic_write_bytes(out_path, model.SerializeToString(deterministic=True))
    return details

