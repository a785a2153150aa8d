"""What the server's Python needs for srpose's python-backend models, per network runtime.

The pre- and post-processing import numpy and OpenCV (plus the srpose modules copied into the repository); the
``python-onnxruntime`` network also imports ONNX Runtime. Nothing else: no torch, no srpose install, no
tritonclient. NVIDIA's Triton container has Python and numpy; add the rest with ``pip install -r
REPO/requirements.txt`` in the container (see :func:`container_command`).

``python -m srpose.serve.environment [--runtime R] [--pin]`` prints the requirements, ``--pin`` at the versions
installed in the running Python (``make serve-deps`` builds the test server's environment that way, so it decodes,
crops and runs the graph with the very libraries of the evaluator it is compared with).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["RUNTIMES", "requirements", "requirements_text", "container_command", "main"]

#: network runtimes of ``srpose triton`` -> Triton backend/platform of the network model
RUNTIMES = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx", "python-onnxruntime": "python"}
#: requirement -> the installed distributions that provide it (to read their versions for --pin)
_DISTS = {"numpy": ("numpy",), "onnxruntime": ("onnxruntime",),
          "opencv-python-headless": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                                     "opencv-contrib-python")}
_MINIMUM = {"numpy": "1.22", "opencv-python-headless": "4.8", "onnxruntime": "1.16"}


def requirements(runtime: str = "python-onnxruntime", *, pin: bool = False) -> list[str]:
    """pip requirement lines of the server's Python for ``runtime`` (``pin``: at this Python's installed
    versions)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {sorted(RUNTIMES)}")
    dists = ["numpy", "opencv-python-headless"] + (["onnxruntime"] if runtime == "python-onnxruntime" else [])
    if not pin:
        return [f"{d}>={_MINIMUM[d]}" for d in dists]
    from importlib import metadata

    out = []
    for d in dists:
        versions = []
        for dist in _DISTS[d]:
            try:
                versions.append(metadata.version(dist))
            except metadata.PackageNotFoundError:
                continue
        if not versions:
            raise RuntimeError(f"--pin: none of {', '.join(_DISTS[d])} is installed in {sys.executable}")
        out.append(f"{d}=={versions[0]}")
    return out


def requirements_text(runtimes: Sequence[str]) -> str:
    """The repository's ``requirements.txt`` for models served with ``runtimes``."""
    lines = sorted({r for rt in runtimes for r in requirements(rt)})
    return ("# The server's Python for srpose's python-backend models (Triton's python backend).\n"
            "# In NVIDIA's Triton container: pip install -r /models/requirements.txt before tritonserver starts.\n"
            + "\n".join(lines) + "\n")


def container_command(repo: str = "$PWD/repo", release: str = "24.10", gpus: bool = True) -> str:
    """A ``docker run`` line serving ``repo`` in NVIDIA's Triton container (python-backend deps installed first)."""
    gpu = "--gpus all " if gpus else ""
    return (f"docker run --rm {gpu}--shm-size 1g -p 8000:8000 -p 8001:8001 -v {repo}:/models "
            f"nvcr.io/nvidia/tritonserver:{release}-py3 bash -c "
            "\"pip install -q -r /models/requirements.txt && tritonserver --model-repository /models\"")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m srpose.serve.environment",
                                description="requirements of the Triton server's Python for srpose's models")
    p.add_argument("--runtime", default="python-onnxruntime", choices=sorted(RUNTIMES))
    p.add_argument("--pin", action="store_true", help="pin to the versions installed in this Python")
    args = p.parse_args(argv)
    print("\n".join(requirements(args.runtime, pin=args.pin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
