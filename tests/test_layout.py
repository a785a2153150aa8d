"""The shape of the code, as rules: one installed namespace, a torch-free runtime, one-way layers, no import cycles
(imports inside functions included), files and functions of readable size."""
from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from srpose._imports import import_targets

REPO = Path(__file__).resolve().parents[1]
#: installed package -> repository folder (setup.cfg package_dir)
ROOTS = {"srpose.export": REPO / "export", "srpose.engines": REPO / "engines", "srpose.eval": REPO / "eval",
         "srpose": REPO / "srpose"}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
#: a comment starting with this, right above a def (or in a file's first 5 lines), says why it may be longer
SIZE_WAIVER = "# size:"


def _modules() -> dict[str, Path]:
    """Every module of the installed namespace -> its file."""
    out: dict[str, Path] = {}
    for pkg, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            if pkg == "srpose" and "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Fully qualified modules an import statement of ``module`` reaches (lazy names to their defining module)."""
    return import_targets(module, _is_package(module), node, MODULES.__contains__)


def _imports() -> dict[str, set[str]]:
    """module -> every module it imports at run time (module level and inside functions; not TYPE_CHECKING)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                graph[name].update(_resolve(name, node))
    return graph


GRAPH = _imports()


def _layer(module: str) -> str:
    for pkg in ("srpose.export", "srpose.engines", "srpose.eval", "srpose.cli", "srpose.serve"):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return "srpose" if module == "srpose" or module.startswith("srpose.") else "external"


# ------------------------------------------------------------------------------------------------ namespace
def test_setup_cfg_installs_every_package_under_one_namespace() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    packages = {m for m in MODULES if _is_package(m)}
    assert listed == packages, f"setup.cfg packages differ: missing {packages - listed}, extra {listed - packages}"
    assert all(p == "srpose" or p.startswith("srpose.") for p in listed)
    mapping = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    assert {k.strip(): (REPO / v.strip()).resolve() for k, v in mapping.items()} == \
        {k: v.resolve() for k, v in ROOTS.items()}


def test_no_generic_top_level_imports() -> None:
    bad = {m: sorted(t for t in targets if t.split(".")[0] in ("export", "engines", "eval"))
           for m, targets in GRAPH.items()}
    assert not {m: t for m, t in bad.items() if t}, "import srpose.export / srpose.engines / srpose.eval instead"


def test_cli_runs_from_a_folder_that_shadows_generic_names(tmp_path: Path) -> None:
    for name in ("eval.py", "export.py", "engines.py"):
        (tmp_path / name).write_text("raise SystemExit('a user file was imported instead of srpose')\n")
    run = subprocess.run([sys.executable, "-m", "srpose.cli", "list", "res50"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "res50_srpose_coco_256x192" in run.stdout
    run = subprocess.run([sys.executable, "-c", "import srpose.eval.metrics, srpose.export, srpose.engines"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_runtime_imports_and_runs_a_graph_without_torch(tmp_path: Path) -> None:
    """The runtime layer (ONNX Runtime and TensorRT backends, profiler, card, codecs' numpy decoding) in a process
    where importing torch fails."""
    code = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np, onnx
        from onnx import TensorProto, helper
        import srpose.engines.tensorrt, srpose.engines.profiler
        from srpose.engines import open_backend
        from srpose.codecs import codec_from_dict, MSRAHeatmap
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
        y = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", 3, 8, 8])
        g = helper.make_graph([helper.make_node("Relu", ["input"], ["heatmaps"])], "g", [x], [y])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), r"{tmp_path / 'g.onnx'}")
        be = open_backend(r"{tmp_path / 'g.onnx'}")
        out = be.infer(np.ones((2, 3, 8, 8), np.float32))
        assert set(out) == {{"heatmaps"}} and out["heatmaps"].shape == (2, 3, 8, 8)
        codec = codec_from_dict(MSRAHeatmap(num_joints=3, heatmap_size=(8, 8)).to_dict())
        assert codec.decode(out["heatmaps"]).shape == (2, 3, 3)
        srpose.engines.profiler.profile(be, (3, 8, 8), [1], warmup_s=0, duration_s=0.01, progress=False)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# ------------------------------------------------------------------------------------------------ layers
#: srpose core modules the serving layer must not use (model code, training, checkpoints: torch)
SERVE_NEVER = ("srpose.models", "srpose.train", "srpose.checkpoint", "srpose.export", "srpose.eval", "srpose.cli")


def test_layers_are_one_way() -> None:
    """srpose core imports none of export/engines/eval/cli/serve; engines imports neither torch nor srpose's model
    code (nor serve); serve (above core and runtime: it deploys core pieces with the runtime's ONNX Runtime backend
    into Triton python-backend models) never imports torch, model code, export, eval or the CLI; export never imports
    eval or the CLI; only the CLI imports the CLI."""
    engines_may_use = {"srpose", "srpose.card", "srpose._io"}
    problems = []
    for module, targets in GRAPH.items():
        layer = _layer(module)
        for t in targets:
            tl = _layer(t)
            if layer == "srpose" and tl in ("srpose.export", "srpose.engines", "srpose.eval", "srpose.cli",
                                            "srpose.serve"):
                problems.append(f"core {module} imports {t}")
            if layer == "srpose.engines" and (t.split(".")[0] == "torch" or
                                              (tl == "srpose" and t not in engines_may_use) or
                                              tl in ("srpose.export", "srpose.eval", "srpose.cli", "srpose.serve")):
                problems.append(f"runtime {module} imports {t}")
            if layer == "srpose.serve" and (t.split(".")[0] == "torch" or
                                            any(t == n or t.startswith(n + ".") for n in SERVE_NEVER)):
                problems.append(f"serving {module} imports {t}")
            if layer == "srpose.export" and tl in ("srpose.eval", "srpose.cli"):
                problems.append(f"export {module} imports {t}")
            if layer != "srpose.cli" and tl == "srpose.cli":
                problems.append(f"{module} imports the CLI ({t})")
    assert not problems, "\n".join(problems)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the import graph (function-level imports count)."""
    graph = {m: {t for t in ts if t in MODULES and t != m} for m, ts in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(MODULES):
        if m not in index:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# ------------------------------------------------------------------------------------------------ sizes
def _code_files() -> list[Path]:
    return sorted(MODULES.values()) + sorted((REPO / "scripts").glob("*.py"))


def _waived(lines: list[str], lineno: int) -> bool:
    """A ``# size: why`` comment on the lines right above line ``lineno`` (1-based), decorators included."""
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("@"):
        i -= 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith(SIZE_WAIVER):
            return True
        i -= 1
    return False


@pytest.mark.parametrize("path", _code_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_file_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines()
    if len(lines) > MAX_FILE_LINES:
        assert any(line.startswith(SIZE_WAIVER) for line in lines[:5]), \
            f"{len(lines)} lines > {MAX_FILE_LINES}: split it by responsibility, or say why in a '{SIZE_WAIVER}' line"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and not _waived(lines, node.lineno):
                long.append(f"{node.name} ({n} lines, line {node.lineno})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_size_rule_would_flag_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    src = f"def f():\n{body}\n"
    node = ast.parse(src).body[0]
    assert node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    assert not _waived(src.splitlines(), node.lineno)
    assert _waived(f"{SIZE_WAIVER} a table\n{src}".splitlines(), node.lineno + 1)


def test_the_decode_reference_is_test_only() -> None:
    assert not (REPO / "srpose" / "_decode_ref.py").exists() and (REPO / "tests" / "_decode_ref.py").exists()
    assert not any("_decode_ref" in t for ts in GRAPH.values() for t in ts)


def test_graph_sees_function_level_imports() -> None:
    """The scan is not fooled by imports inside functions (a cycle hidden there would count)."""
    assert "srpose.engines.onnxruntime" in GRAPH["srpose.engines"]  # imported inside open_backend
    assert os.path.basename(MODULES["srpose.engines"]) == "__init__.py"
