"""The srpose code a python-backend model runs, copied into its model folder when the repository is written.

A Triton server runs the python-backend models in its own Python (the container's, or the one ``srpose serve
--python`` names), which has numpy and OpenCV but neither torch nor, usually, srpose. ``srpose triton`` therefore
deploys the code like a wheel would: each python-backend model folder gets ``srpose/`` holding the modules its
model class reaches (imports at module level and inside functions, followed through srpose), copied from the
installed package; modules that import torch at module level are left out (their functions serve the torch paths,
which the server never takes) and listed in ``srpose/_vendored.json``. Nothing is duplicated in the source tree:
the copy is made from it at write time, so the server runs the evaluator's code of that very version.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Iterable

from srpose._imports import import_targets

__all__ = ["module_closure", "vendor_modules", "VENDOR_MANIFEST"]

VENDOR_MANIFEST = "_vendored.json"
_ROOT = "srpose"


def _spec_origin(name: str) -> tuple[Path, bool] | None:
    """(file, is_package) of module ``name`` in the installed srpose, None when ``name`` is not a module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _is_srpose_module(name: str) -> bool:
    return name.startswith(_ROOT + ".") and _spec_origin(name) is not None


def _imports(module: str, path: Path, is_pkg: bool) -> tuple[set[str], set[str]]:
    """(every module ``module`` imports, the ones it imports at module level), TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    every: set[str] = set()
    top: set[str] = set()

    def visit(node: ast.AST, at_top: bool) -> None:
        if _type_checking(node):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = import_targets(module, is_pkg, node, _is_srpose_module)
            every.update(names)
            if at_top:
                top.update(names)
        inner = at_top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return every, top


def module_closure(roots: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """({module: file} of every srpose module the ``roots`` reach, parents included; [modules left out because
    they import torch at module level]).

    A module that is imported is followed through all its imports (module level and inside functions); a package
    reached only as the parent of such a module is followed through its module-level imports alone (what runs when
    Python imports it), so e.g. ``srpose.engines.open_backend``'s lazy TensorRT import stays out.
    """
    roots = list(roots)
    keep: dict[str, Path] = {}
    full: set[str] = set()
    skipped: set[str] = set()
    stack = [(r, True) for r in roots]
    while stack:
        name, follow_all = stack.pop()
        if name in skipped or (name in keep and (name in full or not follow_all)):
            continue
        if not (name == _ROOT or name.startswith(_ROOT + ".")):
            continue
        found = _spec_origin(name)
        if found is None:
            continue
        path, is_pkg = found
        every, top = _imports(name, path, is_pkg)
        if any(t == "torch" or t.startswith("torch.") for t in top):
            if name in roots:
                raise ValueError(f"{name} imports torch at module level: a server's Python runs without torch")
            skipped.add(name)
            continue
        keep[name] = path
        if follow_all:
            full.add(name)
        parts = name.split(".")
        stack.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        stack.extend((t, True) for t in sorted(every if follow_all else top))
    return dict(sorted(keep.items())), sorted(skipped)


def _dest_of(name: str, path: Path, dest: Path) -> Path:
    parts = name.split(".")
    if path.name == "__init__.py":
        return dest.joinpath(*parts, "__init__.py")
    return dest.joinpath(*parts[:-1], parts[-1] + ".py")


def vendor_modules(roots: Iterable[str], dest: Path) -> dict[str, object]:
    """Copy the closure of ``roots`` under ``dest`` (as ``dest/srpose/...``) and write its manifest; returns the
    manifest (srpose version, roots, modules with sha256, modules left out)."""
    from srpose import __version__

    roots = list(roots)
    modules, skipped = module_closure(roots)
    files = {}
    for name, path in modules.items():
        target = _dest_of(name, path, Path(dest))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"srpose_version": __version__, "roots": roots, "modules": files, "left_out_torch": skipped}
    (Path(dest) / _ROOT / VENDOR_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
