"""The MPII and CrowdPose presets served by a real Triton Inference Server (the nvidia-pytriton wheel's tritonserver
and python backend on the CPU, as tests/test_triton_server.py; skipped without `make serve-deps`): one repository
with an MPII SRPose model (full-resolution heatmaps, the SRPose decoder, 16 joints) and a CrowdPose baseline (1/4
heatmaps, 14 joints), each at reduced width (tests/_dataset_presets.py). Through the server: the same PCKh / AP and
keypoints as ONNX Runtime in process, with the flip test (mirrored crops in the ensemble, swapped by each dataset's
flip pairs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from _dataset_presets import mean_pose_model, sample_dataset, small_preset
from _triton_utils import server_python
from conftest import shared_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SERVED = ("hrnet_w32_srpose_mpii_256x256", "res50_crowdpose_256x192")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running server of the reduced presets of :data:`SERVED`, their graphs, tasks and ensembles."""
    from srpose.export.onnx_export import export_onnx
    from srpose.serve import RepositoryOptions, ServeOptions, start_server, write_repository
    from srpose.tasks import task_for

    python = server_python()
    shared = shared_path("data")
    root = tmp_path_factory.mktemp("dataset_presets_served")
    models: dict[str, dict[str, Any]] = {}
    for name in SERVED:
        cfg = small_preset(name)
        task = task_for(cfg)
        ds = sample_dataset(task, shared)
        onnx = export_onnx(mean_pose_model(cfg, task, ds), cfg, root / f"{cfg.name}.onnx", batch=(1, 8, 32))
        rep = write_repository(onnx, RepositoryOptions(out=root / "repo", runtime="python-onnxruntime"))
        models[name] = dict(task=task, onnx=onnx, ensemble=rep.ensemble, shared=shared)
    with start_server(ServeOptions(repos=[root / "repo"], http_port=0, grpc_port=0, python=str(python),
                                   log_file=root / "tritonserver.log")) as srv:
        yield dict(models=models, grpc=srv.grpc_url, http=srv.http_url)


@pytest.mark.parametrize("name", SERVED)
def test_served_metric_and_keypoints_equal_onnxruntime(name: str, server: dict[str, Any]) -> None:
    from srpose.engines import open_backend
    from srpose.eval import EvalOptions, evaluate

    m = server["models"][name]
    task = m["task"]
    dataset = task.cfg.data["dataset"]
    sets = [sample_dataset(task, m["shared"])]
    if dataset == "crowdpose":  # detections too: several boxes per request, scored with OKS-NMS
        sets.append(sample_dataset(task, m["shared"], det=True))
    for ds in sets:
        want = evaluate(task, open_backend(m["onnx"]), ds, EvalOptions(progress=False, workers=0))
        assert want.flip and want.metrics[{"mpii": "Mean", "crowdpose": "AP"}[dataset]] > 0, want.metrics
        for url in (server["grpc"], server["http"]):
            with open_backend(f"{url}/{m['ensemble']}") as remote:
                got = evaluate(task, remote, ds, EvalOptions(progress=False, concurrency=4))
            np.testing.assert_array_equal(got.keypoints, want.keypoints, err_msg=f"{name} {url}")
            assert got.metrics == want.metrics and got.num_persons == want.num_persons == len(ds)
