"""The repository's root files: ``srpose_models.json`` (what srpose wrote there) and ``README.md``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from srpose.engines.triton_protocol import BOXES, CENTER_SCALE, CENTER_SCALE_OUT, IMAGE, KEYPOINTS, SCORES

from .environment import container_command

__all__ = ["MANIFEST", "served_models", "record_model", "readme_text"]

MANIFEST = "srpose_models.json"


def served_models(out: Path) -> list[dict[str, Any]]:
    """The srpose models of repository ``out`` whose folders still exist (from its manifest)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return []
    try:
        models = json.loads(path.read_text()).get("models", [])
    except (json.JSONDecodeError, AttributeError):
        return []
    return [m for m in models if all((Path(out) / n).is_dir() for n in m.get("models", {}).values())]


def record_model(out: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add (or replace, by ensemble name) ``entry`` in the manifest of ``out``; returns every model."""
    from srpose._io import atomic_write_json

    models = [m for m in served_models(out) if m["ensemble"] != entry["ensemble"]] + [entry]
    atomic_write_json(Path(out) / MANIFEST, {"models": sorted(models, key=lambda m: m["ensemble"])})
    return models


def _model_section(m: dict[str, Any]) -> str:
    names = m["models"]
    if m["task"] == "top-down":
        io = (f"inputs `{IMAGE}` (UINT8 [-1], the image file's bytes) and `{BOXES}` (FP64 [N, 5]: x, y, w, h, score) "
              f"or `{CENTER_SCALE}` (FP64 [N, 5]: centre x, y, scale w, h in 200-px units, score); at most "
              f"{m['max_persons']} persons per request")
        out = f"outputs `{KEYPOINTS}` (FP32 [N, K, 3]: x, y in image pixels, score) and `{SCORES}` (FP32 [N])"
    else:
        io = f"input `{IMAGE}` (UINT8 [-1], the image file's bytes)"
        out = (f"outputs `{KEYPOINTS}` (FP32 [P, K, 3]), `{SCORES}` (FP32 [P]) and `{CENTER_SCALE_OUT}` "
               "(FP64 [4])")
    flip = "the ensemble runs the mirrored pass" if m["server_flip"] else (
        "in the graph" if m["flip_in_graph"] else "off")
    lines = [f"### `{m['ensemble']}` ({m['task']}, from `{m['file']}`)", "",
             f"- send requests to `{names['ensemble']}`: {io}; {out}."]
    if "postprocess" in names:
        lines += [f"- `{names['preprocess']}` and `{names['postprocess']}`: python backend (srpose's pre-/post-"
                  "processing, code in `1/srpose/`).",
                  f"- `{names['network']}`: {m['network_platform']}, max_batch_size {m['max_batch_size']}, preferred "
                  f"{m['preferred_batch_sizes']}, max queue delay {m['max_queue_delay_us']} us; flip test: {flip}."]
    else:  # a top-down image-to-keypoints network: no python model touches crops or heatmaps
        lines += [f"- `{names['preprocess']}`: python backend (decodes the image, checks the boxes; code in "
                  "`1/srpose/`).",
                  f"- `{names['network']}`: {m['network_platform']}, the image-to-keypoints graph (crop, "
                  f"normalisation, flip test: {flip}, decoding and rescoring inside), one image with its persons "
                  "a request."]
    if m.get("tensorrt"):
        lines.append(f"- {m['tensorrt']['message']}.")
    return "\n".join(lines)


def readme_text(out: Path, models: list[dict[str, Any]]) -> str:
    """README.md of repository ``out``."""
    release = "24.10"
    engine_images = [m["tensorrt"]["containers"][-1] for m in models if (m.get("tensorrt") or {}).get("containers")]
    if engine_images:
        release = engine_images[-1]
    body = "\n\n".join(_model_section(m) for m in models)
    return f"""# Triton model repository (written by `srpose triton`)

{body}

## Serve it

- Here: `srpose serve {out}` (a local tritonserver on 127.0.0.1; `--python PY` names the server's Python).
- NVIDIA's container (GPU):

      {container_command(str(Path(out).resolve()), release)}

The python-backend models need what `requirements.txt` lists in the server's Python (numpy, OpenCV, and ONNX Runtime
for a `python-onnxruntime` network); their srpose code is copied into each model's `1/srpose/`. Evaluate through the
server with `srpose eval NAME_OR_CONFIG --backend triton --url HOST:PORT ...`, load-test it with
`srpose bench --backend triton --url HOST:PORT --concurrency 1 4 16`.
"""
