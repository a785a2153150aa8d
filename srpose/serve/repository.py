"""``srpose triton``: a Triton Inference Server model repository for an exported graph or a TensorRT engine.

``RepositoryOptions -> write_repository(model, options) -> RepositoryReport``. A top-down image-to-keypoints graph
(``srpose export --image-input``, or an engine of one; ``srpose triton`` wraps crop graphs into one by default)
crops, flips and decodes in the network: the pre-processing only decodes the image and checks the boxes, and no
post-processing model exists (``NAME``, ``NAME_preprocess``, ``NAME_network``). For crop graphs (and engines of
them) and bottom-up graphs, for a model ``NAME`` (the card's model name unless ``name`` is given) it writes four
models::

    REPO/
      README.md, requirements.txt        how to serve; what the server's Python needs
      NAME/config.pbtxt, 1/              ensemble: IMAGE (+ BOXES or CENTER_SCALE) -> KEYPOINTS, SCORES
      NAME_preprocess/config.pbtxt       python: decode, affine crops (+ mirrored ones), normalise
      NAME_preprocess/1/model.py, srpose/
      NAME_network/config.pbtxt          tensorrt_plan | onnxruntime_onnx | python (ONNX Runtime), dynamic batching
      NAME_network/1/model.plan | model.onnx (+ model.py, srpose/ for python-onnxruntime)
      NAME_postprocess/config.pbtxt      python: flip merge, decode, rescoring
      NAME_postprocess/1/model.py, srpose/

The network's ``max_batch_size`` is the profile's maximum batch (the card's ``batch``), its preferred batch sizes
the profile's optimum and maximum (top-down image-to-keypoints networks take one image with its persons per
request: no batching across requests). ONNX networks run on a GPU instance where the server has one (``KIND_AUTO``)
with Triton's TensorRT accelerator for ONNX Runtime. Several models may share one repository; the models are built
in a staging folder and moved in only when all are written.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srpose.card import ENGINE_SUFFIXES, ArtifactCard, check_engine_file, read_card

from ._models import NetworkIO, Plan, write_models
from ._pbtxt import Tensor
from ._readme import readme_text, record_model
from .compat import tensorrt_compatibility
from .environment import RUNTIMES, requirements, requirements_text

__all__ = ["RepositoryOptions", "RepositoryReport", "write_repository", "network_io", "plan_repository"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 6: "TYPE_INT32", 7: "TYPE_INT64", 2: "TYPE_UINT8",
               9: "TYPE_BOOL", 16: "TYPE_BF16"}
_TRT_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
              "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "bfloat16": "TYPE_BF16"}


@dataclass
class RepositoryOptions:
    """``out``: the repository folder (created; other models in it are kept); ``name``: the ensemble's name
    (default: the card's model name); ``runtime``: ``tensorrt`` (engines), ``onnxruntime`` (Triton's ONNX Runtime
    backend) or ``python-onnxruntime`` (ONNX Runtime inside the python backend; default: by file type);
    ``flip``: the ensemble runs the mirrored pass for top-down graphs without the flip test (None: the config's
    ``test_cfg.flip_test``); ``max_queue_delay_us``: the dynamic batcher's bound on waiting for more requests;
    ``instances`` / ``python_instances``: model instances of the network / of the pre- and post-processing;
    ``device``: ``cpu``, ``gpu`` or ``auto`` (a GPU where the server has one) for the network (default: gpu for
    engines, auto for ``onnxruntime``, cpu for ``python-onnxruntime``); ``threads``: ONNX Runtime intra-op threads
    of ``python-onnxruntime``; ``force``: replace models of the same names."""

    out: str | Path
    name: str | None = None
    runtime: str | None = None
    flip: bool | None = None
    max_queue_delay_us: int = 2000
    instances: int = 1
    python_instances: int = 1
    device: str | None = None
    threads: int | None = None
    force: bool = False

    def check(self) -> None:
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1 or self.python_instances < 1:
            raise ValueError(f"instances ({self.instances}) and python_instances ({self.python_instances}) must be "
                             ">= 1")
        if self.device not in (None, "cpu", "gpu", "auto"):
            raise ValueError(f"device {self.device!r}: expected cpu, gpu or auto")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '_', '.', '-' (a Triton model name)")


@dataclass
class RepositoryReport:
    """What :func:`write_repository` wrote."""

    repo: str
    ensemble: str
    task: str
    runtime: str
    network_platform: str
    models: dict[str, str]
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    server_flip: bool
    flip_in_graph: bool
    decode: bool
    max_persons: int | None
    input_size: list[int]
    requirements: list[str]
    image_input: bool = False
    wrapped: str | None = None
    tensorrt: dict[str, Any] | None = None
    vendored_modules: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in shape)


def network_io(path: Path, card: ArtifactCard, *, batched: bool = True) -> NetworkIO:
    """The inputs and outputs of an ``.onnx`` graph (from the file) or an engine (from its sidecar), the batch
    dimension dropped when Triton batches the model (``batched``)."""
    def dims(shape: Any) -> tuple[int, ...]:
        d = _dims(shape)
        return d[1:] if batched else d

    if path.suffix in ENGINE_SUFFIXES:
        section = card.engine or {}
        if not section.get("inputs") or not section.get("outputs"):
            raise ValueError(f"the sidecar of {path} lists no engine inputs/outputs: rebuild it with `srpose build`")
        tensors = []
        for t in [*section["inputs"], *section["outputs"]]:
            dtype = _TRT_TYPES.get(str(t["dtype"]).lower())
            if dtype is None:
                raise ValueError(f"engine {path}: tensor {t['name']!r} has type {t['dtype']!r}, which Triton "
                                 f"configs do not map here (expected one of {sorted(_TRT_TYPES)})")
            tensors.append(Tensor(str(t["name"]), dtype, dims(t["shape"])))
        n_in = len(section["inputs"])
    else:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        values = [v for v in graph.input if v.name not in inits] + list(graph.output)
        tensors = []
        for v in values:
            tt = v.type.tensor_type
            dtype = _ONNX_TYPES.get(tt.elem_type)
            if dtype is None:
                raise ValueError(f"{path}: tensor {v.name!r} has ONNX element type {tt.elem_type}, not mapped to "
                                 "Triton")
            tensors.append(Tensor(v.name, dtype, dims([d.dim_value if d.HasField("dim_value") else -1
                                                       for d in tt.shape.dim])))
        n_in = len(values) - len(graph.output)
    names = [t.name for t in tensors[:n_in]]
    if sorted(names) != sorted(card.input_names):
        raise ValueError(f"{path}: the graph's inputs {names} differ from its card's {card.input_names}")
    order = {n: i for i, n in enumerate(card.input_names)}
    return NetworkIO(tuple(sorted(tensors[:n_in], key=lambda t: order[t.name])), tuple(tensors[n_in:]))


def _server_flip(card: ArtifactCard, flip: bool | None) -> bool:
    """Whether the ensemble runs the mirrored pass; ValueError for flip requests the graph cannot honour."""
    want = bool(((card.config or {}).get("test_cfg") or {}).get("flip_test", True)) if flip is None else flip
    if card.flip:
        if flip is False:
            raise ValueError(f"{card.model_name}: the graph has the flip test folded in; export it without --flip "
                             "to serve it without")
        return False
    if card.task == "bottom-up" or card.decode:
        if flip:
            raise ValueError(f"{card.model_name}: the graph decodes in the graph without the flip test, so the "
                             "server cannot add it; export with --flip (or serve with --no-flip)")
        return False
    return want


def plan_repository(model: str | Path, options: RepositoryOptions) -> Plan:
    """The settings of the models of ``model`` (checked; nothing written)."""
    options.check()
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix not in (".onnx", *ENGINE_SUFFIXES):
        raise ValueError(f"{path}: expected an exported .onnx graph or a TensorRT .engine/.plan with its sidecar")
    card = read_card(path)
    is_engine = path.suffix in ENGINE_SUFFIXES
    if is_engine:
        check_engine_file(path, card)  # what the TensorRT runtime checks, before it is copied as model.plan
    runtime = options.runtime or ("tensorrt" if is_engine else "onnxruntime")
    if (runtime == "tensorrt") != is_engine:
        raise ValueError(f"--runtime {runtime} serves " + ("TensorRT engines" if runtime == "tensorrt" else
                         ".onnx graphs") + f", not {path.name}")
    if card.task == "bottom-up" and not card.decode:
        raise ValueError(f"{path.name} is a raw bottom-up graph: serving needs the decoded graph (flip merge, NMS and "
                         "top-k in the graph; the server's Python has no torch): export it with `srpose export ... "
                         "--decode`")
    device = options.device or ("gpu" if is_engine else "cpu" if runtime == "python-onnxruntime" else "auto")
    if runtime == "python-onnxruntime" and device != "cpu":
        raise ValueError("--runtime python-onnxruntime runs ONNX Runtime on the CPU; use --runtime onnxruntime "
                         "(Triton's ONNX Runtime backend) for a GPU")
    if runtime == "tensorrt" and device == "cpu":
        raise ValueError("TensorRT engines run on a GPU: drop --device cpu")
    server_flip = _server_flip(card, options.flip)
    lo, opt, hi = card.batch
    people_out = card.image_input and card.task == "top-down"
    if people_out:  # one image and its persons a request: the graph's person profile bounds a request
        max_batch, preferred, max_persons = 0, [], hi
    else:
        max_batch, preferred = hi, sorted({opt, hi})
        max_persons = (hi // 2 if server_flip else hi) if card.task == "top-down" else None
    if max_persons == 0:
        raise ValueError(f"{path.name}: its profile's max batch {hi} cannot hold a crop and its mirror: export with "
                         "a max batch >= 2, or serve with --no-flip")
    kinds = {"gpu": "KIND_GPU", "cpu": "KIND_CPU", "auto": "KIND_AUTO"}
    return Plan(name=options.name or card.model_name, card=card, model_file=path, runtime=runtime,
                io=network_io(path, card, batched=max_batch > 0), max_batch_size=max_batch, preferred=preferred,
                max_queue_delay_us=options.max_queue_delay_us, instances=options.instances,
                python_instances=options.python_instances, kind=kinds[device], server_flip=server_flip,
                max_persons=max_persons, threads=options.threads)


def write_repository(model: str | Path, options: RepositoryOptions, *, source: str | Path | None = None
                     ) -> RepositoryReport:
    """Write the models of ``model`` into ``options.out`` (see the module docstring); ``source``: the file
    ``model`` was made from (e.g. the crop graph an image graph wraps), named in the report and the README."""
    plan = plan_repository(model, options)
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: name a folder for the model repository")
    return _write(out, plan, options, None if source is None else Path(source))


def _write(out: Path, plan: Plan, options: RepositoryOptions, wrapped: Path | None) -> RepositoryReport:
    clash = [n for n in plan.names.values() if (out / n).exists()]
    if clash and not options.force:
        raise ValueError(f"{out} already holds the models {clash}: pass --force to replace them, or --name "
                              "to serve this one under another name")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        manifests = write_models(staging, plan)
        for n in plan.names.values():
            if (out / n).exists():
                shutil.rmtree(out / n)
            (staging / n).rename(out / n)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    compat = tensorrt_compatibility((plan.card.engine or {}).get("tensorrt_version")) \
        if plan.runtime == "tensorrt" else None
    report = RepositoryReport(
        repo=str(out), ensemble=plan.name, task=plan.card.task, runtime=plan.runtime,
        network_platform=RUNTIMES[plan.runtime], models=dict(plan.names), max_batch_size=plan.max_batch_size,
        preferred_batch_sizes=plan.preferred, max_queue_delay_us=plan.max_queue_delay_us,
        server_flip=plan.server_flip, flip_in_graph=plan.card.flip, decode=plan.card.decode,
        max_persons=plan.max_persons, input_size=list(plan.card.input_size), requirements=requirements(plan.runtime),
        tensorrt=compat, vendored_modules={k: len(m["modules"]) for k, m in manifests.items()},
        image_input=plan.card.image_input, wrapped=None if wrapped is None else str(wrapped))
    _write_root_files(out, {**report.to_dict(), "file": (wrapped or plan.model_file).name})
    return report


def _write_root_files(out: Path, entry: dict[str, Any]) -> None:
    """The manifest, README.md and requirements.txt describing every srpose model now in ``out`` (Triton ignores
    files at the repository's top level)."""
    from srpose._io import atomic_write_text

    models = record_model(out, entry)
    atomic_write_text(out / "requirements.txt", requirements_text([m["runtime"] for m in models]))
    atomic_write_text(out / "README.md", readme_text(out, models))
