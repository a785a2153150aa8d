"""TensorRT: build a plan from an ONNX file (with a JSON sidecar) and run it as a :class:`Backend`.

Builds are strongly typed: precision comes from the ONNX graph (``srpose export`` writes FP32, FP16 and Q/DQ INT8
graphs). The weakly typed ``legacy`` path (FP16 flag, INT8 entropy calibration) exists on TensorRT 10.x only.
The plan file is a plain TensorRT plan (trtexec can load it); metadata lives in ``X.engine.json``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from . import _trt_compat as compat
from .base import Backend

if TYPE_CHECKING:  # for the "trt.X" annotations only; code reads compat.require_trt() at call time
    from ._trt_compat import trt

__all__ = ["build_engine", "TensorRTBackend", "read_sidecar", "sidecar_path", "check_legacy_supported",
           "onnx_input_info"]

SIDECAR_FORMAT = "srpose-trt-engine/1"
REBUILD_HINT = "rebuild it on this machine with `srpose build MODEL.onnx --out ENGINE`"


# ----------------------------------------------------------------------------------------- files


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``X.engine`` -> ``X.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_sidecar(engine_path: str | os.PathLike) -> dict | None:
    """The sidecar dict of an engine, or None when there is none."""
    p = sidecar_path(engine_path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"engine sidecar {p} is not valid JSON ({e}): {REBUILD_HINT}") from e


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it only if the block succeeds."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder {parent} does not exist: create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _sha256_bytes(data: Any) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- ONNX facts


def onnx_input_info(onnx_path: str | os.PathLike) -> dict:
    """Input name and shape (ints, or dim_param strings for symbolic dims) and metadata_props of an ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{onnx_path}: expected one image input, found {[i.name for i in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[0].type.tensor_type.shape.dim]
    meta = {p.key: p.value for p in model.metadata_props}
    return {"name": inputs[0].name, "shape": dims, "metadata": meta}


def _batch_range(batch: Sequence[int] | None, meta: dict, onnx_batch: Any, onnx_path: Path) -> tuple[int, int, int]:
    if batch is None:
        keys = ("batch_min", "batch_opt", "batch_max")
        if all(k in meta for k in keys):
            try:
                batch = tuple(int(meta[k]) for k in keys)
            except ValueError as e:
                raise ValueError(f"{onnx_path}: metadata {keys} must be integers, got "
                                 f"{[meta[k] for k in keys]}") from e
        else:
            batch = (onnx_batch,) * 3 if isinstance(onnx_batch, int) and onnx_batch > 0 else (1, 1, 1)
    b = tuple(int(v) for v in batch)
    if len(b) != 3 or not 1 <= b[0] <= b[1] <= b[2]:
        raise ValueError(f"batch range {batch} must be three integers 1 <= min <= opt <= max")
    if isinstance(onnx_batch, int) and onnx_batch > 0 and b != (onnx_batch,) * 3:
        raise ValueError(f"{onnx_path} has a static batch of {onnx_batch}, so batch range {b} is impossible: "
                         "export with a dynamic batch (srpose export --batch MIN,OPT,MAX) or drop --batch")
    return b  # type: ignore[return-value]


def _meta_value(v: Any) -> Any:
    """A metadata_props value (JSON-encoded by ``srpose export``, or a plain string)."""
    try:
        return json.loads(v) if isinstance(v, str) else v
    except json.JSONDecodeError:
        return v


def _chw_range(shape: Sequence[Any], meta: dict, name: str, onnx_path: Path) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) C x H x W of the profile: the static ONNX dims, or for dynamic H and W (bottom-up exports)
    the metadata ``height_min/opt/max`` and ``width_min/opt/max``."""
    if len(shape) != 4 or not (isinstance(shape[1], int) and shape[1] > 0):
        raise ValueError(f"{onnx_path}: input {name!r} has shape {shape}; expected N x C x H x W with a static C")
    static = [isinstance(d, int) and d > 0 for d in shape[2:]]
    if all(static):
        chw = tuple(int(d) for d in shape[1:])
        return chw, chw, chw
    keys = [f"{d}_{k}" for k in ("min", "opt", "max") for d in ("height", "width")]
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ValueError(f"{onnx_path}: input {name!r} has dynamic height/width {shape[2:]} but the metadata lacks "
                         f"{missing} for the optimisation profile: export it with `srpose export` (bottom-up "
                         "models write --shape-profile) or give the input static H and W")
    try:
        vals = {k: int(_meta_value(meta[k])) for k in keys}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{onnx_path}: metadata {keys} must be integers, got {[meta[k] for k in keys]}") from e
    out = []
    for k in ("min", "opt", "max"):
        h, w = vals[f"height_{k}"], vals[f"width_{k}"]
        h = int(shape[2]) if static[0] else h
        w = int(shape[3]) if static[1] else w
        out.append((int(shape[1]), h, w))
    lo, opt, hi = out
    if not all(1 <= a <= b <= c for a, b, c in zip(lo[1:], opt[1:], hi[1:])):
        raise ValueError(f"{onnx_path}: shape profile min {lo[1:]}, opt {opt[1:]}, max {hi[1:]} (H, W) must satisfy "
                         "1 <= min <= opt <= max")
    return lo, opt, hi


def check_legacy_supported(legacy: str | None) -> None:
    """Refuse the weakly typed ``legacy`` path where TensorRT has removed it (11.x) or for an unknown value."""
    if legacy is None:
        return
    if legacy not in ("fp16", "int8"):
        raise ValueError(f"legacy={legacy!r} must be None, 'fp16' or 'int8'")
    if not compat.has_weak_typing():
        raise RuntimeError(
            f"TensorRT {compat.trt_version()} removed weakly typed builds (the FP16/INT8 builder flags and INT8 "
            f"calibrators), so --legacy-{legacy} is unavailable: export the explicit {legacy.upper()} ONNX graph with "
            f"`srpose export --precision {legacy}` and build that file without --legacy-*")


# ----------------------------------------------------------------------------------------- build


def _parse_onnx(trt: Any, network: "trt.INetworkDefinition", logger: "trt.ILogger", onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        lines.append(f"  node {err.node()} '{err.node_name()}' ({err.node_operator()}): {err.desc()}")
    raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}:\n" + "\n".join(lines or ["  (no details)"]))


def _io_tensors(trt: Any, engine: "trt.ICudaEngine") -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of an engine: name, dtype name, shape (-1 for dynamic dims)."""
    ins, outs = [], []
    for i in range(engine.num_io_tensors):
        name = str(engine.get_tensor_name(i))
        d = {"name": name, "dtype": compat.dtype_name(engine.get_tensor_dtype(name)),
             "shape": [int(v) for v in engine.get_tensor_shape(name)]}
        (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(d)
    return ins, outs


def _rebatch_legacy(arrays: Iterable[np.ndarray], n: int | None) -> Iterator[np.ndarray]:
    """Calibration batches of exactly ``n`` samples (``n`` = first batch's size when None); drops the remainder."""
    pending: list[np.ndarray] = []
    have = 0
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float32)
        if n is None:
            n = a.shape[0]
        pending.append(a)
        have += a.shape[0]
        while have >= n:
            cat = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield cat[:n]
            rest = cat[n:]
            pending, have = ([rest] if len(rest) else []), len(rest)


def _make_legacy_calibrator(trt: Any, batches: Iterable[np.ndarray], cache: Path | None, ops: Any) -> Any:
    """An entropy calibrator (TensorRT 10.x only) feeding ``batches`` through one device buffer."""

    class _LegacyEntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the pybind trampoline must be initialised explicitly
            self._it = iter(batches)
            self._buf = None
            self._first = next(self._it, None)
            self.count = 0

        @property
        def sample_shape(self) -> tuple[int, ...] | None:
            return None if self._first is None else tuple(self._first.shape)

        def get_batch_size(self) -> int:  # ignored for explicit-batch networks, must be positive
            return 1 if self._first is None else int(self._first.shape[0])

        def get_batch(self, names: list) -> list | None:
            if self._first is not None:
                a, self._first = self._first, None
            else:
                a = next(self._it, None)
            if a is None:
                return None
            if self._buf is None:
                self._buf = ops.alloc(a.size, np.float32)
            ops.upload(self._buf, a)
            ops.synchronize()
            self.count += 1
            return [self._buf.ptr] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.exists() and cache.stat().st_size:
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                with _atomic(cache) as tmp:
                    tmp.write_bytes(bytes(data))

    return _LegacyEntropyCalibrator()


def _apply_legacy_precision(trt: Any, builder: "trt.Builder", config: "trt.IBuilderConfig",
                            legacy: str, input_name: str, sample_shape: Sequence[int] | None,
                            calibrator: Any) -> None:
    """Weakly typed precision flags (TensorRT 10.x only)."""
    config.set_flag(trt.BuilderFlag.FP16)
    if legacy == "int8":
        # INT8 with FP16 fallback, as Ultralytics does; calibration runs at a fixed shape of its own.
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if sample_shape is not None:
            cal = builder.create_optimization_profile()
            cal.set_shape(input_name, tuple(sample_shape), tuple(sample_shape), tuple(sample_shape))
            config.set_calibration_profile(cal)


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *,
                 batch: tuple[int, int, int] | None = None, workspace_gib: float = 4.0, opt_level: int = 3,
                 timing_cache: str | os.PathLike | None = None, legacy: str | None = None,
                 calib_batches: Iterable[np.ndarray] | None = None, calib_cache: str | os.PathLike | None = None,
                 device: int = 0, verbose: bool = False) -> dict:
    """Build a TensorRT plan from ``onnx_path`` into ``out_path`` (atomically) plus ``out_path + '.json'``.

    ``batch`` is (min, opt, max) of the one optimisation profile (default: ONNX metadata ``batch_min/opt/max``,
    else the ONNX static batch, else 1). ``legacy`` ("fp16" | "int8") selects the weakly typed TensorRT 10.x path;
    INT8 needs ``calib_batches`` (N x C x H x W float32 arrays) and caches scales in ``calib_cache``.
    Returns the sidecar dict.
    """
    trt = compat.require_trt()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist: export one with `srpose export`")
    check_legacy_supported(legacy)
    if legacy == "int8" and calib_batches is None and not (calib_cache and Path(calib_cache).exists()):
        raise ValueError("legacy='int8' needs calib_batches (or an existing calib_cache)")
    if not 0 <= int(opt_level) <= 5:
        raise ValueError(f"opt_level={opt_level} must be between 0 and 5")
    if not workspace_gib > 0:
        raise ValueError(f"workspace_gib={workspace_gib} must be positive")

    info = onnx_input_info(onnx_path)
    meta = info["metadata"]
    name, shape = info["name"], info["shape"]
    chw_min, chw_opt, chw_max = _chw_range(shape, meta, name, onnx_path)
    bmin, bopt, bmax = _batch_range(batch, meta, shape[0], onnx_path)
    gpu = compat.gpu_info(device)

    logger = compat.make_logger(verbose)
    builder = trt.Builder(logger)
    flags = compat.strongly_typed_flags() if legacy is None else 0
    network = builder.create_network(flags)
    _parse_onnx(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.builder_optimization_level = int(opt_level)
    profile = builder.create_optimization_profile()
    profile.set_shape(name, (bmin, *chw_min), (bopt, *chw_opt), (bmax, *chw_max))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.exists() else b""
    cache = config.create_timing_cache(blob) if blob else None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if blob:  # a cache from another GPU or TensorRT version is rejected: start afresh (overwritten below)
            warnings.warn(f"timing cache {cache_path} does not match this GPU/TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    ops = calibrator = None
    try:
        if legacy is not None:
            sample_shape = None
            if legacy == "int8":
                ops = compat.cuda_ops("auto", device)
                calibrator = _make_legacy_calibrator(trt, _rebatch_legacy(calib_batches or (), bopt),
                                                     Path(calib_cache) if calib_cache else None, ops)
                sample_shape = calibrator.sample_shape
                if sample_shape is None and not (calib_cache and Path(calib_cache).exists()):
                    raise ValueError(f"calibration gave fewer than {bopt} images (the profile's opt batch): "
                                     "give more calibration images or a smaller opt batch")
            _apply_legacy_precision(trt, builder, config, legacy, name, sample_shape, calibrator)

        t0 = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - t0
    finally:
        if ops is not None:
            ops.close()
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}: see the TensorRT log above "
                           "(try a larger --workspace, or --verbose)")

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError(f"TensorRT built a plan from {onnx_path} but cannot load it back")
    inputs, outputs = _io_tensors(trt, engine)

    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": compat.trt_version(),
        "gpu": gpu,
        "precision": legacy if legacy else meta.get("precision", "fp32"),
        "legacy": legacy,
        "strongly_typed": legacy is None,
        "profile": {"input": name, "min": [bmin, *chw_min], "opt": [bopt, *chw_opt], "max": [bmax, *chw_max]},
        "inputs": inputs,
        "outputs": outputs,
        "onnx": {"path": str(onnx_path), "sha256": _sha256_file(onnx_path)},
        "engine": {"path": out_path.name, "sha256": _sha256_bytes(plan), "bytes": memoryview(plan).nbytes,
                   "device_memory_bytes": compat.engine_device_memory(engine)},
        "build": {"seconds": round(build_s, 3), "workspace_gib": workspace_gib, "opt_level": int(opt_level),
                  "timing_cache": str(cache_path) if cache_path else None,
                  "calibration_batches": getattr(calibrator, "count", None),
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "onnx_metadata": meta,
    }

    side = sidecar_path(out_path)
    # Plan then sidecar, each atomically; a sidecar that fails to land takes the new plan with it.
    with _atomic(out_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(plan))
    try:
        with _atomic(side) as tmp:
            tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    if cache_path is not None:
        with _atomic(cache_path) as tmp:
            tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return sidecar


# ----------------------------------------------------------------------------------------- run


class TensorRTBackend(Backend):
    """A TensorRT engine behind the :class:`Backend` interface.

    ``memory`` picks the CUDA helper for buffers and streams ("auto": torch CUDA, else cuda-python, else pycuda).
    ``infer`` takes numpy arrays or (with torch memory) torch CUDA tensors. ``last_timing_ms`` is the device time of
    ``execute_async_v3`` (CUDA events); ``last_copy_ms`` the host<->device copies around it.
    """

    name = "tensorrt"
    timing_source = "device"

    def __init__(self, engine_path: str | os.PathLike, *, device: int = 0, cuda_graph: bool = False,
                 memory: str = "auto", verbose: bool = False) -> None:
        super().__init__()
        self.last_copy_ms: float | None = None
        self.last_wall_ms: float | None = None
        self._ops = self._context = self._engine = None
        self._graphs = {}
        trt = compat.require_trt()
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"engine {self.engine_path} does not exist: build one with `srpose build`")
        self.sidecar = read_sidecar(self.engine_path)
        if self.sidecar is None:
            warnings.warn(f"{self.engine_path} has no sidecar {sidecar_path(self.engine_path).name}: cannot check "
                          "that it was built for this TensorRT/GPU, and the export metadata (flip) is unknown")
        else:
            self._check_version()
        self._ops = compat.cuda_ops(memory, device)
        try:
            self._load(trt, cuda_graph, verbose)
        except BaseException:
            self.close()
            raise

    def _load(self, trt: Any, cuda_graph: bool, verbose: bool) -> None:
        if cuda_graph and not self._ops.supports_graphs:
            raise ValueError(f"cuda_graph=True needs memory='torch' or memory='cuda-python', not "
                             f"{self._ops.kind!r}")
        self.cuda_graph = cuda_graph
        self.gpu = self._ops.gpu()
        plan = self.engine_path.read_bytes()
        if self.sidecar is not None:
            self._check_gpu_and_hash(plan)

        self._logger = compat.make_logger(verbose)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {self.engine_path} (see its log above): "
                               f"{REBUILD_HINT}")
        self._context = self._engine.create_execution_context()
        self.device_memory_bytes = compat.engine_device_memory(self._engine)
        self._setup_io(trt)

        meta = (self.sidecar or {}).get("onnx_metadata", {})
        self.meta = {k: _meta_value(v) for k, v in meta.items()}
        self.flip_in_graph = str(meta.get("flip", "")).lower() in ("1", "true")
        kind = self.meta.get("output_kind")
        if isinstance(kind, str) and kind:
            self.output_kind = kind
        self.precision = (self.sidecar or {}).get("precision")
        self._graphs: dict[tuple[int, ...], Any] = {}
        self._shape: tuple[int, ...] | None = None

    # -- checks ----------------------------------------------------------------------------------------------

    def _check_version(self) -> None:
        built = self.sidecar.get("tensorrt_version")
        here = compat.trt_version()
        if built != here:
            raise RuntimeError(f"engine {self.engine_path} was built with TensorRT {built} but this is TensorRT "
                               f"{here}: engines only run on the TensorRT version that built them; {REBUILD_HINT}")

    def _check_gpu_and_hash(self, plan: bytes) -> None:
        built = self.sidecar.get("gpu") or {}
        here = self.gpu
        for key, what in (("compute_capability", "compute capability"), ("name", "GPU")):
            if built.get(key) and here.get(key) and built[key] != here[key]:
                raise RuntimeError(f"engine {self.engine_path} was built for {what} {built[key]} "
                                   f"({built.get('name')}) but this is {here[key]} ({here.get('name')}): "
                                   f"engines are tied to the GPU that built them; {REBUILD_HINT}")
        want = (self.sidecar.get("engine") or {}).get("sha256")
        if want and want != _sha256_bytes(plan):
            raise RuntimeError(f"sidecar {sidecar_path(self.engine_path)} describes another engine (sha256 "
                               f"mismatch): {REBUILD_HINT}")

    # -- I/O -------------------------------------------------------------------------------------------------

    def _setup_io(self, trt: Any) -> None:
        eng, ctx = self._engine, self._context
        inputs, outputs = [], []
        for i in range(eng.num_io_tensors):
            name = str(eng.get_tensor_name(i))
            (inputs if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise ValueError(f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}: expected one "
                             "image input and at least one output")
        self.input_name, self.output_names = inputs[0], outputs
        pmin, popt, pmax = (tuple(int(v) for v in s) for s in eng.get_tensor_profile_shape(self.input_name, 0))
        self.batch_range = (pmin[0], popt[0], pmax[0])
        self.input_shape = tuple(pmax[1:])  # C, H, W (the largest, when H and W are dynamic)
        self.input_shape_min = tuple(pmin[1:])
        self.dynamic_hw = self.input_shape_min != self.input_shape
        self.input_dtype = compat.nptype(eng.get_tensor_dtype(self.input_name))
        ctx.set_input_shape(self.input_name, pmax)
        self._in_buf = self._ops.alloc(int(np.prod(pmax)), self.input_dtype)
        ctx.set_tensor_address(self.input_name, self._in_buf.ptr)
        self._out_bufs = {}
        for name in outputs:
            shape = tuple(int(v) for v in ctx.get_tensor_shape(name))
            buf = self._ops.alloc(int(np.prod(shape)), compat.nptype(eng.get_tensor_dtype(name)))
            self._out_bufs[name] = buf
            ctx.set_tensor_address(name, buf.ptr)
        rank = len(eng.get_tensor_shape(outputs[0]))
        if rank not in (3, 4):
            raise ValueError(f"engine output {outputs[0]!r} has rank {rank}: expected 4 (heatmaps) or 3 (keypoints)")
        self.output_kind = "heatmaps" if rank == 4 else "keypoints"
        self._events = [self._ops.event() for _ in range(4)]

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if not self.dynamic_hw:
            if len(shape) != 4 or shape[1:] != self.input_shape:
                raise ValueError(f"input shape {shape} does not match the engine's N x {self.input_shape}")
            return
        lo, hi = self.input_shape_min, self.input_shape
        if len(shape) != 4 or shape[1] != hi[0] or not all(a <= v <= b for a, v, b in zip(lo[1:], shape[2:], hi[1:])):
            raise ValueError(f"input shape {shape} does not match the engine's N x {hi[0]} x H x W with H in "
                             f"{lo[1]}..{hi[1]} and W in {lo[2]}..{hi[2]}: rebuild from an export whose "
                             "--shape-profile covers it")

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        n = shape[0]
        lo, _, hi = self.batch_range
        if not lo <= n <= hi:
            raise ValueError(f"batch of {n} is outside the engine's profile {lo}..{hi}: rebuild with "
                             f"`srpose build --batch MIN,OPT,MAX` covering it")
        self._context.set_input_shape(self.input_name, shape)
        self._shape = shape

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._ops.stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.engine_path} (see its log above)")

    def _run(self, shape: tuple[int, ...]) -> None:
        if not self.cuda_graph:
            self._execute()
            return
        launch = self._graphs.get(shape)
        if launch is None:
            self._execute()  # one plain run first: TensorRT finishes its shape-dependent setup outside capture
            self._ops.synchronize()
            launch = self._graphs[shape] = self._ops.capture(self._execute)
        launch()

    # -- Backend -----------------------------------------------------------------------------------------------

    def infer(self, images: Any, meta: Any = None) -> Any:
        """Run N x C x H x W inputs (numpy, or a torch CUDA tensor with torch memory); returns the output array, or
        a dict name -> array for engines with several outputs (decoded bottom-up graphs)."""
        if self._context is None:
            raise RuntimeError("TensorRTBackend is closed")
        is_torch = (type(images).__module__.startswith("torch") and getattr(images, "is_cuda", False)
                    and self._ops.kind == "torch")
        if not is_torch:
            images = np.ascontiguousarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images,
                                          dtype=self.input_dtype)
        shape = tuple(int(v) for v in images.shape)
        self._check_shape(shape)
        t0 = time.perf_counter()
        self._set_shape(shape)
        ops, ev = self._ops, self._events
        ops.record(ev[0])
        if is_torch:
            ops.upload_device(self._in_buf, images)
        else:
            ops.upload(self._in_buf, images)
        ops.record(ev[1])
        self._run(shape)
        ops.record(ev[2])
        hosts = {}
        for name in self.output_names:
            out_shape = tuple(int(v) for v in self._context.get_tensor_shape(name))
            hosts[name] = (ops.download(self._out_bufs[name], int(np.prod(out_shape))), out_shape)
        ops.record(ev[3])
        ops.synchronize()
        outs = {name: host.reshape(s).astype(np.float32, copy=True) for name, (host, s) in hosts.items()}
        out = outs[self.output_names[0]] if len(outs) == 1 else outs
        self.last_timing_ms = ops.elapsed_ms(ev[1], ev[2])
        self.last_copy_ms = ops.elapsed_ms(ev[0], ev[1]) + ops.elapsed_ms(ev[2], ev[3])
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        return out

    def close(self) -> None:
        """Free the context, engine and device buffers. Safe to call twice."""
        self._graphs = {}
        self._context = None
        self._engine = None
        if self._ops is not None:
            self._ops.close()
            self._ops = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
