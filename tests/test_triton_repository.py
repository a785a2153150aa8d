"""`srpose triton` without a server: the repository (configs, batching, flip rules, engines and their containers),
the srpose code copied into it, and its python-backend models run torch-free beside the evaluator's pipeline."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _export_utils import cached_export, cached_image_graph
from _triton_utils import fake_engine
from srpose.card import read_card
from srpose.cli import main
from srpose.serve.compat import TRITON_CONTAINERS, containers_for_tensorrt, tensorrt_compatibility
from srpose.serve.environment import requirements
from srpose.serve.repository import RepositoryOptions, write_repository

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def td_onnx() -> Path:
    return cached_export("hrnet", "sr", batch=(1, 8, 32))[0]


@pytest.fixture(scope="module")
def bu_onnx() -> Path:
    return cached_export("bottom-up", "sr", decode=True, flip=True)[0]


def _config(repo: Path, model: str) -> str:
    return (repo / model / "config.pbtxt").read_text()


def test_top_down_repository_layout_and_configs(td_onnx: Path, tmp_path: Path) -> None:
    rep = write_repository(td_onnx, RepositoryOptions(out=tmp_path / "repo", runtime="python-onnxruntime"))
    repo = Path(rep.repo)
    name = rep.ensemble
    assert rep.models == {"ensemble": name, "preprocess": f"{name}_preprocess", "network": f"{name}_network",
                          "postprocess": f"{name}_postprocess"}
    assert (rep.max_batch_size, rep.preferred_batch_sizes, rep.server_flip, rep.max_persons) == (32, [8, 32], True, 16)
    net = _config(repo, f"{name}_network")
    assert 'backend: "python"' in net and "max_batch_size: 32" in net and "preferred_batch_size: [ 8, 32 ]" in net
    assert "max_queue_delay_microseconds: 2000" in net and "instance_group [ { count: 1 kind: KIND_CPU } ]" in net
    assert 'dims: [ 3, 64, 64 ]' in net and 'dims: [ 17, 64, 64 ]' in net
    ens = _config(repo, name)
    assert 'platform: "ensemble"' in ens and ens.count("optional: true") == 3
    assert '"BOXES" data_type: TYPE_FP64 dims: [ -1, 5 ]' in ens and '"KEYPOINTS" data_type: TYPE_FP32' in ens
    for role in ("preprocess", "postprocess", "network"):
        version = repo / f"{name}_{role}" / "1"
        assert (version / "model.py").is_file() and (version / "srpose" / "_vendored.json").is_file()
    assert (repo / f"{name}_network" / "1" / "model.onnx").read_bytes() == td_onnx.read_bytes()
    assert "onnxruntime" in (repo / "requirements.txt").read_text()
    readme = (repo / "README.md").read_text()
    assert "srpose serve" in readme and "nvcr.io/nvidia/tritonserver" in readme and name in readme
    manifest = json.loads((repo / f"{name}_postprocess" / "1" / "srpose" / "_vendored.json").read_text())
    assert "srpose.codecs.srpose_cell" in manifest["modules"] and "srpose.tasks._rescore" in manifest["modules"]
    assert not any(m.startswith(("srpose.models", "srpose.train", "srpose.export")) for m in manifest["modules"])
    assert "srpose.codecs._heatmap_torch" in manifest["left_out_torch"]


def test_onnxruntime_runtime_and_name_clash(td_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    rep = write_repository(td_onnx, RepositoryOptions(out=repo, flip=False, max_queue_delay_us=500, instances=2))
    net = _config(repo, rep.models["network"])
    assert 'platform: "onnxruntime_onnx"' in net and "count: 2" in net and "max_queue_delay_microseconds: 500" in net
    assert "kind: KIND_AUTO" in net and 'name : "tensorrt"' in net  # a GPU where the server has one
    assert not (repo / rep.models["network"] / "1" / "model.py").exists()
    assert (rep.server_flip, rep.max_persons) == (False, 32)
    with pytest.raises(ValueError, match="--force"):
        write_repository(td_onnx, RepositoryOptions(out=repo))
    write_repository(td_onnx, RepositoryOptions(out=repo, force=True, name="other"))
    assert {m["ensemble"] for m in json.loads((repo / "srpose_models.json").read_text())["models"]} == \
        {rep.ensemble, "other"}
    with pytest.raises(ValueError, match="python-onnxruntime runs ONNX Runtime on the CPU"):
        write_repository(td_onnx, RepositoryOptions(out=repo, runtime="python-onnxruntime", device="gpu"))


def test_bottom_up_needs_the_decoded_graph(bu_onnx: Path, tmp_path: Path) -> None:
    rep = write_repository(bu_onnx, RepositoryOptions(out=tmp_path / "repo", runtime="python-onnxruntime"))
    assert (rep.task, rep.server_flip, rep.flip_in_graph, rep.max_persons, rep.max_batch_size) == \
        ("bottom-up", False, True, None, 4)
    net = _config(Path(rep.repo), rep.models["network"])
    assert "dims: [ 3, -1, -1 ]" in net and '"tags" data_type: TYPE_FP32 dims: [ 17, -1, -1, 2 ]' in net
    raw = cached_export("bottom-up", "sr")[0]
    with pytest.raises(ValueError, match="--decode"):
        write_repository(raw, RepositoryOptions(out=tmp_path / "raw"))
    with pytest.raises(ValueError, match="export it without --flip"):
        write_repository(bu_onnx, RepositoryOptions(out=tmp_path / "x", flip=False))


def test_engine_repository_names_its_triton_containers(td_onnx: Path, tmp_path: Path, capsys) -> None:
    """A TensorRT engine (a stand-in file with a real sidecar): tensorrt_plan on the GPU, and the containers whose
    TensorRT built it."""
    card = read_card(td_onnx)
    engine = fake_engine(td_onnx, tmp_path / "m.engine")
    assert main(["triton", str(engine), "--out", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert "24.10 (Triton 2.51.0)" in out and "nvcr.io/nvidia/tritonserver:24.10-py3" in out
    net = _config(tmp_path / "repo", f"{card.model_name}_network")
    assert 'platform: "tensorrt_plan"' in net and "kind: KIND_GPU" in net
    assert (tmp_path / "repo" / f"{card.model_name}_network" / "1" / "model.plan").read_bytes() == b"plan"
    assert "onnxruntime" not in (tmp_path / "repo" / "requirements.txt").read_text()
    assert main(["triton", str(engine), "--out", str(tmp_path / "r2"), "--device", "cpu"]) == 2
    assert "GPU" in capsys.readouterr().err


def test_tensorrt_container_table() -> None:
    assert containers_for_tensorrt("10.8.0.43") == ["25.01", "25.02"]
    assert containers_for_tensorrt("10.3.0") == ["24.08"]
    assert containers_for_tensorrt("10.11.0.33") == ["25.06", "25.07"]  # 25.07 was built out of 25.06
    assert "dpkg -l | grep -i nvinfer" in tensorrt_compatibility("10.5.0.18")["message"]
    assert containers_for_tensorrt("9.9.9") == []
    assert all(r[1].startswith("10.") for r in TRITON_CONTAINERS.values())
    assert "no Triton container" in tensorrt_compatibility("11.0.0.1")["message"]
    with pytest.raises(ValueError, match="version number"):
        containers_for_tensorrt("ten")


def test_serve_refuses_models_whose_backend_the_server_lacks(td_onnx: Path, tmp_path: Path) -> None:
    """The nvidia-pytriton server has the python backend only: an onnxruntime_onnx or tensorrt_plan network is
    refused before the server starts, naming the model and the fix."""
    from srpose.serve.server import ServerInstall, check_backends, repository_backends

    (tmp_path / "backends" / "python").mkdir(parents=True)
    bundled = ServerInstall(binary=tmp_path / "tritonserver", source="nvidia-pytriton", python={},
                            backends=tmp_path / "backends")
    ort = write_repository(td_onnx, RepositoryOptions(out=tmp_path / "ort"))
    py = write_repository(td_onnx, RepositoryOptions(out=tmp_path / "py", runtime="python-onnxruntime"))
    trt = write_repository(fake_engine(td_onnx, tmp_path / "m.engine"), RepositoryOptions(out=tmp_path / "trt"))
    assert sorted(repository_backends([ort.repo]).values()) == ["onnxruntime", "python", "python"]
    image = write_repository(cached_image_graph()[0], RepositoryOptions(out=tmp_path / "image"))
    assert sorted(repository_backends([image.repo]).values()) == ["onnxruntime", "python"]  # no post-processing
    check_backends([py.repo], bundled)
    check_backends([ort.repo, trt.repo], ServerInstall(binary=tmp_path / "x", source="PATH", python={}))  # unknown
    with pytest.raises(RuntimeError) as err:
        check_backends([py.repo, ort.repo, trt.repo], bundled)
    msg = str(err.value)
    assert f"{ort.models['network']}: needs Triton's onnxruntime backend" in msg
    assert f"{trt.models['network']}: needs Triton's tensorrt backend" in msg
    assert "--runtime python-onnxruntime" in msg and str(Path(py.repo) / py.models["network"]) not in msg


def test_vendoring_follows_lazy_names_to_their_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A served module importing a lazy package name (``from srpose.data import TopDownPipeline``) gets the module
    defining it copied too; the package's ``__init__`` alone would fail in the server on first use."""
    import srpose
    from srpose.serve.vendor import module_closure

    (tmp_path / "_probe_lazy.py").write_text("from srpose.data import TopDownPipeline\n")
    monkeypatch.setattr(srpose, "__path__", [*srpose.__path__, str(tmp_path)])
    modules, _ = module_closure(["srpose._probe_lazy"])
    assert {"srpose.data", "srpose.data.transforms", "srpose._lazy"} <= set(modules), sorted(modules)


def test_server_requirements_are_minimal() -> None:
    assert [r.split(">=")[0] for r in requirements("tensorrt")] == ["numpy", "opencv-python-headless"]
    assert "onnxruntime>=1.16" in requirements("python-onnxruntime")
    assert all("==" in r for r in requirements("python-onnxruntime", pin=True))


def test_cli_errors_name_the_fix(tmp_path: Path, capsys) -> None:
    assert main(["triton", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "m.onnx"
    shutil.copy(cached_export("hrnet", "sr")[0], bad)
    assert main(["triton", str(bad), "--out", str(tmp_path / "r"), "--runtime", "tensorrt"]) == 2
    assert "TensorRT engines" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ models, torch-free
_RUN_MODELS = r"""
import json, sys
from pathlib import Path
from typing import Any
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
UNRAISABLE = []  # e.g. a DLPack capsule destructor failing (#24: one traceback per output tensor in the server log)
sys.unraisablehook = lambda u: UNRAISABLE.append(repr(u.exc_value))
sys.path.insert(0, sys.argv[1])                       # the fake triton_python_backend_utils
repo, name, image, boxes = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), json.loads(sys.argv[5])
import numpy as np
import triton_python_backend_utils as pb
import importlib.util

def load(role):
    version = repo / f"{name}_{role}" / "1"
    for m in [m for m in sys.modules if m == "srpose" or m.startswith("srpose.")]:
        del sys.modules[m]
    spec = importlib.util.spec_from_file_location(f"model_{role}", version / "model.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    cfg = {"parameters": {}}
    for line in (version.parent / "config.pbtxt").read_text().splitlines():
        if line.startswith("parameters"):
            key = line.split('key: "')[1].split('"')[0]
            val = line.split('string_value: "', 1)[1].rsplit('" }', 1)[0]
            cfg["parameters"][key] = {"string_value": val.encode().decode("unicode_escape")}
    model.initialize({"model_config": json.dumps(cfg), "model_name": f"{name}_{role}",
                      "model_repository": str(version.parent), "model_version": "1"})
    files = {m.__file__ for n, m in sys.modules.items() if n.startswith("srpose") and getattr(m, "__file__", None)}
    assert all(f.startswith(str(version)) for f in files), sorted(f for f in files if not f.startswith(str(version)))
    return model

def run(model, tensors):
    (resp,) = model.execute([pb.InferenceRequest([pb.Tensor(k, v) for k, v in tensors.items()])])
    if resp.has_error():
        return {"error": resp.error().message()}
    return {k: resp.output(k) for k in resp.output_names()}

pre, net, post = load("preprocess"), load("network"), load("postprocess")
data = np.frombuffer(image.read_bytes(), np.uint8)
a = run(pre, {"IMAGE": data, "BOXES": np.array(boxes, np.float64)})
b = run(net, {"input": a["input"]})
c = run(post, {"heatmaps": b["heatmaps"], "CENTER": a["CENTER"], "SCALE": a["SCALE"], "BOX_SCORE": a["BOX_SCORE"]})
errors = [run(pre, {"IMAGE": data[:100], "BOXES": np.array(boxes, np.float64)})["error"],
          run(pre, {"IMAGE": data, "BOXES": np.zeros((0, 5))})["error"],
          run(pre, {"IMAGE": data, "BOXES": np.array([[5000, 10, 50, 80, 1.0]])})["error"],
          run(pre, {"BOXES": np.array(boxes, np.float64)})["error"],
          run(pre, {"IMAGE": data, "BOXES": np.array([[10, 10, 40, 80, np.nan]])})["error"]]
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
import gc; gc.collect()
assert not UNRAISABLE, UNRAISABLE
np.savez(sys.argv[6], crops=a["input"], keypoints=c["KEYPOINTS"], scores=c["SCORES"])
print(json.dumps(errors))
"""


_BOXES = [[120.5, 40.25, 150.0, 300.0, 0.9], [300.0, 60.0, 110.0, 260.0, 0.7]]


def _run_models(script: str, repo: str, ensemble: str, image: Path, boxes: list, tmp_path: Path
                ) -> tuple[list[str], Any]:
    """Run ``script`` (the repository's models loaded as the server loads them, the fake triton module beside) in
    a process of its own: (the error messages it printed, the arrays it saved)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    shutil.copy(TESTS / "_fake_triton_pb.py", fake / "triton_python_backend_utils.py")
    run = subprocess.run([sys.executable, "-c", script, str(fake), repo, ensemble, str(image), json.dumps(boxes),
                          str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), np.load(tmp_path / "out.npz")


def test_python_models_run_torch_free_from_the_repository_copy(td_onnx: Path, tmp_path: Path,
                                                               coco_sample: dict) -> None:
    """The repository's pre-processing, network and post-processing, loaded as the server loads them (model.py,
    the srpose copy beside it) in a process without torch, give the evaluator's crops and keypoints; bad requests
    get errors naming the problem."""
    from srpose.codecs import codec_from_dict
    from srpose.data.transforms import TopDownPipeline, box_to_center_scale, read_rgb
    from srpose.engines.onnxruntime import OnnxRuntimeBackend
    from srpose.tasks._rescore import rescore

    rep = write_repository(td_onnx, RepositoryOptions(out=tmp_path / "repo", runtime="python-onnxruntime"))
    image = Path(coco_sample["images"]) / "000000196141.jpg"
    errors, got = _run_models(_RUN_MODELS, rep.repo, rep.ensemble, image, _BOXES, tmp_path)
    boxes = _BOXES
    for err, want in zip(errors, ("cannot decode", "holds no person", "lies outside the", "'IMAGE' is missing",
                                  "(x, y, w, h, score) = (10, 10, 40, 80, nan) must be finite")):
        assert want in err, errors
    card = read_card(td_onnx)
    pipe = TopDownPipeline(dict(image_size=list(card.input_size), heatmap_size=list(card.heatmap_size),
                                mean=card.mean, std=card.std, flip_pairs=card.flip_pairs))
    img = read_rgb(image)
    cs = [box_to_center_scale(*b[:4], card.input_size) for b in boxes]
    crops = np.stack([pipe(img, dict(center=c, scale=s))["img"] for c, s in cs])
    np.testing.assert_array_equal(got["crops"], np.concatenate([crops, crops[..., ::-1]]))
    be = OnnxRuntimeBackend(td_onnx)
    codec = codec_from_dict(card.codec)
    heat = codec.flip_merge(be.infer(crops)["heatmaps"], be.infer(np.ascontiguousarray(crops[..., ::-1]))["heatmaps"])
    xy, score = codec.decode_to_image(heat, np.stack([c for c, _ in cs]), np.stack([s for _, s in cs]))
    np.testing.assert_array_equal(got["keypoints"][..., :2], xy)
    np.testing.assert_array_equal(got["keypoints"][..., 2], score[..., 0])
    want = [rescore(k, b[4], 0.2) for k, b in zip(got["keypoints"], boxes)]
    np.testing.assert_allclose(got["scores"], want, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ image graphs
def test_crop_graphs_are_served_as_image_graphs(td_onnx: Path, tmp_path: Path, capsys) -> None:
    """#20: the network crops, flips and decodes; the ensemble has no post-processing model, the network takes one
    image with its persons a request (no batching of ragged inputs), on a GPU where the server has one with Triton's
    TensorRT accelerator and the card's profile."""
    assert main(["triton", str(td_onnx), "--out", str(tmp_path / "repo")]) == 0
    text = capsys.readouterr().out
    assert "served as the image-to-keypoints graph" in text and "check the boxes" in text
    assert main(["triton", str(td_onnx), "--out", str(tmp_path / "crops"), "--crop-input"]) == 0
    crops = json.loads((tmp_path / "crops" / "srpose_models.json").read_text())["models"][0]
    assert "postprocess" in crops["models"] and not crops["image_input"] and not crops["wrapped"]
    rep = json.loads((tmp_path / "repo" / "srpose_models.json").read_text())["models"][0]
    assert sorted(rep["models"]) == ["ensemble", "network", "preprocess"] and rep["image_input"]
    assert rep["max_batch_size"] == 0 and rep["max_persons"] == 128 and rep["flip_in_graph"]
    net = _config(tmp_path / "repo", rep["models"]["network"])
    assert "max_batch_size: 0" in net and "dynamic_batching" not in net and "kind: KIND_AUTO" in net
    assert '"images" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ]' in net
    assert '"box_image" data_type: TYPE_INT32 dims: [ -1 ]' in net
    assert 'key: "precision_mode" value: "FP32"' in net
    assert 'key: "trt_profile_opt_shapes" value: "images:8x480x640x3,boxes:32x5,box_image:32"' in net
    served = read_card(tmp_path / "repo" / rep["models"]["network"] / "1" / "model.onnx")
    assert served.image_input and served.flip and served.pixel_format == "bgr"
    ens = _config(tmp_path / "repo", rep["ensemble"])
    assert "_postprocess" not in ens and 'output_map { key: "keypoints" value: "KEYPOINTS" }' in ens


def test_accelerator_precision_follows_the_graph(tmp_path: Path) -> None:
    from srpose.serve._models import tensorrt_accelerator
    from srpose.serve.repository import plan_repository

    fp16 = tmp_path / "m.fp16.onnx"
    from srpose.export.fp16 import convert_fp16

    convert_fp16(cached_export("hrnet", "sr", batch=(1, 8, 32))[0], fp16)
    crop = plan_repository(fp16, RepositoryOptions(out=tmp_path / "r"))
    assert 'value: "FP16"' in tensorrt_accelerator(crop)
    cpu = plan_repository(fp16, RepositoryOptions(out=tmp_path / "r", device="cpu"))
    assert tensorrt_accelerator(cpu) is None  # CPU instances: no GPU accelerator
    from srpose.export.image_graph import write_image_graph

    image = plan_repository(write_image_graph(fp16, tmp_path / "i.fp16.onnx"), RepositoryOptions(out=tmp_path / "r"))
    assert image.card.image_input
    assert 'value: "FP32"' in tensorrt_accelerator(image)  # weak typing would put the crop geometry in FP16


_RUN_IMAGE_MODELS = _RUN_MODELS.split("pre, net, post =")[0] + r"""
pre, net = load("preprocess"), load("network")
data = np.frombuffer(image.read_bytes(), np.uint8)
a = run(pre, {"IMAGE": data, "BOXES": np.array(boxes, np.float64)})
b = run(net, {k: a[k] for k in ("images", "boxes", "box_image")})
cs = run(pre, {"IMAGE": data, "CENTER_SCALE": np.array([[300.0, 200.0, 1.0, 1.333, 0.5]])})
errors = [run(pre, {"IMAGE": data, "BOXES": np.array([[10, 10, np.nan, 80, 1.0]])})["error"],
          run(pre, {"IMAGE": data, "BOXES": np.array([[10, 10, 40, 80, np.nan]])})["error"],
          run(pre, {"IMAGE": data, "BOXES": np.zeros((200, 5)) + [10, 10, 40, 80, 1]})["error"],
          run(net, {"images": a["images"], "boxes": a["boxes"]})["error"],
          run(pre, {"IMAGE": data, "CENTER_SCALE": np.array([[300.0, 200.0, 1.0, 1.333, 0.5],
                                                             [300.0, 200.0, 0.0, 1.333, 0.5]])})["error"]]
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
import gc; gc.collect()
assert not UNRAISABLE, UNRAISABLE
np.savez(sys.argv[6], images=a["images"], boxes=a["boxes"], keypoints=b["keypoints"], scores=b["scores"],
         cs_boxes=cs["boxes"])
print(json.dumps(errors))
"""


def test_image_graph_models_run_torch_free_and_equal_the_graph(td_onnx: Path, tmp_path: Path,
                                                               coco_sample: dict) -> None:
    """The image path's pre-processing only decodes and checks; its network (ONNX Runtime in the python backend)
    gives the graph's own keypoints for the image; bad boxes (NaN, NaN score, too many) are refused by name."""
    from srpose.data.transforms import center_scale_to_boxes
    from srpose.engines.onnxruntime import OnnxRuntimeBackend

    assert main(["triton", str(td_onnx), "--out", str(tmp_path / "repo"), "--runtime", "python-onnxruntime"]) == 0
    rep = json.loads((tmp_path / "repo" / "srpose_models.json").read_text())["models"][0]
    image = Path(coco_sample["images"]) / "000000196141.jpg"
    errors, got = _run_models(_RUN_IMAGE_MODELS, rep["repo"], rep["ensemble"], image, _BOXES, tmp_path)
    boxes = _BOXES
    for err, want in zip(errors, ("must be finite", "must be finite", "send at most 128", "'box_image' is missing",
                                  "'CENTER_SCALE' row 1 (300, 200, 0, 1.333) must be finite with scales > 0")):
        assert want in err, errors
    assert len(errors) == 5
    import cv2

    np.testing.assert_array_equal(got["images"], cv2.imread(str(image))[None])  # BGR, as the graph takes it
    graph = Path(rep["repo"]) / rep["models"]["network"] / "1" / "model.onnx"
    want = OnnxRuntimeBackend(graph).infer({"images": got["images"], "boxes": np.array(boxes, np.float32),
                                            "box_image": np.zeros(2, np.int32)})
    np.testing.assert_array_equal(got["keypoints"], want["keypoints"])
    np.testing.assert_array_equal(got["scores"], want["scores"])
    np.testing.assert_allclose(got["cs_boxes"][0, :4], center_scale_to_boxes(np.array([[300.0, 200.0]]),
                                                                             np.array([[1.0, 1.333]]))[0], rtol=1e-6)


def test_serving_modules_import_without_torch() -> None:
    code = textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import srpose.serve.preprocess, srpose.serve.postprocess, srpose.serve.network, srpose.serve.repository
        import srpose.serve.server, srpose.serve.compat, srpose.serve.vendor, srpose.engines.triton_client
        import srpose.tasks.served
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
