"""The MPII and CrowdPose presets served by a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver
and python backend on the CPU, as tests/test_triton_server.py; skipped without `make serve-deps`): an MPII SRPose
model (full-resolution heatmaps, the SRPose decoder, 16 joints) and a CrowdPose baseline (1/4 heatmaps, 14 joints),
each at reduced width (tests/_dataset_presets.py), served both ways `srpose triton` writes them: as their
image-to-keypoints graph (the default: the network crops, flips with the dataset's flip pairs and decodes) and as
the crop graph (`--crop-input`: python pre- and post-processing). Through the server: the PCKh / AP and keypoints of
the same graph evaluated in process."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from _dataset_presets import PRIMARY, mean_pose_model, sample_dataset, sample_sets, small_preset
from _triton_utils import server_python
from conftest import shared_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SERVED = ("hrnet_w32_srpose_mpii_256x256", "res50_crowdpose_256x192")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running server of the reduced presets of :data:`SERVED` (each as image graph and as crop graph), their
    graphs, tasks and ensembles."""
    from srpose.export.image_graph import ImageGraphOptions, write_image_graph
    from srpose.export.onnx_export import export_onnx
    from srpose.serve import RepositoryOptions, ServeOptions, start_server, write_repository
    from srpose.tasks import task_for

    python = server_python()
    shared = shared_path("data")
    root = tmp_path_factory.mktemp("dataset_presets_served")
    repo = root / "repo"
    models: dict[str, dict[str, Any]] = {}
    for name in SERVED:
        cfg = small_preset(name)
        task = task_for(cfg)
        ds = sample_dataset(task, shared)
        onnx = export_onnx(mean_pose_model(cfg, task, ds), cfg, root / f"{cfg.name}.onnx", batch=(1, 8, 32))
        image = write_image_graph(onnx, root / f"{cfg.name}_image.onnx", ImageGraphOptions(flip=None))
        # what `srpose triton` does by default (the image graph) and with --crop-input (the crop graph itself)
        wrapped = write_repository(image, RepositoryOptions(out=repo, runtime="python-onnxruntime"), source=onnx)
        crops = write_repository(onnx, RepositoryOptions(out=repo, runtime="python-onnxruntime",
                                                         name=f"{cfg.name}_crops"))
        assert wrapped.wrapped and not crops.wrapped
        models[name] = dict(task=task, onnx=onnx, image=image, ensembles=dict(image=wrapped.ensemble,
                                                                               crops=crops.ensemble))
    with start_server(ServeOptions(repos=[repo], http_port=0, grpc_port=0, python=str(python),
                                   log_file=root / "tritonserver.log")) as srv:
        yield dict(models=models, grpc=srv.grpc_url, http=srv.http_url, shared=shared)
    log = (root / "tritonserver.log").read_text(errors="replace")  # every request answered without an exception
    assert "Traceback" not in log, log[log.index("Traceback"):][:2000]


@pytest.mark.parametrize("name", SERVED)
def test_served_crop_graph_equals_onnxruntime(name: str, server: dict[str, Any]) -> None:
    """`--crop-input`: the host pipeline in the server's python models; bit for bit the in-process evaluation."""
    from srpose.engines import open_backend
    from srpose.eval import EvalOptions, evaluate

    m = server["models"][name]
    task = m["task"]
    for ds in sample_sets(task, server["shared"]):
        want = evaluate(task, open_backend(m["onnx"]), ds, EvalOptions(progress=False, workers=0))
        assert want.flip and want.metrics[PRIMARY[task.cfg.data["dataset"]]] > 0, want.metrics
        for url in (server["grpc"], server["http"]):
            with open_backend(f"{url}/{m['ensembles']['crops']}") as remote:
                got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=4))
            np.testing.assert_array_equal(got.keypoints, want.keypoints, err_msg=f"{name} {url}")
            assert got.metrics == want.metrics and got.num_persons == want.num_persons == len(ds)


@pytest.mark.parametrize("name", SERVED)
def test_served_image_graph_equals_its_evaluation(name: str, server: dict[str, Any]) -> None:
    """The default: the preset's image-to-keypoints graph (crop, flip with the dataset's pairs, decode in the
    network) gives what the same graph gives in process (up to the float rounding of batching images)."""
    from srpose.engines import open_backend
    from srpose.eval import EvalOptions, evaluate

    m = server["models"][name]
    task = m["task"]
    local = open_backend(m["image"])
    for ds in sample_sets(task, server["shared"]):
        want = evaluate(task, local, ds, EvalOptions(progress=False, workers=0))
        assert want.metrics[PRIMARY[task.cfg.data["dataset"]]] > 0, want.metrics
        with open_backend(f"{server['grpc']}/{m['ensembles']['image']}") as remote:
            assert remote.card.image_input and remote.flip_in_graph
            assert remote.card.num_joints == task.cfg.num_joints
            got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=4))
        assert got.num_persons == want.num_persons == len(ds)
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3, err_msg=name)
        assert got.metrics == pytest.approx(want.metrics, abs=1e-6)
