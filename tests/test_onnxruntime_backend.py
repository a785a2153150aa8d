"""ONNX Runtime backend: one backend for every graph (top-down, bottom-up; raw or decoded), the card, named
outputs, batch chunking, errors, float16 emulation, ``open_backend`` and evaluation through the evaluator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from _export_utils import cached_export, crops, torch_out

from srpose.engines import open_backend
from srpose.engines._fp16_emulation import fp16_rounding_graph
from srpose.engines.onnxruntime import OnnxRuntimeBackend, resolve_providers
from srpose.eval.backends import TorchBackend
from srpose.eval.evaluator import EvalOptions, evaluate
from srpose.export.fp16 import convert_fp16
from srpose.tasks import task_for


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    plain, model, cfg = cached_export("hrnet", "simple")
    both, model_b, cfg_b = cached_export("hrnet", "srpose", decode=True, flip=True)
    d = tmp_path_factory.mktemp("ort")
    convert_fp16(plain, d / "plain.fp16.onnx")
    return dict(cfg=cfg, model=model, plain=plain, both=both, both_model=model_b, both_cfg=cfg_b,
                fp16=d / "plain.fp16.onnx")


def test_reads_the_card_and_chunks_large_batches(exported: dict) -> None:
    b = OnnxRuntimeBackend(exported["plain"], threads=1)
    assert (b.card.output_kind, b.decoded, b.flip_in_graph, b.precision, b.batch_max) == \
        ("heatmaps", False, False, "fp32", 4)
    assert b.name == "onnxruntime-fp32" and b.providers == ["CPUExecutionProvider"]
    assert b.output_names == ["heatmaps"] and b.card.task == "top-down"
    x = crops(6, exported["cfg"])  # larger than batch_max: run in chunks of 4
    out = b.infer(x)
    assert list(out) == ["heatmaps"]
    assert out["heatmaps"].shape == (6, 17, 16, 16) and out["heatmaps"].dtype == np.float32 and b.last_timing_ms > 0
    ref = torch_out(exported["model"], x)
    assert np.abs(out["heatmaps"] - ref).max() <= 1e-5 * float(ref.max() - ref.min())
    k = OnnxRuntimeBackend(exported["both"])
    assert (k.card.output_kind, k.decoded, k.flip_in_graph) == ("keypoints", True, True)
    assert k.infer(x[:3])["keypoints"].shape == (3, 17, 3)


def test_runs_bottom_up_graphs_raw_and_decoded() -> None:
    """The same backend runs bottom-up graphs (the old BottomUpOnnxBackend is gone): dynamic H/W, batches above the
    profile's maximum in chunks, every decoded output by name."""
    raw_path, model, cfg = cached_export("bottom-up", "sr")
    raw = OnnxRuntimeBackend(raw_path, threads=1)
    assert (raw.card.task, raw.card.output_kind, raw.decoded, raw.batch_max) == ("bottom-up", "heatmaps", False, 4)
    assert raw.output_names == ["outputs"] and raw.input_shape[1:] == [3, "height", "width"]
    x = np.random.default_rng(0).standard_normal((6, 3, 64, 128)).astype(np.float32)
    out = raw.infer(x)["outputs"]
    assert out.shape == (6, 34, 64, 128)
    np.testing.assert_allclose(out, torch_out(model, x), atol=1e-4)
    dec = OnnxRuntimeBackend(cached_export("bottom-up", "sr", decode=True, flip=True)[0], threads=1)
    assert (dec.card.output_kind, dec.decoded, dec.flip_in_graph) == ("bottomup_candidates", True, True)
    got = dec.infer(x[:1])
    assert list(got) == ["heatmaps", "tags", "candidates"] and got["candidates"].shape[:2] == (1, 17)


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


def test_files_without_a_card_run_and_edited_graphs_are_refused(exported: dict, tmp_path: Path) -> None:
    m = onnx.load(str(exported["plain"]))
    del m.metadata_props[:]  # a user's own ONNX file: runs, decoded as raw heatmaps
    onnx.save(m, str(tmp_path / "nocard.onnx"))
    b = OnnxRuntimeBackend(tmp_path / "nocard.onnx")
    assert b.card is None and not b.decoded and not b.flip_in_graph and b.batch_max is None
    x = crops(6, exported["cfg"])
    np.testing.assert_array_equal(b.infer(x)["heatmaps"], OnnxRuntimeBackend(exported["plain"]).infer(x)["heatmaps"])
    for backend in (b, OnnxRuntimeBackend(exported["plain"])):  # an empty batch, with or without a batch maximum
        assert backend.infer(x[:0])["heatmaps"].shape == (0, 17, 16, 16)
    m = onnx.load(str(exported["plain"]))
    m.graph.output[0].name = "renamed"
    for node in m.graph.node:
        node.output[:] = ["renamed" if o == "heatmaps" else o for o in node.output]
    onnx.save(m, str(tmp_path / "edited.onnx"))
    with pytest.raises(ValueError, match="differ from its card"):
        OnnxRuntimeBackend(tmp_path / "edited.onnx")


def test_fp16_runs_with_float16_rounding_on_cpu(exported: dict) -> None:
    emulated = OnnxRuntimeBackend(exported["fp16"])
    raw = OnnxRuntimeBackend(exported["fp16"], fp16_emulation=False)
    assert emulated.fp16_emulated and not raw.fp16_emulated and emulated.precision == "fp16"
    x = crops(2, exported["cfg"])
    ref = OnnxRuntimeBackend(exported["plain"]).infer(x)["heatmaps"]
    err_emulated = np.linalg.norm(emulated.infer(x)["heatmaps"] - ref) / np.linalg.norm(ref)
    err_raw = np.linalg.norm(raw.infer(x)["heatmaps"] - ref) / np.linalg.norm(ref)
    assert 0 < err_raw < err_emulated < 1e-2  # activations rounded too, not only the weights
    g = fp16_rounding_graph(onnx.load(str(exported["fp16"])))
    onnx.checker.check_model(g)
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.graph.initializer)


def test_open_backend_maps_onnx_files_to_onnx_runtime(exported: dict, tmp_path: Path) -> None:
    b = open_backend(exported["plain"], threads=1)
    assert isinstance(b, OnnxRuntimeBackend) and b.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="runs on a GPU"):
        open_backend(tmp_path / "m.engine")
    with pytest.raises(ValueError, match="expected an .onnx graph"):
        open_backend(tmp_path / "m.pt")


@pytest.mark.parametrize("which", ["plain", "both"])
def test_evaluator_gives_pytorch_ap(exported: dict, coco_sample: dict, which: str) -> None:
    cfg, model = (exported["cfg"], exported["model"]) if which == "plain" else \
        (exported["both_cfg"], exported["both_model"])
    task = task_for(cfg)
    ds = task.dataset(coco_sample["ann"], coco_sample["images"], gt_bbox=True)
    opts = EvalOptions(flip=True, batch_size=8, workers=0, progress=False)
    ref = evaluate(task, TorchBackend(model), ds, opts)
    backend = OnnxRuntimeBackend(exported[which])
    assert task.host_flip(backend, True) == (which == "plain")  # the evaluator leaves an in-graph flip alone
    res = evaluate(task, backend, ds, opts)
    assert res.flip is True and ref.flip is True  # on the host or in the graph
    for k, v in ref.metrics.items():
        assert res.metrics[k] == pytest.approx(v, abs=1e-6), k
