"""Every `config.pbtxt` that `srpose triton` writes parses as Triton's own `ModelConfig` (the protobuf tritonclient
ships, strict: an unknown field or enum value fails), and each ensemble is wired as Triton checks it at load time:
steps name models of the repository, map only inputs and outputs those models declare, every tensor has one producer,
and producer and consumer agree on data type and shape.

This covers the network models the CPU server of the tests cannot load (`onnxruntime_onnx` and `tensorrt_plan`: the
pytriton bundle has only the python backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _export_utils import cached_export, cached_image_graph
from _triton_utils import fake_engine
from srpose.serve.repository import RepositoryOptions, write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient is not installed: run `make serve-deps`")
text_format = pytest.importorskip("google.protobuf.text_format")


CASES = {
    "top-down, python-onnxruntime": lambda tmp: (cached_export("hrnet", "sr", batch=(1, 8, 32))[0],
                                                  dict(runtime="python-onnxruntime")),
    "top-down, onnxruntime_onnx, no server flip": lambda tmp: (cached_export("hrnet", "sr", batch=(1, 8, 32))[0],
                                                                dict(flip=False, instances=2)),
    "top-down decoded, onnxruntime_onnx": lambda tmp: (cached_export("hrnet", "sr", decode=True, flip=True)[0],
                                                       {}),
    "top-down, tensorrt_plan": lambda tmp: (fake_engine(cached_export("hrnet", "sr", batch=(1, 8, 32))[0], tmp / "m.engine"), {}),
    "top-down image graph, onnxruntime_onnx + TensorRT accelerator": lambda tmp: (cached_image_graph()[0], {}),
    "top-down image graph, python-onnxruntime": lambda tmp: (cached_image_graph()[0],
                                                              dict(runtime="python-onnxruntime")),
    "top-down image graph, tensorrt_plan": lambda tmp: (fake_engine(cached_image_graph()[0], tmp / "i.engine"), {}),
    "bottom-up decoded, onnxruntime_onnx": lambda tmp: (cached_export("bottom-up", "sr", decode=True, flip=True)[0],
                                                        {}),
    "bottom-up decoded, python-onnxruntime": lambda tmp: (
        cached_export("bottom-up", "sr", decode=True, flip=True)[0], dict(runtime="python-onnxruntime")),
}


def _parse(path: Path) -> Any:
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(), cfg)
    except text_format.ParseError as exc:
        pytest.fail(f"{path} is not a valid Triton ModelConfig: {exc}")
    return cfg


def _shape(t: Any, batched: bool) -> list[int]:
    return ([-1] if batched else []) + list(t.dims)


def _compatible(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("case", list(CASES))
def test_configs_are_valid_triton_model_configs_and_ensembles_are_wired(case: str, tmp_path: Path) -> None:
    model, opts = CASES[case](tmp_path)
    rep = write_repository(model, RepositoryOptions(out=tmp_path / "repo", **opts))
    repo = Path(rep.repo)
    configs = {p.parent.name: _parse(p) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == set(rep.models.values()), sorted(configs)
    for name, cfg in configs.items():
        assert cfg.name == name, f"{name}/config.pbtxt names itself {cfg.name!r}"
        assert (repo / name / "1").is_dir()
    net = configs[rep.models["network"]]
    want = {"python-onnxruntime": ("", "python"), "tensorrt": ("tensorrt_plan", "")}.get(
        rep.runtime, ("onnxruntime_onnx", ""))
    assert (net.platform, net.backend) == want, (net.platform, net.backend)
    if net.max_batch_size:
        assert net.dynamic_batching.max_queue_delay_microseconds > 0 and net.instance_group
        assert all(1 <= s <= net.max_batch_size for s in net.dynamic_batching.preferred_batch_size)

    ens = configs[rep.ensemble]
    assert ens.platform == "ensemble" and ens.ensemble_scheduling.step
    # ensemble tensor -> (data type, full shape) of its producer: the ensemble's inputs, then each step's outputs
    tensors = {t.name: (t.data_type, _shape(t, ens.max_batch_size > 0)) for t in ens.input}
    for step in ens.ensemble_scheduling.step:
        assert step.model_name in configs, f"{case}: step runs {step.model_name!r}, not in the repository"
        m = configs[step.model_name]
        ins = {t.name: t for t in m.input}
        outs = {t.name: t for t in m.output}
        for own, ens_name in step.input_map.items():
            assert own in ins, f"{step.model_name} has no input {own!r}"
            assert ens_name in tensors, f"{step.model_name}.{own} reads {ens_name!r}, which nothing produced before"
            dtype, shape = tensors[ens_name]
            assert dtype == ins[own].data_type, f"{ens_name} -> {step.model_name}.{own}: data type"
            assert _compatible(shape, _shape(ins[own], m.max_batch_size > 0)), \
                f"{ens_name} {shape} -> {step.model_name}.{own} {_shape(ins[own], m.max_batch_size > 0)}"
        required = {n for n, t in ins.items() if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name}: inputs {required - set(step.input_map)} unfed"
        for own, ens_name in step.output_map.items():
            assert own in outs, f"{step.model_name} has no output {own!r}"
            assert ens_name not in tensors, f"{ens_name!r} has two producers"
            tensors[ens_name] = (outs[own].data_type, _shape(outs[own], m.max_batch_size > 0))
    for t in ens.output:
        assert t.name in tensors, f"ensemble output {t.name!r} is produced by no step"
        dtype, shape = tensors[t.name]
        assert dtype == t.data_type and _compatible(shape, _shape(t, ens.max_batch_size > 0)), t.name
