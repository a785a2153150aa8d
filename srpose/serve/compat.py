"""Which NVIDIA Triton containers carry which TensorRT: a TensorRT engine (plan) runs only on the TensorRT version
that built it, so a served engine needs a ``nvcr.io/nvidia/tritonserver:<release>-py3`` container whose TensorRT
is the engine's.

The table is data, one row per monthly container release since TensorRT 10 (24.05) up to 25.11: (Triton server
version, TensorRT version). Triton versions are checked against the server repository's tags and ``build.py``; the
TensorRT versions of 24.08, 24.10, 24.12 and 25.01 against the release notes in its ``docs/introduction/
release_notes.md``; the other TensorRT versions come from NVIDIA's release notes and "Frameworks Support Matrix"
(docs.nvidia.com/deeplearning/triton-inference-server/release-notes, .../frameworks/support-matrix) and could not be
re-read here. 25.07 (Triton 2.59.1) was built out of the 25.06 release, so it carries 25.06's TensorRT. Releases after
25.11 exist (the table does not know them): look them up there. Before deploying, the message printed for an engine
says how to check a container's TensorRT directly.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TRITON_CONTAINERS", "LAST_KNOWN_RELEASE", "containers_for_tensorrt", "container_image",
           "check_command", "tensorrt_compatibility"]

#: container release -> (Triton server version, TensorRT version in the container)
TRITON_CONTAINERS: dict[str, tuple[str, str]] = {
    "24.05": ("2.46.0", "10.0.1.6"),
    "24.06": ("2.47.0", "10.1.0.27"),
    "24.07": ("2.48.0", "10.2.0.19"),
    "24.08": ("2.49.0", "10.3.0.26"),
    "24.09": ("2.50.0", "10.4.0.26"),
    "24.10": ("2.51.0", "10.5.0.18"),
    "24.11": ("2.52.0", "10.6.0.26"),
    "24.12": ("2.53.0", "10.7.0.23"),
    "25.01": ("2.54.0", "10.8.0.43"),
    "25.02": ("2.55.0", "10.8.0.43"),
    "25.03": ("2.56.0", "10.9.0.34"),
    "25.04": ("2.57.0", "10.9.0.34"),
    "25.05": ("2.58.0", "10.10.0.31"),
    "25.06": ("2.59.0", "10.11.0.33"),
    "25.07": ("2.59.1", "10.11.0.33"),  # built out of the 25.06 release
    "25.08": ("2.60.0", "10.13.2.6"),
    "25.09": ("2.61.0", "10.13.3.9"),
    "25.10": ("2.62.0", "10.13.3.9"),
    "25.11": ("2.63.0", "10.14.1.48"),
}
LAST_KNOWN_RELEASE = max(TRITON_CONTAINERS)
SUPPORT_MATRIX = "https://docs.nvidia.com/deeplearning/frameworks/support-matrix/index.html"


def _release(version: str, parts: int = 3) -> tuple[int, ...]:
    """The first ``parts`` numbers of a version string (``10.5.0.18`` -> (10, 5, 0))."""
    nums = []
    for p in str(version).strip().split(".")[:parts]:
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)


def containers_for_tensorrt(version: str) -> list[str]:
    """Container releases whose TensorRT has the same major.minor.patch as ``version`` (oldest first)."""
    want = _release(version)
    if len(want) < 2:
        raise ValueError(f"TensorRT version {version!r} is not a version number such as 10.5.0.18")
    return [rel for rel, (_, trt) in sorted(TRITON_CONTAINERS.items()) if _release(trt)[:len(want)] == want]


def container_image(release: str) -> str:
    """The image of a container release, e.g. ``nvcr.io/nvidia/tritonserver:24.10-py3``."""
    return f"nvcr.io/nvidia/tritonserver:{release}-py3"


def check_command(image: str) -> str:
    """A shell command printing the TensorRT libraries of a container image."""
    return f"docker run --rm {image} bash -c 'dpkg -l | grep -i nvinfer'"


def tensorrt_compatibility(version: str | None) -> dict[str, Any]:
    """``{"tensorrt", "containers", "images", "message"}`` for an engine built with TensorRT ``version``."""
    if not version:
        return {"tensorrt": None, "containers": [], "images": [],
                "message": "the engine's sidecar names no TensorRT version: rebuild it with `srpose build` to know "
                           "which Triton container runs it"}
    releases = containers_for_tensorrt(version)
    if releases:
        rows = ", ".join(f"{r} (Triton {TRITON_CONTAINERS[r][0]})" for r in releases)
        msg = (f"TensorRT {version}: the engine runs in the Triton containers {rows}, e.g. "
               f"{container_image(releases[-1])}; an engine runs only on the TensorRT version that built it "
               f"(check a container's with: {check_command(container_image(releases[-1]))})")
    else:
        msg = (f"TensorRT {version} is in no Triton container release up to {LAST_KNOWN_RELEASE} known here: build "
               f"the engine with the TensorRT of the container you deploy (see {SUPPORT_MATRIX}), or check newer "
               f"releases there (a container's TensorRT: {check_command(container_image('YY.MM'))})")
    return {"tensorrt": version, "containers": releases, "images": [container_image(r) for r in releases],
            "message": msg}
