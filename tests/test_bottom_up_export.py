"""Bottom-up ONNX export: dynamic height and width, shape-profile metadata, parity with PyTorch, the in-graph
flip + NMS + top-k (``decode``) giving the same people as the host path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srpose.export.bottom_up import (
    default_shape_profile,
    export_bottom_up,
    parity_check,
    parse_shape_profile,
    reference_outputs,
)
from _export_utils import tiny_bottom_up_config

from srpose.export.onnx_export import read_metadata
from srpose import build_model, get_config
from srpose.bottom_up import GroupParams, decode_maps, decode_outputs, flip_index_from_pairs
from srpose.config import PoseConfig

PROFILE = ((64, 64), (128, 64), (128, 128))


pytestmark = pytest.mark.usefixtures("one_thread")  # the bottom-up models are large for 2 cores


def _model(cfg: PoseConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg, init=False).eval()  # PyTorch default init: peaks above the detection threshold


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("bu")
    sr, simple = tiny_bottom_up_config("sr"), tiny_bottom_up_config("simple")
    m_sr, m_simple = _model(sr), _model(simple)
    return dict(
        sr=(sr, m_sr, export_bottom_up(m_sr, sr, d / "sr.onnx", shape_profile=PROFILE)),
        dec=(simple, m_simple, export_bottom_up(m_simple, simple, d / "dec.onnx", decode=True, shape_profile=PROFILE)),
    )


def test_shape_profile_parsing() -> None:
    assert parse_shape_profile("64x64, 128x64,128x128") == PROFILE
    assert default_shape_profile(512) == ((512, 512), (704, 512), (1536, 1536))
    for bad in ("64x64,128x64", "64x60,128x64,128x128", "128x128,64x64,128x128", "axb,1,2"):
        with pytest.raises(ValueError):
            parse_shape_profile(bad)


def test_raw_export_is_dynamic_and_matches_pytorch(exported: dict) -> None:
    import onnx

    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    cfg, model, path = exported["sr"]
    meta = read_metadata(path)
    assert meta["bottom_up"] is True and meta["output_kind"] == "heatmaps" and meta["decode"] is False
    assert (meta["shape_min"], meta["shape_opt"], meta["shape_max"]) == ([1, 3, 64, 64], [1, 3, 64, 128],
                                                                         [4, 3, 128, 128])
    assert (meta["height_max"], meta["width_opt"], meta["nms_kernel"]) == (128, 128, 11)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    report = parity_check(path, model, cfg, [(64, 128), (128, 64)])
    for size in report.values():
        assert size["outputs"]["max_abs"] < 1e-4 and size["outputs"]["rel_l2"] < 1e-5
    backend = OnnxRuntimeBackend(path)  # the generic backend runs it, any aspect ratio
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    assert backend.infer(x).shape == (1, 34, 64, 128)
    np.testing.assert_allclose(backend.infer(x), reference_outputs(model, cfg, x, decode=False, flip=False)[0],
                               atol=1e-4)


def test_decoded_export_gives_the_same_people_as_the_host(exported: dict) -> None:
    from srpose.eval.bottom_up import DECODED_KIND, BottomUpOnnxBackend

    cfg, model, path = exported["dec"]
    backend = BottomUpOnnxBackend(path)
    assert backend.output_kind == DECODED_KIND and backend.flip_in_graph
    params = GroupParams.from_test_cfg(cfg.test_cfg, cfg.num_joints)
    fi = flip_index_from_pairs(cfg.num_joints, cfg.flip_pairs)
    rng = np.random.default_rng(1)
    for w, h in ((128, 64), (64, 128)):
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        out = backend.infer(x)
        assert out["heatmaps"].shape == (1, 17, h, w) and out["tags"].shape == (1, 17, h, w, 2)
        assert out["candidates"].shape == (1, 17, params.max_num_people, 5)
        center, scale = np.array([w / 2, h / 2]), np.array([w / 200, h / 200])
        with torch.no_grad():
            raw, raw_f = model(torch.from_numpy(x)), model(torch.from_numpy(np.ascontiguousarray(x[..., ::-1])))
        for refine in (False, True):
            got = decode_maps(out["heatmaps"][0], out["tags"][0], out["candidates"][0], center, scale, params,
                              refine=refine)
            ref = decode_outputs(raw, raw_f, center, scale, params, fi, input_size=(w, h), refine=refine)
            assert len(ref) > 0 and len(got) == len(ref)
            np.testing.assert_allclose(np.sort(got.scores), np.sort(ref.scores), atol=1e-5)
            same = np.isclose(got.keypoints, ref.keypoints, atol=1e-3).all(axis=2)
            # a random model's maps are full of near-ties (bilinear plateaus): 1e-8 differences between ONNX
            # Runtime and PyTorch may reorder candidates or tip refine's arg-max for a few joints
            assert same.mean() > (0.9 if refine else 0.98)


def test_export_rejects_bad_requests(exported: dict, tmp_path: Path) -> None:
    cfg, model, _ = exported["sr"]
    with pytest.raises(ValueError, match="needs --decode"):
        export_bottom_up(model, cfg, tmp_path / "x.onnx", flip=True)
    with pytest.raises(ValueError, match="not a bottom-up"):
        export_bottom_up(model, get_config("res50_coco_256x192"), tmp_path / "y.onnx")
    assert not list(tmp_path.iterdir())
