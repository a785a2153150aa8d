"""TensorRT layer and profiler: every TensorRT name of engines/tensorrt/ vs the real binding tables (per code
path), the layering of the package, profiler statistics, and (with TensorRT and a GPU) a real build-and-run
against ONNX Runtime. The fake-TensorRT build and run tests live in test_tensorrt_build.py /
test_tensorrt_runtime.py."""
from __future__ import annotations

import ast
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _fake_trt import make_onnx

from srpose.engines import profiler
from srpose.engines import tensorrt as trt_layer
from srpose.engines.base import Backend
from srpose.engines.tensorrt import BuildOptions, _compat, cuda

ROOT = Path(__file__).resolve().parents[1]
TRT_API = ROOT.parent / "shared" / "trt_api"
V10 = ("10.13.3.9", "10.16.1.11")
V11 = ("11.4.0.106",)

# ============================================================================ (1) TensorRT names vs binding tables


@dataclass(frozen=True)
class Use:
    name: str
    scope: str  # "all": every version; "legacy": 10.x only; "probe": at least one version
    where: str


def _is_legacy(stack: list[str]) -> bool:
    return any("legacy" in s.lower() for s in stack)


def _annotation_names(ann: ast.AST | None) -> list[str] | None:
    """Attribute names after ``trt.`` in a string (or expression) annotation; None when it is not a trt type."""
    if ann is None:
        return None
    text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else ast.unparse(ann)
    if "trt." not in text:
        return None
    return [part.split(".", 1)[1].split("]")[0].split("|")[0].strip()
            for part in text.replace(" ", "").split(",") if part.startswith("trt.")] or [text.split("trt.")[1]]


class _Analyzer:
    """Collects every TensorRT name the code touches.

    Tainted (TensorRT-derived) values: the name ``trt``, ``x.trt``, calls of ``require_trt``, parameters annotated
    ``"trt.X"``, and anything assigned from an attribute/call/subscript of a tainted value (per function, flow
    insensitive; ``self.attr`` per module). Wrapping a value in ``str()``/``int()``/``tuple()`` ends the taint.
    Uses: attributes read or written on tainted values, keyword names of calls of tainted callables, constant names
    in ``hasattr``/``getattr`` on tainted values (probes), and public methods of classes deriving from a tainted base.
    """

    def __init__(self, tree: ast.Module, filename: str) -> None:
        self.tree, self.filename = tree, filename
        self.self_taint: set[str] = set()
        self.uses: list[Use] = []

    # -- taint ----------------------------------------------------------------------------------------------
    def tainted(self, e: ast.AST, local: set[str]) -> bool:
        if isinstance(e, ast.Name):
            return e.id == "trt" or e.id in local
        if isinstance(e, ast.Attribute):
            if e.attr == "trt":
                return True
            if isinstance(e.value, ast.Name) and e.value.id == "self":
                return f"self.{e.attr}" in self.self_taint
            return self.tainted(e.value, local)
        if isinstance(e, ast.Call):
            f = e.func
            if (isinstance(f, ast.Name) and f.id == "require_trt") or (
                    isinstance(f, ast.Attribute) and f.attr == "require_trt"):
                return True
            return self.tainted(f, local)
        if isinstance(e, ast.Subscript):
            return self.tainted(e.value, local)
        return False

    def _bind(self, target: ast.AST, value: ast.AST, local: set[str]) -> bool:
        changed = False
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                changed |= self._bind(t, v, local)
            return changed
        if not self.tainted(value, local):
            return False
        for t in ast.walk(target) if isinstance(target, (ast.Tuple, ast.List)) else [target]:
            if isinstance(t, ast.Name) and t.id not in local:
                local.add(t.id)
                changed = True
            elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                key = f"self.{t.attr}"
                if key not in self.self_taint:
                    self.self_taint.add(key)
                    changed = True
        return changed

    def _own_nodes(self, fn: ast.AST):
        """Nodes of ``fn``'s body, not descending into nested functions/classes."""
        todo = list(ast.iter_child_nodes(fn))
        while todo:
            n = todo.pop()
            yield n
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                todo.extend(ast.iter_child_nodes(n))

    def _params(self, fn: ast.AST, stack: list[str]) -> tuple[set[str], set[str]]:
        tainted, plain = set(), set()
        a = fn.args
        for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if p is None:
                continue
            names = _annotation_names(p.annotation)
            if names is None:
                plain.add(p.arg)
            else:
                tainted.add(p.arg)
                for n in names:
                    self.uses.append(Use(n, "legacy" if _is_legacy(stack) else "all", f"{self.filename}:{p.lineno}"))
        return tainted, plain

    def _local_taint(self, fn: ast.AST, inherited: set[str], stack: list[str]) -> set[str]:
        local = set(inherited)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            tainted, plain = self._params(fn, stack) if not isinstance(fn, ast.Lambda) else (set(), set())
            local = (local - plain) | tainted
        changed = True
        while changed:
            changed = False
            for n in self._own_nodes(fn):
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        changed |= self._bind(t, n.value, local)
                elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                    changed |= self._bind(n.target, n.value, local)
                elif isinstance(n, ast.For):
                    changed |= self._bind(n.target, n.iter, local)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                    changed |= self._bind(n.optional_vars, n.context_expr, local)
        return local

    # -- uses -----------------------------------------------------------------------------------------------
    def _collect(self, fn: ast.AST, local: set[str], stack: list[str]) -> None:
        scope = "legacy" if _is_legacy(stack) else "all"
        for n in self._own_nodes(fn):
            where = f"{self.filename}:{getattr(n, 'lineno', '?')}"
            if isinstance(n, ast.Attribute) and self.tainted(n.value, local):
                if not (n.attr.startswith("__") and n.attr != "__version__"):
                    self.uses.append(Use(n.attr, scope, where))
            if isinstance(n, ast.Call):
                if isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr") and len(n.args) >= 2 \
                        and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str) \
                        and self.tainted(n.args[0], local):
                    self.uses.append(Use(n.args[1].value, "probe", where))
                elif isinstance(n.func, ast.Attribute) and self.tainted(n.func, local):
                    for kw in n.keywords:
                        if kw.arg:
                            self.uses.append(Use(kw.arg, scope, where))
            if isinstance(n, ast.ClassDef) and any(self.tainted(b, local) for b in n.bases):
                cscope = "legacy" if _is_legacy(stack + [n.name]) else "all"
                for item in n.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_") and not any(
                            isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                        self.uses.append(Use(item.name, cscope, f"{self.filename}:{item.lineno}"))

    def _walk(self, node: ast.AST, inherited: set[str], stack: list[str], collect: bool) -> None:
        local = self._local_taint(node, inherited, stack)
        if collect:
            self._collect(node, local, stack)
        for n in self._own_nodes(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._walk(n, local, stack + [n.name], collect)

    def run(self) -> list[Use]:
        for _ in range(4):  # self.attr taint flows between methods: iterate to a fixed point
            before = set(self.self_taint)
            self._walk(self.tree, set(), [], collect=False)
            if self.self_taint == before:
                break
        self.uses = []
        self._walk(self.tree, set(), [], collect=True)
        return self.uses


def analyze_source(source: str, filename: str = "<src>") -> list[Use]:
    return _Analyzer(ast.parse(source), filename).run()


def _tables() -> dict[str, set[str]]:
    return {f.stem.split("-", 1)[1]: set(f.read_text().split()) for f in sorted(TRT_API.glob("tensorrt-*.names"))}


def _present(name: str, table: set[str]) -> bool:
    """As ../shared/tools/trt_names.py: listed, or the tail of a listed name (the linker merges string tails)."""
    return name in table or any(s.endswith(name) for s in table)


def violations(uses: list[Use], tables: dict[str, set[str]]) -> list[str]:
    bad = []
    for u in uses:
        if u.scope == "probe":
            versions = list(tables)
            ok = any(_present(u.name, tables[v]) for v in versions)
        else:
            versions = [v for v in tables if u.scope == "all" or v.startswith("10.")]
            ok = all(_present(u.name, tables[v]) for v in versions)
        if not ok:
            missing = [v for v in versions if not _present(u.name, tables[v])]
            bad.append(f"{u.where}: {u.name!r} ({u.scope}) missing in TensorRT {', '.join(missing)}")
    return sorted(set(bad))


needs_tables = pytest.mark.skipif(not TRT_API.is_dir(), reason=f"{TRT_API} (binding name tables) is absent")


@needs_tables
def test_tables_cover_both_major_versions():
    tables = _tables()
    assert set(V10 + V11) <= set(tables), f"expected tables for {V10 + V11}, found {sorted(tables)}"


@needs_tables
def test_every_tensorrt_name_in_engines_exists_in_the_bindings():
    uses = []
    files = sorted((ROOT / "engines").rglob("*.py"))
    assert {f.name for f in files} >= {"_compat.py", "build.py", "legacy.py", "runtime.py", "cuda.py"}
    for f in files:
        uses += analyze_source(f.read_text(), str(f.relative_to(ROOT)))
    names = {u.name for u in uses}
    # Not vacuous: the analyzer must see the whole build and run sequences.
    must = {"Builder", "create_network", "STRONGLY_TYPED", "OnnxParser", "parse_from_file", "num_errors",
            "get_error", "set_memory_pool_limit", "WORKSPACE", "builder_optimization_level",
            "create_optimization_profile", "set_shape", "add_optimization_profile", "create_timing_cache",
            "set_timing_cache", "ignore_mismatch", "get_timing_cache", "serialize", "build_serialized_network",
            "Runtime", "deserialize_cuda_engine", "create_execution_context", "num_io_tensors", "get_tensor_name",
            "get_tensor_mode", "TensorIOMode", "get_tensor_dtype", "get_tensor_profile_shape", "set_input_shape",
            "get_tensor_shape", "set_tensor_address", "execute_async_v3", "device_memory_size_v2", "nptype",
            "__version__", "IInt8EntropyCalibrator2", "get_batch", "write_calibration_cache", "int8_calibrator",
            "set_calibration_profile", "FP16", "INT8", "init_libnvinfer_plugins", "combine", "min_severity",
            "set_tensor_address", "Logger", "VERBOSE", "WARNING"}
    assert must <= names, f"analyzer missed {sorted(must - names)}"
    assert len(names) >= 50, f"only {len(names)} TensorRT names found: {sorted(names)}"
    legacy = {u.name for u in uses if u.scope == "legacy"}
    assert {"IInt8EntropyCalibrator2", "int8_calibrator", "set_calibration_profile"} <= legacy
    assert {"init_libnvinfer_plugins", "combine", "min_severity"} <= {u.name for u in uses if u.scope == "all"}
    assert violations(uses, _tables()) == []


@needs_tables
def test_name_check_flags_removed_and_made_up_names():
    src = '''
from srpose.engines.tensorrt import _compat as compat

def run(context: "trt.IExecutionContext", stream):
    trt = compat.require_trt()
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    context.execute_async_v2(no_such_kwarg=[0], stream_handle=stream)
    cfg = trt.Builder(None).create_builder_config()
    cfg.set_flag(trt.BuilderFlag.FP16)
    a, b = cfg, 3
    a.int8_calibrator = None

def _legacy_fp16(config: "trt.IBuilderConfig"):
    trt = compat.require_trt()
    config.set_flag(trt.BuilderFlag.FP16)
    config.int8_calibrator = None
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "NO_SUCH_FLAG")

class Thing:
    def __init__(self, path):
        self._engine = compat.trt.Runtime(None).deserialize_cuda_engine(b"")
        self.path = path
    def go(self):
        self.path.exists()  # plain objects are not checked
        return self._engine.get_binding_index("x")
'''
    bad = "\n".join(violations(analyze_source(src), _tables()))
    for flagged in ("'EXPLICIT_BATCH' (all)", "'execute_async_v2' (all)", "'no_such_kwarg' (all)", "'FP16' (all)",
                    "'int8_calibrator' (all)", "'get_binding_index' (all)", "'NO_SUCH_FLAG' (probe)"):
        assert flagged in bad, f"{flagged} not flagged in:\n{bad}"
    assert "(legacy)" not in bad  # FP16 / int8_calibrator exist in 10.x
    assert "exists" not in bad and "'stream_handle'" not in bad and "IExecutionContext" not in bad


# ============================================================================ (2) layering


def _imports(path: Path) -> list[str]:
    mods = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            mods += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and not n.level:
            mods.append(n.module or "")
    return mods


def test_engines_modules_stay_below_srpose_export_eval():
    """engines/ needs only ONNX/engine files and arrays: of srpose it imports the card and atomic I/O (stdlib-only),
    never models, export or eval, and never torch (the torch CUDA helper uses the caller's imported torch)."""
    allowed = ("srpose.card", "srpose._io", "srpose.engines")
    for f in sorted((ROOT / "engines").rglob("*.py")):
        for m in _imports(f):
            top = m.split(".")[0]
            assert top not in ("export", "eval", "engines"), f"{f.relative_to(ROOT)} imports {m}"
            if top == "srpose":
                assert m.startswith(allowed), f"{f.relative_to(ROOT)} imports {m}"
            assert top != "torch", f"{f.relative_to(ROOT)} imports torch"


def test_tensorrt_package_size_limits():
    """No module over 400 lines, no function over 80 (issue: engines/tensorrt structure)."""
    for f in sorted((ROOT / "engines" / "tensorrt").glob("*.py")):
        lines = f.read_text().splitlines()
        assert len(lines) <= 400, f"{f.name}: {len(lines)} lines"
        for n in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = n.end_lineno - n.lineno + 1
                assert length <= 80, f"{f.name}:{n.lineno} {n.name} has {length} lines"


def test_old_module_names_are_gone():
    assert not (ROOT / "engines" / "tensorrt.py").exists() and not (ROOT / "engines" / "_trt_compat.py").exists()
    assert not (ROOT / "engines" / "commands.py").exists()
    for name in ("TensorRTBackend", "BuildOptions", "build_engine", "tensorrt_status", "require_trt",
                 "check_onnx_for_tensorrt", "check_legacy_supported"):
        assert hasattr(trt_layer, name), name


# ============================================================================ (3) profiler


class TimedFake(Backend):
    """Known device timings (cycled) and a fake clock advancing by a known wall time per call."""

    name = "fake"
    timing_source = "device"
    precision = "fp32"

    def __init__(self, device_ms, wall_ms, clock):
        super().__init__()
        self.device_ms, self.wall_ms, self.clock = device_ms, wall_ms, clock
        self.calls = 0
        self.seen: list[float] = []
        self.inputs: list[int] = []

    def infer(self, images, meta=None):
        assert images.dtype == np.float32 and not np.any(images == 0)
        self.inputs.append(id(images))
        self.clock.t += self.wall_ms[self.calls % len(self.wall_ms)] / 1e3
        self.last_timing_ms = self.device_ms[self.calls % len(self.device_ms)]
        self.last_copy_ms = 0.5
        self.seen.append(self.last_timing_ms)
        self.calls += 1
        return np.zeros((images.shape[0], 2, 4, 3), np.float32)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_profile_statistics_on_known_timings():
    clock = FakeClock()
    dev = [1.0, 2.0, 3.0, 4.0, 10.0]
    be = TimedFake(dev, [5.0], clock)
    rows = profiler.profile(be, (3, 8, 6), [1, 4], warmup_s=0.012, duration_s=0.1, progress=False, clock=clock)
    assert [r["batch"] for r in rows] == [1, 4]
    r = rows[0]
    assert r["warmup_iterations"] == 3  # 3 x 5 ms >= 12 ms
    assert r["iterations"] == 20  # 20 x 5 ms = 100 ms
    timed = be.seen[3:23]
    ref = profiler.summarize(timed)
    assert r["latency_source"] == "device"
    for k in ("mean", "median", "p90", "p95", "p99", "min", "max"):
        assert r[f"{k}_ms"] == pytest.approx(ref[k])
    assert r["min_ms"] == 1.0 and r["max_ms"] == 10.0 and r["mean_ms"] == pytest.approx(4.0)
    assert r["p99_ms"] == pytest.approx(np.percentile(timed, 99))
    assert r["wall_mean_ms"] == pytest.approx(5.0) and r["wall_p99_ms"] == pytest.approx(5.0)
    assert r["throughput_ips"] == pytest.approx(1000 / 4.0)
    assert r["wall_throughput_ips"] == pytest.approx(1000 / 5.0)
    assert r["copy_mean_ms"] == 0.5
    assert rows[1]["throughput_ips"] == pytest.approx(4 * 1000 / rows[1]["mean_ms"])
    assert len(set(be.inputs[:4])) == 4  # rotating input buffers
    assert profiler.summarize([2.0])["p99"] == 2.0
    with pytest.raises(ValueError, match="input_shape"):
        profiler.profile(be, (8, 6), [1], progress=False)


def test_profile_uses_wall_time_when_no_device_timing():
    clock = FakeClock()
    be = TimedFake([1.0], [2.0, 4.0], clock)
    be.timing_source = "wall"
    (r,) = profiler.profile(be, (3, 8, 6), [2], warmup_s=0.0, duration_s=0.03, min_iterations=10, progress=False,
                            clock=clock)
    assert r["latency_source"] == "wall" and r["iterations"] == 10
    assert r["mean_ms"] == pytest.approx(3.0)
    assert r["min_ms"] == pytest.approx(2.0) and r["max_ms"] == pytest.approx(4.0)
    e2e = []
    (r,) = profiler.profile(be, (3, 8, 6), [1], warmup_s=0.0, duration_s=0.01, min_iterations=3, progress=False,
                            clock=clock, end_to_end=lambda x: (e2e.append(1), be.infer(x)),
                            make_input=lambda shape, rng: np.full(shape, 7, np.float32))
    assert r["end_to_end"] and len(e2e) == r["iterations"] + r["warmup_iterations"]


class OrtBackend(Backend):
    """A minimal ONNX Runtime CPU backend for the profiler test."""

    name = "onnxruntime"

    def __init__(self, path):
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.sess.get_inputs()[0].name

    def infer(self, images, meta=None):
        t0 = time.perf_counter()
        out = self.sess.run(None, {self.input_name: images})[0]
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        return out


def test_profile_onnxruntime_table_and_plot(tmp_path, capsys):
    be = OrtBackend(make_onnx(tmp_path / "tiny.onnx"))
    rows = profiler.profile(be, (3, 16, 12), [1, 2, 4], warmup_s=0.02, duration_s=0.1)
    assert "[profile] onnxruntime batch 4" in capsys.readouterr().err
    for r in rows:
        assert r["latency_source"] == "wall" and r["iterations"] >= 10 and r["copy_mean_ms"] is None
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["throughput_ips"] > 0
    rows2 = [dict(r, backend="tensorrt", precision="fp16", mean_ms=r["mean_ms"] / 2) for r in rows]
    table = profiler.format_table(rows + rows2)
    lines = table.splitlines()
    assert len(lines) == 2 + 6 and "p99" in lines[0] and "img/s" in lines[0]
    assert "tensorrt" in lines[-1] and "fp16" in lines[-1]
    png = profiler.plot_profile(rows + rows2, tmp_path / "plots" / "profile.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    json.dumps(rows)  # rows are JSON-serialisable


# ============================================================================ (4) real TensorRT (GPU only)


def _real_trt_or_skip():
    if _compat.trt is None:
        pytest.skip(f"tensorrt does not import here: {_compat.TRT_IMPORT_ERROR}")
    if cuda.gpu_info() is None:
        pytest.skip("no CUDA GPU (or no torch CUDA / cuda-python / pycuda) for TensorRT")


@pytest.mark.tensorrt
def test_real_tensorrt_matches_onnxruntime(tmp_path):
    _real_trt_or_skip()
    from _fake_trt import tiny_card

    onnx_path = make_onnx(tmp_path / "tiny.onnx", card=tiny_card(flip=False, precision="fp32"))
    card = trt_layer.build_engine(onnx_path, tmp_path / "tiny.engine",
                                  BuildOptions(workspace_gib=0.25, opt_level=1, timing_cache=str(tmp_path / "t.tc")))
    assert card.engine["tensorrt_version"] == _compat.trt_version() and (tmp_path / "t.tc").exists()
    ort_be = OrtBackend(onnx_path)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 12)).astype(np.float32)
    for memory, graph in (("auto", False), ("auto", True)):
        with trt_layer.TensorRTBackend(tmp_path / "tiny.engine", memory=memory, cuda_graph=graph) as be:
            assert be.output_kind == "heatmaps" and not be.flip_in_graph
            for n in (3, 1, 1, 3, 3):  # shape changes between graph replays
                np.testing.assert_allclose(be.infer(x[:n])["heatmaps"], ort_be.infer(x[:n]), rtol=1e-3, atol=1e-3)
            assert be.last_timing_ms is not None and be.last_timing_ms > 0 and be.last_copy_ms is not None
            rows = profiler.profile(be, (3, 16, 12), [1, 4], warmup_s=0.05, duration_s=0.2, progress=False)
            assert all(r["latency_source"] == "device" for r in rows)
