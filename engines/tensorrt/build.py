"""Build a TensorRT plan from an ONNX file, in small steps (Polygraphy-style loaders), each testable on its own:

:func:`parse_network` (ONNX path -> network) -> :func:`configure_builder` (workspace, optimisation level,
profile) -> :func:`load_timing_cache` -> :func:`build_plan` (serialised plan) -> :func:`inspect_plan` (I/O
tensors, device memory) -> :func:`save_engine` (plan + sidecar, atomically) -> :func:`save_timing_cache` (merged
into the file under a lock). :func:`build_engine` runs them all on the device of :class:`BuildOptions`.

Builds are strongly typed: precision comes from the ONNX graph (``srpose export`` writes FP32, FP16 and Q/DQ INT8
graphs). The weakly typed ``legacy`` path (:mod:`.legacy`) exists on TensorRT 10.x only. The plan file is a plain
TensorRT plan (trtexec loads it); the engine's card lives in the sidecar ``X.engine.json`` (:mod:`srpose.card`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from srpose._io import atomic_path, atomic_write_bytes, sha256_file
from srpose.card import ArtifactCard, write_sidecar

from . import _compat, cuda, legacy as _legacy
from .onnx_card import engine_card, load_onnx, profile_of
from .onnx_check import raise_for_problems

if TYPE_CHECKING:  # for the "trt.X" annotations only; code reads _compat.require_trt() at call time
    from ._compat import trt  # noqa: F401

__all__ = ["BuildOptions", "build_engine", "parse_network", "configure_builder", "load_timing_cache",
           "build_plan", "inspect_plan", "save_engine", "save_timing_cache"]


@dataclass(frozen=True)
class BuildOptions:
    """What :func:`build_engine` does, as plain data.

    ``batch``: (min, opt, max) of the optimisation profile, None for the card's (ONNX export) profile.
    ``workspace_gib``: builder workspace; ``opt_level``: builder optimisation level 0-5; ``timing_cache``: a
    file read when present and merged with this build's timings afterwards. ``legacy`` ("fp16" | "int8"):
    the weakly typed TensorRT 10.x path; ``calib_cache``: its INT8 calibration cache. ``device``: CUDA device
    index (selected before the builder exists); ``memory``: CUDA helper for that ("auto", "torch",
    "cuda-python", "pycuda"). ``check_onnx``: refuse graphs TensorRT 10's ONNX parser cannot take
    (:mod:`.onnx_check`) before building.
    """

    batch: tuple[int, int, int] | None = None
    workspace_gib: float = 4.0
    opt_level: int = 3
    timing_cache: str | None = None
    legacy: str | None = None
    calib_cache: str | None = None
    device: int = 0
    memory: str = "auto"
    verbose: bool = False
    check_onnx: bool = True

    def validate(self) -> "BuildOptions":
        if not 0 <= int(self.opt_level) <= 5:
            raise ValueError(f"opt_level={self.opt_level} must be between 0 and 5")
        if not self.workspace_gib > 0:
            raise ValueError(f"workspace_gib={self.workspace_gib} must be positive")
        if int(self.device) < 0:
            raise ValueError(f"device={self.device} must be a CUDA device index >= 0")
        if self.memory not in cuda.MEMORY_KINDS:
            raise ValueError(f"memory={self.memory!r} is not one of {cuda.MEMORY_KINDS}")
        if self.legacy is not None and self.legacy not in _legacy.LEGACY_MODES:
            raise ValueError(f"legacy={self.legacy!r} must be None, 'fp16' or 'int8'")
        return self


# ----------------------------------------------------------------------------------------- steps


def parse_network(trt: Any, builder: "trt.Builder", logger: "trt.ILogger", onnx_path: Path,
                  flags: int) -> Any:
    """A network parsed from ``onnx_path``; RuntimeError listing every parser error with its node."""
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return network
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        lines.append(f"  node {err.node()} '{err.node_name()}' ({err.node_operator()}): {err.desc()}")
    raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}:\n" + "\n".join(lines or ["  (no details)"]))


def configure_builder(trt: Any, builder: "trt.Builder", card: ArtifactCard, options: BuildOptions) -> Any:
    """A builder config with the workspace, optimisation level and the card's one optimisation profile (every
    input's min/opt/max shapes: image-to-keypoints graphs have three inputs)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = int(options.opt_level)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in card.input_profile().items():
        profile.set_shape(name, lo, opt, hi)  # raises on inconsistent min/opt/max
    if config.add_optimization_profile(profile) < 0:
        raise RuntimeError(f"TensorRT refused the optimisation profile {profile_of(card)}")
    return config


def load_timing_cache(config: "trt.IBuilderConfig", path: Path | None) -> None:
    """Start the build from the timing cache in ``path`` (when it exists and matches this GPU/TensorRT)."""
    if path is None:
        return
    blob = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(blob) if blob else None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if blob:  # another GPU's or TensorRT's cache: start afresh (merged into the file afterwards)
            why = "is unreadable" if cache is None else "does not match this GPU/TensorRT"
            warnings.warn(f"timing cache {path} {why}; starting a new one")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise RuntimeError("TensorRT could not create an empty timing cache: build without --timing-cache")


def build_plan(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
               onnx_path: Path) -> tuple[Any, float]:
    """(serialised plan, seconds); RuntimeError when TensorRT builds nothing."""
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}: see the TensorRT log above "
                           "(try a larger --workspace, or --verbose)")
    return plan, seconds


def inspect_plan(trt: Any, plan: Any, logger: "trt.ILogger") -> dict[str, Any]:
    """``{"inputs", "outputs", "device_memory_bytes"}`` of a plan, read back through a Runtime."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("TensorRT built a plan but cannot load it back (see the TensorRT log above)")
    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = str(engine.get_tensor_name(i))
        d = {"name": name, "dtype": _compat.dtype_name(engine.get_tensor_dtype(name)),
             "shape": [int(v) for v in engine.get_tensor_shape(name)]}
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(d)
    return {"inputs": ins, "outputs": outs, "device_memory_bytes": _compat.engine_device_memory(engine)}


def save_engine(out_path: Path, plan: Any, card: ArtifactCard) -> None:
    """The plain plan, then its sidecar (the card), each atomically; a sidecar that fails to land takes the new
    plan with it, so no plan is left described by an old sidecar."""
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))
    try:
        write_sidecar(out_path, card)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path + '.lock'`` (POSIX ``flock``; no lock where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_timing_cache(config: "trt.IBuilderConfig", path: Path) -> None:
    """Merge this build's timings into the cache file: under a lock, re-read the file (a parallel build may have
    written it meanwhile), ``combine`` it into ours (ignoring header mismatches) and write the result atomically."""
    ours = config.get_timing_cache()
    with _file_lock(path):
        blob = path.read_bytes() if path.exists() else b""
        disk = config.create_timing_cache(blob) if blob else None
        if blob and (disk is None or not ours.combine(disk, ignore_mismatch=True)):
            warnings.warn(f"timing cache {path} could not be merged (unreadable); it is replaced by this build's")
        atomic_write_bytes(path, bytes(memoryview(ours.serialize())))


# ----------------------------------------------------------------------------------------- the whole build


def _open_device(options: BuildOptions) -> Any:
    """The CUDA helper that makes ``options.device`` current (before the Builder exists), or None when no CUDA
    library is installed and device 0 (TensorRT's default) is wanted."""
    try:
        return cuda.cuda_ops(options.memory, int(options.device))
    except RuntimeError as e:
        if int(options.device) != 0 or options.memory != "auto":
            raise RuntimeError(f"cannot select CUDA device {options.device} for the TensorRT builder: {e}") from e
        return None


def _engine_section(options: BuildOptions, card: ArtifactCard, derived: bool, gpu: dict | None, onnx_path: Path,
                    out_path: Path, plan: Any, facts: dict, seconds: float, calibrator: Any) -> dict[str, Any]:
    return {
        "tensorrt_version": _compat.trt_version(), "gpu": gpu, "strongly_typed": options.legacy is None,
        "legacy": options.legacy, "profile": profile_of(card), "inputs": facts["inputs"],
        "outputs": facts["outputs"],
        "onnx": {"path": str(onnx_path), "sha256": sha256_file(onnx_path), "card": "derived" if derived else "onnx"},
        "engine": {"path": out_path.name, "sha256": hashlib.sha256(memoryview(plan)).hexdigest(),
                   "bytes": memoryview(plan).nbytes, "device_memory_bytes": facts["device_memory_bytes"]},
        "build": {"seconds": round(seconds, 3), "workspace_gib": options.workspace_gib,
                  "opt_level": int(options.opt_level), "device": int(options.device),
                  "timing_cache": options.timing_cache, "calibration_batches": getattr(calibrator, "count", None),
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }


def _build_on_device(trt: Any, ops: Any, onnx_path: Path, out_path: Path, card: ArtifactCard, derived: bool,
                     options: BuildOptions, calib_batches: Iterable[np.ndarray] | None) -> ArtifactCard:
    logger = _compat.get_logger(options.verbose)
    _compat.init_plugins(logger)
    builder = trt.Builder(logger)
    flags = _compat.strongly_typed_flags() if options.legacy is None else 0
    network = parse_network(trt, builder, logger, onnx_path, flags)
    config = configure_builder(trt, builder, card, options)
    cache_path = Path(options.timing_cache) if options.timing_cache else None
    load_timing_cache(config, cache_path)
    calibrator = None
    if options.legacy is not None:
        calibrator = _legacy.prepare_legacy_build(
            trt, builder, config, legacy=options.legacy, input_name=card.input_name, opt_batch=card.batch[1],
            calib_batches=calib_batches, calib_cache=Path(options.calib_cache) if options.calib_cache else None,
            ops=ops)
    plan, seconds = build_plan(builder, network, config, onnx_path)
    facts = inspect_plan(trt, plan, logger)
    gpu = ops.gpu() if ops is not None else None
    section = _engine_section(options, card, derived, gpu, onnx_path, out_path, plan, facts, seconds, calibrator)
    out_card = card.replace(engine=section, precision=options.legacy or card.precision)
    save_engine(out_path, plan, out_card)
    if cache_path is not None:
        save_timing_cache(config, cache_path)
    return out_card


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, options: BuildOptions | None = None,
                 calib_batches: Iterable[np.ndarray] | None = None) -> ArtifactCard:
    """Build a TensorRT plan from ``onnx_path`` into ``out_path`` plus its sidecar ``out_path + '.json'``.

    The sidecar is the ONNX file's card with ``engine`` filled in (TensorRT version, GPU, strongly typed or
    legacy, profile, I/O tensors, ONNX and plan hashes, build settings); a card-less ONNX gets a derived card
    (:func:`.onnx_card.derived_card`, marked ``engine.onnx.card == "derived"``). ``calib_batches`` (N x C x H x W
    float32 arrays) feed ``options.legacy == "int8"``. Returns the card written to the sidecar.
    """
    options = (options or BuildOptions()).validate()
    trt = _compat.require_trt()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist: export one with `srpose export`")
    _legacy.check_legacy_supported(options.legacy)
    calib_cache = Path(options.calib_cache) if options.calib_cache else None
    if options.legacy == "int8" and calib_batches is None and not (calib_cache and calib_cache.exists()):
        raise ValueError("legacy='int8' needs calib_batches (or an existing calib_cache)")
    proto = load_onnx(onnx_path)
    if options.check_onnx:
        raise_for_problems(proto, str(onnx_path))
    card, derived = engine_card(proto, str(onnx_path), options.batch)
    del proto
    ops = _open_device(options)  # before the Builder: TensorRT builds on the thread's current device
    try:
        return _build_on_device(trt, ops, onnx_path, out_path, card, derived, options, calib_batches)
    finally:
        if ops is not None:
            ops.close()
