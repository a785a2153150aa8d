"""ONNX Runtime backend: metadata, batch handling, errors, float16 emulation and evaluation through the evaluator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_utils import cached_export, crops, torch_out

from srpose.engines._fp16_emulation import fp16_rounding_graph
from srpose.engines.onnxruntime import OnnxRuntimeBackend, resolve_providers
from srpose.eval.backends import TorchBackend
from srpose.eval.commands import BACKENDS, FILE_BACKENDS
from srpose.eval.evaluator import evaluate
from srpose.export.fp16 import convert_fp16
from srpose.data import TopDownCocoDataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    plain, model, cfg = cached_export("hrnet", "simple")
    both, model_b, cfg_b = cached_export("hrnet", "srpose", decode=True, flip=True)
    d = tmp_path_factory.mktemp("ort")
    convert_fp16(plain, d / "plain.fp16.onnx")
    return dict(cfg=cfg, model=model, plain=plain, both=both, both_model=model_b, both_cfg=cfg_b,
                fp16=d / "plain.fp16.onnx")


def test_reads_metadata_and_chunks_large_batches(exported: dict) -> None:
    b = OnnxRuntimeBackend(exported["plain"], threads=1)
    assert (b.output_kind, b.flip_in_graph, b.precision, b.batch_max) == ("heatmaps", False, "fp32", 4)
    assert b.name == "onnxruntime-fp32" and b.providers == ["CPUExecutionProvider"]
    x = crops(6, exported["cfg"])  # larger than batch_max: run in chunks of 4
    out = b.infer(x)
    assert out.shape == (6, 17, 16, 16) and out.dtype == np.float32 and b.last_timing_ms > 0
    ref = torch_out(exported["model"], x)
    assert np.abs(out - ref).max() <= 1e-5 * float(ref.max() - ref.min())
    k = OnnxRuntimeBackend(exported["both"])
    assert (k.output_kind, k.flip_in_graph) == ("keypoints", True)
    assert k.infer(x[:3]).shape == (3, 17, 3)


def test_clear_errors(exported: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        OnnxRuntimeBackend(tmp_path / "bad.onnx")
    b = OnnxRuntimeBackend(exported["plain"])
    with pytest.raises(ValueError, match="expects N x 3 x 64 x 64"):
        b.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="threads"):
        OnnxRuntimeBackend(exported["plain"], threads=0)
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        with pytest.raises(RuntimeError, match="not available"):
            resolve_providers("cuda")
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.infer(crops(1, exported["cfg"]))


def test_fp16_runs_with_float16_rounding_on_cpu(exported: dict) -> None:
    emulated = OnnxRuntimeBackend(exported["fp16"])
    raw = OnnxRuntimeBackend(exported["fp16"], fp16_emulation=False)
    assert emulated.fp16_emulated and not raw.fp16_emulated and emulated.precision == "fp16"
    x = crops(2, exported["cfg"])
    ref = OnnxRuntimeBackend(exported["plain"]).infer(x)
    err_emulated = np.linalg.norm(emulated.infer(x) - ref) / np.linalg.norm(ref)
    err_raw = np.linalg.norm(raw.infer(x) - ref) / np.linalg.norm(ref)
    assert 0 < err_raw < err_emulated < 1e-2  # activations rounded too, not only the weights
    g = fp16_rounding_graph(onnx.load(str(exported["fp16"])))
    onnx.checker.check_model(g)
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.graph.initializer)


def test_registered_for_srpose_eval() -> None:
    assert "onnxruntime" in BACKENDS and "onnxruntime" in FILE_BACKENDS


@pytest.mark.parametrize("which", ["plain", "both"])
def test_evaluator_gives_pytorch_ap(exported: dict, coco_sample: dict, which: str) -> None:
    cfg, model = (exported["cfg"], exported["model"]) if which == "plain" else \
        (exported["both_cfg"], exported["both_model"])
    ds = TopDownCocoDataset(coco_sample["ann"], coco_sample["images"], cfg.data, use_gt_bbox=True)
    kw = dict(batch_size=8, workers=0, progress=False)
    ref = evaluate(TorchBackend(model), ds, cfg.data, cfg.test_cfg, flip=True, **kw)
    res = evaluate(OnnxRuntimeBackend(exported[which]), ds, cfg.data, cfg.test_cfg, flip=True, **kw)
    assert res.flip == (which == "plain")  # the evaluator leaves an in-graph flip alone
    for k, v in ref.metrics.items():
        assert res.metrics[k] == pytest.approx(v, abs=1e-6), k
