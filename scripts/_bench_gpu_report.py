"""Helpers of ``scripts/bench_gpu.py`` that need no model: the machine description and the Markdown report."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

SECTION = "## GPU"
Column = Tuple[str, str, str]  # (row key, column title, format spec)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return f"unavailable: {type(e).__name__}"


def machine_info(device: torch.device) -> Dict[str, Any]:
    """What the figures were measured on (no host name): CPU, GPU and driver, library versions, UTC date."""
    try:
        import onnxruntime as ort

        ort_info: Dict[str, Any] = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError as e:
        ort_info = {"version": f"unavailable: {e}", "providers": []}
    info: Dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "onnxruntime": ort_info,
        "gpu": None,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": p.total_memory / 2**30,
                       "multiprocessors": p.multi_processor_count, "driver": _nvidia_driver()}
        info["flags"] = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    return info


def _cell(row: Dict[str, Any], key: str, spec: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, spec) if spec and isinstance(v, (int, float)) else str(v)


def table(rows: Sequence[Dict[str, Any]], cols: Sequence[Column]) -> List[str]:
    """Markdown table lines; rows that are not ``ok`` show their status and reason in the last column."""
    lines = ["| " + " | ".join(t for _, t, _ in cols) + " | status |",
             "|" + "|".join("---:" if spec else "---" for _, _, spec in cols) + "|---|"]
    for r in rows:
        status = r.get("status", "ok")
        note = status if status == "ok" else f"{status}: {r.get('reason', '')}"
        if r.get("note"):
            note += f" ({r['note']})"
        lines.append("| " + " | ".join(_cell(r, k, spec) for k, _, spec in cols) + f" | {note} |")
    return lines


def _machine_line(m: Dict[str, Any]) -> str:
    gpu = m.get("gpu")
    where = (f"GPU {gpu['name']} (sm {gpu['capability']}, {gpu['memory_gib']:.0f} GiB, driver {gpu['driver']})"
             if gpu else "no GPU (CPU stand-ins)")
    return (f"Measured {m['date_utc']} on {where}, CPU {m['cpu']} ({m['cpu_count']} cores, torch threads "
            f"{m['torch_threads']}), torch {m['torch']} (CUDA {m['torch_cuda']}, cuDNN {m['cudnn']}), onnxruntime "
            f"{m['onnxruntime']['version']}, Python {m['python']}, {m['os']}.")


_LAT = [("model", "model", ""), ("precision", "precision", ""), ("mode", "mode", ""), ("batch", "batch", "d"),
        ("median_ms", "median ms", ".3f"), ("p99_ms", "p99 ms", ".3f"), ("images_per_s", "images/s", ".1f"),
        ("latency_source", "timing", "")]
_SECTIONS: List[Tuple[str, str, List[Column]]] = [
    ("accuracy", "Accuracy of the torch backend against CPU fp32", [
        ("model", "model", ""), ("precision", "precision", ""), ("crops", "crops", "d"),
        ("rel_l2", "heatmap rel L2", ".2e"), ("max_abs_rel", "max abs / max", ".2e"),
        ("kpt_mean_px", "keypoint mean px", ".3f"), ("kpt_max_px", "keypoint max px", ".3f")]),
    ("decoder", "Torch decoder on the device against the numpy decoder (batch 32)", [
        ("kind", "decoder", ""), ("data", "heatmaps", ""), ("shape", "shape", ""), ("same", "same keypoints", ""),
        ("max_abs_px", "max diff px", ".1e"), ("numpy_ms", "numpy ms", ".2f"),
        ("copy_ms", "device-to-host copy ms", ".2f"), ("torch_ms", "torch (device) ms", ".2f")]),
    ("latency", "Latency and throughput of the models", _LAT),
    ("e2e", "End to end through the evaluator", [
        ("model", "model", ""), ("precision", "precision", ""), ("persons", "persons", "d"),
        ("batch", "batch", "d"), ("flip", "flip", ""), ("images_per_s", "images/s", ".1f"),
        ("backend_ms_per_person", "backend ms/person", ".3f")]),
    ("ort", "ONNX Runtime CUDA provider against torch CUDA", [
        ("model", "model", ""), ("precision", "precision", ""), ("batch", "batch", "d"),
        ("ort_ms", "ORT wall ms", ".3f"), ("torch_ms", "torch wall ms", ".3f"), ("ratio", "ORT / torch", ".2f"),
        ("rel_l2_vs_torch", "rel L2 vs torch", ".2e")]),
    ("floors", "Compute and memory floors", [
        ("model", "model", ""), ("precision", "precision", ""), ("batch", "batch", "d"),
        ("gmacs_per_image", "GMACs/image", ".2f"), ("mac_rate_tmacs", "matmul TMAC/s", ".3f"),
        ("bandwidth_gbs", "copy GB/s", ".1f"), ("traffic_mb", "bytes moved MB", ".1f"),
        ("compute_floor_ms", "compute floor ms", ".3f"), ("memory_floor_ms", "memory floor ms", ".3f"),
        ("measured_ms", "measured ms", ".3f"), ("over_compute", "measured / compute", ".2f"),
        ("over_memory", "measured / memory", ".2f")]),
    ("image", "Image-to-keypoints graph (crop, flip test and decoding on the device)", [
        ("model", "model", ""), ("precision", "precision", ""), ("kind", "measure", ""), ("persons", "persons", "d"),
        ("median_ms", "median ms", ".3f"), ("p99_ms", "p99 ms", ".3f"), ("persons_per_s", "persons/s", ".1f"),
        ("image_persons_per_s", "e2e persons/s (image graph)", ".1f"),
        ("host_persons_per_s", "e2e persons/s (host pipeline)", ".1f"), ("speedup", "speed-up", ".2f")]),
]


def render(result: Dict[str, Any], heading: str = SECTION) -> str:
    """The report as Markdown: machine line, then one table (and its notes) per section."""
    lines = [heading, "", f"`scripts/bench_gpu.py {' '.join(result['argv'])}`. {_machine_line(result['machine'])}"]
    if result["machine"].get("gpu") is None:
        lines += ["", "**CPU run**: the sections that need CUDA are skipped with the reason; the other figures are "
                      "CPU stand-ins that test the code paths, not GPU figures."]
    for key, title, cols in _SECTIONS:
        sec = result["sections"].get(key)
        if sec is None:
            continue
        lines += ["", f"### {title}", ""]
        if sec.get("status") != "ok" and not sec.get("rows"):
            lines.append(f"{sec.get('status')}: {sec.get('reason', '')}")
            continue
        lines += table(sec["rows"], cols)
        if sec.get("notes"):
            lines += [""] + [f"- {n}" for n in sec["notes"]]
    return "\n".join(lines) + "\n"


def skipped(row: Dict[str, Any], reason: str, status: str = "skipped") -> Dict[str, Any]:
    """``row`` marked as not measured, with why."""
    return {**row, "status": status, "reason": reason}


def guarded(fn: Callable[[], Dict[str, Any]], log: Callable[[str], None], name: str) -> Dict[str, Any]:
    """Run one section; a failure is recorded (status ``failed`` and the error) instead of ending the run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
        log(f"{name}: FAILED {type(e).__name__}: {e}")
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}", "rows": []}
