"""Our INT8 graph against NVIDIA ModelOpt's ONNX quantiser (``nvidia-modelopt`` 0.47, CPU calibration) on the demo
preset ``res18w16_srpose_coco_96x64``: the same quantised layers and the same residual placement, except for the
differences named (and explained) here, and no more bytes moved.

ModelOpt lives in an environment of its own (``make modelopt-deps`` builds ``.venv-modelopt``;
``SRPOSE_MODELOPT_PYTHON`` names another interpreter): without it the test skips and says so."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from _int8_utils import Graph, placement_problems

from srpose import build_model, get_config
from srpose.export._int8_mixed import quantized_nodes
from srpose.export._int8_place import GraphIndex, residual_add_inputs, weight_slot
from srpose.export.fp16 import convert_fp16
from srpose.export.int8 import quantize_int8
from srpose.export.onnx_export import export_onnx
from srpose.export.traffic import traffic_of_file

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(os.environ.get("SRPOSE_MODELOPT_PYTHON", REPO / ".venv-modelopt" / "bin" / "python"))
DEMO = "res18w16_srpose_coco_96x64"


def _modelopt_missing() -> str | None:
    if not PYTHON.is_file():
        return f"ModelOpt is not installed ({PYTHON} missing): `make modelopt-deps` builds .venv-modelopt"
    r = subprocess.run([str(PYTHON), "-c", "import modelopt.onnx.quantization"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"{PYTHON} cannot import modelopt.onnx.quantization: {r.stderr[-300:]}"


pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(_modelopt_missing() is not None, reason=str(_modelopt_missing()))]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    import torch

    d = tmp_path_factory.mktemp("modelopt")
    cfg = get_config(DEMO)
    torch.manual_seed(0)
    paths = {k: d / f"{DEMO}.{k}.onnx" for k in ("fp32", "fp16", "int8", "modelopt")}
    export_onnx(build_model(cfg, init=False).eval(), cfg, paths["fp32"], batch=(1, 8, 32))
    convert_fp16(paths["fp32"], paths["fp16"])
    w, h = cfg.image_size
    crops = np.random.default_rng(0).standard_normal((8, 3, h, w)).astype(np.float32)
    np.save(d / "crops.npy", crops)
    quantize_int8(paths["fp32"], paths["int8"], [crops], method="max")
    r = subprocess.run([str(PYTHON), str(REPO / "export" / "_modelopt_run.py"), str(paths["fp32"]),
                        str(paths["modelopt"]), "--calib", str(d / "crops.npy"), "--method", "max"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return paths


def _small_gemms(model: onnx.ModelProto) -> set[str]:
    """GEMMs with a weight dimension below 16, which ModelOpt leaves out of INT8 (too small for INT8 tensor-core
    tiles, its kernel-support heuristic, as for Convs of fewer than 16 channels)."""
    idx = GraphIndex(model)
    inits = {t.name: t for t in model.graph.initializer}
    out = set()
    for n in model.graph.node:
        slot = weight_slot(n, idx.constants) if n.op_type in ("Gemm", "MatMul") else None
        if slot is not None and min(inits[n.input[slot[0]]].dims) < 16:
            out.add(n.name)
    return out


def test_same_quantised_layers_as_modelopt_but_its_small_gemms(graphs: dict[str, Path]) -> None:
    """Every layer ModelOpt quantises is quantised here. The only layers quantised here and not by ModelOpt are the
    head's last-stage ConvNeXt GEMMs (8 x 32 and 32 x 8 weights): ModelOpt's heuristic skips GEMMs and convs with
    fewer than 16 channels; TensorRT builds them in INT8 all the same (it picks the kernel per layer), and they
    hold a few per cent of the MACs, so they are left to ``srpose quantize`` (which keeps any layer in FP16 that
    costs AP) rather than excluded by size."""
    ours, theirs = (set(quantized_nodes(onnx.load(str(graphs[k])))) for k in ("int8", "modelopt"))
    fp32 = onnx.load(str(graphs["fp32"]))
    assert theirs and not theirs - ours, sorted(theirs - ours)
    assert ours - theirs == _small_gemms(fp32), sorted(ours - theirs)


def test_same_residual_placement_as_modelopt_except_its_int8_adds(graphs: dict[str, Path]) -> None:
    """Residual Adds after a conv (the ResNet blocks, downsampling ones included, and the SRPose head's stage-0
    ReLU + ReLU Add) get their quantised input exactly where ModelOpt puts it. The difference: the head's ConvNeXt
    Adds, ``x + Transpose(Reshape(Gemm(...)))``, where ModelOpt's residual search follows Conv backbones only and
    so runs the Add as an INT8 element-wise op (both inputs through Q/DQ, ``2 quantised inputs``); here the GEMM
    branch is the fused one (reshapes and transposes are views), and only ``x``, the residual, is quantised, as
    TensorRT's rule says."""
    fp32 = onnx.load(str(graphs["fp32"]))
    g_ours, g_mo = Graph(onnx.load(str(graphs["int8"]))), Graph(onnx.load(str(graphs["modelopt"])))
    small = _small_gemms(fp32)
    differ = {}
    for add in residual_add_inputs(fp32):
        ours = [g_ours.dq_of_activation(t) for t in next(n for n in g_ours.nodes if n.name == add).input]
        mo = [g_mo.dq_of_activation(t) for t in next(n for n in g_mo.nodes if n.name == add).input]
        if ours != mo:
            differ[add] = (ours, mo)
    convnext = {a for a in residual_add_inputs(fp32) if "/post_fuse." in a}
    assert convnext and set(differ) <= convnext, sorted(set(differ) - convnext)
    for add, (ours, mo) in differ.items():
        assert sum(ours) == 1 and mo == [True, True], (add, ours, mo)
    # the last stage's Adds agree only because ModelOpt leaves those GEMMs (and so the Add's main input) in FP16
    assert {a for a in convnext if a not in differ} == {a for a in convnext if "/post_fuse.2/" in a}
    assert len(small) == 4  # post_fuse.2's two blocks, two GEMMs each (onnxsim names them Gemm_25 ... Gemm_34)
    problems = placement_problems(g_mo.model)
    assert sorted(problems["residual"]) == sorted(f"{a}: 2 quantised inputs" for a in differ)


def test_no_more_bytes_moved_than_modelopt(graphs: dict[str, Path]) -> None:
    fp16, ours, theirs = (traffic_of_file(graphs[k]) for k in ("fp16", "int8", "modelopt"))
    assert ours.total <= theirs.total < fp16.total, (ours.summary(), theirs.summary(), fp16.summary())
    assert ours.bytes_by_dtype.get("float32", 0) == theirs.bytes_by_dtype.get("float32", 0) == 0


def test_export_writes_modelopts_int8_graph_with_int8_engine_modelopt(coco_sample: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``srpose export --int8-engine modelopt`` runs ModelOpt in its own environment and writes its graph with the
    FP32 file's card (engine recorded), as ``--fp16-engine modelopt`` does for FP16."""
    import json

    from _export_utils import tiny_config, tiny_model

    from srpose import save_checkpoint
    from srpose.card import read_card
    from srpose.cli import main as cli_main

    monkeypatch.setenv("SRPOSE_MODELOPT_PYTHON", str(PYTHON))
    cfg = tiny_config("hrnet", "sr")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(tiny_model(cfg), tmp_path / "m.pth")
    rc = cli_main(["export", str(tmp_path / "cfg.json"), "--checkpoint", str(tmp_path / "m.pth"), "--out-dir",
                   str(tmp_path / "out"), "--precision", "int8", "--int8-engine", "modelopt", "--calib-ann",
                   str(coco_sample["ann"]), "--calib-images", str(coco_sample["images"]), "--calib-num", "8",
                   "--calib-method", "max", "--parity-crops", "0"])
    assert rc == 0
    path = tmp_path / "out" / f"{cfg.name}.int8.onnx"
    card = read_card(path)
    details = card.precision_details["int8"]
    assert card.precision == "int8" and details["engine"] == "modelopt" and details["quantized_nodes"] > 0
    assert details["calibration_crops"] == 8
    report = json.loads((tmp_path / "out" / f"{cfg.name}.export.json").read_text())
    assert report["files"][0]["traffic"]["bytes_by_dtype"]["int8"] > 0
