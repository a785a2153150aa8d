"""Which srpose modules an import statement reaches: shared by the vendoring of served code
(:mod:`srpose.serve.vendor`) and the layering test, so both follow imports the same way, lazy names included."""
from __future__ import annotations

import ast
import importlib
from typing import Callable

__all__ = ["lazy_exports", "import_targets"]


def lazy_exports(package: str) -> dict[str, str]:
    """``_EXPORTS`` (name -> defining module) of a package whose public names load on first use (PEP 562,
    :func:`srpose._lazy.lazy_getattr`); empty for any other module."""
    return dict(getattr(importlib.import_module(package), "_EXPORTS", {}))


def import_targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
                   is_module: Callable[[str], bool]) -> list[str]:
    """The modules an import statement of ``module`` reaches: ``import X`` -> X; ``from X import y`` -> ``X.y``
    when that is a module, the module defining ``y`` when ``y`` is a lazy name of package X, else X.
    ``is_module(name)``: whether ``name`` is a module of the tree being followed."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        parts = module.split(".")
        base = parts[: len(parts) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if is_module(sub):
            out.append(sub)
        elif is_module(target) and alias.name in (lazy := lazy_exports(target)):
            out.append(lazy[alias.name])
        else:
            out.append(target)
    return out
