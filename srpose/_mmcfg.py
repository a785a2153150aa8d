"""Reads mmpose 0.x ``.py`` config files without importing mmcv or executing them.

The configs are plain Python assignments of dicts, lists, literals, f-strings and references to earlier names.
They are evaluated with a small AST interpreter that allows exactly those constructs; ``_base_`` files are merged
the way mmcv does it (child keys override base keys recursively, ``_delete_=True`` replaces), and mmcv's
``{{_base_.xxx}}`` placeholders (e.g. ``dataset_info={{_base_.dataset_info}}`` in mmpose 0.x's MPII and CrowdPose
configs) take the value of ``xxx`` in the merged base files.
"""
from __future__ import annotations

import ast
import copy
import operator
from pathlib import Path
from typing import Any

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CALLS = {"dict": dict, "list": list, "tuple": tuple, "int": int, "float": float, "str": str, "len": len,
          "range": range, "min": min, "max": max, "sum": sum, "round": round}


class ConfigError(ValueError):
    """An mmpose config file could not be read."""


_NOT_BASE = object()


class _Evaluator:
    def __init__(self, path: Path, env: dict[str, Any]):
        self.path = path
        self.env = env
        self.base: dict[str, Any] | None = None  # the merged _base_ files, once ``_base_`` is assigned

    def base_reference(self, node: ast.AST) -> Any:
        """The value of mmcv's ``{{_base_.a.b}}`` placeholder (a set of a set of ``_base_.a.b`` to Python), or
        the sentinel ``_NOT_BASE`` when ``node`` is another set."""
        if not (isinstance(node, ast.Set) and len(node.elts) == 1 and isinstance(node.elts[0], ast.Set)
                and len(node.elts[0].elts) == 1):
            return _NOT_BASE
        keys, inner = [], node.elts[0].elts[0]
        while isinstance(inner, ast.Attribute):
            keys.insert(0, inner.attr)
            inner = inner.value
        if not (isinstance(inner, ast.Name) and inner.id == "_base_" and keys):
            return _NOT_BASE
        ref = "{{_base_." + ".".join(keys) + "}}"
        if self.base is None:
            raise ConfigError(f"{self.path}:{node.lineno}: {ref} is used before `_base_` names the base files")
        value: Any = self.base
        for i, k in enumerate(keys):
            if not isinstance(value, dict) or k not in value:
                raise ConfigError(f"{self.path}:{node.lineno}: {ref}: the base files have no "
                                  f"`{'.'.join(keys[:i + 1])}`")
            value = value[k]
        return copy.deepcopy(value)

    def fail(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(f"{self.path}:{getattr(node, 'lineno', '?')}: {what} is not supported in a config file "
                           "(only literals, dict/list/tuple, f-strings, arithmetic and earlier names are)")

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            raise ConfigError(f"{self.path}:{node.lineno}: name {node.id!r} is used before it is assigned")
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(self.eval(v))
                else:
                    out[self.eval(k)] = self.eval(v)
            return out
        if isinstance(node, ast.List):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.eval(e) for e in node.elts)
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    parts.append(format(self.eval(v.value), self.eval(v.format_spec) if v.format_spec else ""))
                else:
                    parts.append(self.eval(v))
            return "".join(str(p) for p in parts)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            v = self.eval(node.operand)
            return -v if isinstance(node.op, ast.USub) else (+v if isinstance(node.op, ast.UAdd) else not v)
        if isinstance(node, ast.Subscript):
            return self.eval(node.value)[self.eval(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(self.eval(x) if x is not None else None for x in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            args = [self.eval(a) for a in node.args]
            kwargs = {k.arg: self.eval(k.value) for k in node.keywords}
            return _CALLS[node.func.id](*args, **kwargs)
        if isinstance(node, ast.Set):  # mmcv's {{_base_.xxx}}: the value of xxx in the base files
            value = self.base_reference(node)
            if value is not _NOT_BASE:
                return value
        if isinstance(node, ast.ListComp) or isinstance(node, ast.Lambda):
            raise self.fail(node, type(node).__name__)
        raise self.fail(node, type(node).__name__)


def _merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_delete_", False):
            out[k] = _merge(out[k], v)
        else:
            v = copy.deepcopy(v)
            if isinstance(v, dict):
                v.pop("_delete_", None)
            out[k] = v
    return out


def read_mmpose_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Return the top-level names of an mmpose-style config file as a dict (``_base_`` files merged)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: circular _base_ reference")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from None
    env: dict[str, Any] = {}
    ev = _Evaluator(path, env)
    base: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            raise ConfigError(f"{path}:{stmt.lineno}: imports are not supported in a config file")
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            raise ev.fail(stmt, type(stmt).__name__)
        target = stmt.targets[0]
        value = ev.eval(stmt.value)
        if isinstance(target, ast.Name):
            if target.id == "_base_":
                bases = [value] if isinstance(value, str) else list(value)
                for b in bases:
                    base = _merge(base, read_mmpose_config(path.parent / b, _seen + (path.resolve(),)))
                env.update(copy.deepcopy(base))
                ev.base = base
                continue
            env[target.id] = value
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            env[target.value.id][ev.eval(target.slice)] = value
        else:
            raise ev.fail(stmt, "this assignment target")
    return _merge(base, env)
