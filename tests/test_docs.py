"""The README and docs/ name only what exists: repository files, importable `srpose` names, `make` targets, and
`srpose` subcommands with options their parser accepts. A rename or a removed module cannot leave them behind."""
from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from srpose.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_PATH = re.compile(r"`((?:srpose|export|engines|eval|scripts|tests|docs)/[\w/.\-]*\.(?:py|md|json))`")
_NAME = re.compile(r"`((?:srpose|eval|export|engines)\.[a-z_][\w.]*[\w])`")
_MAKE = re.compile(r"`make ([\w-]+)`")
_CLI = re.compile(r"`srpose (\w[\w-]*)((?:[^`|])*)`")
_OPT = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(REPO).as_posix() for p in paths]


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` (``srpose.x.y`` or, as the repository folders read, ``eval.x``) is a module or a name
    in one."""
    parts = dotted.split(".")
    if parts[0] != "srpose":
        parts = ["srpose", *parts]
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_docs_name_existing_files_and_modules(doc: Path) -> None:
    text = doc.read_text()
    missing = [p for p in sorted(set(_PATH.findall(text))) if not (REPO / p).exists()]
    unknown = [n for n in sorted(set(_NAME.findall(text))) if not _resolves(n)]
    assert not missing and not unknown, f"{doc.name}: no such file {missing}; no such module or name {unknown}"


def test_readme_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = set(_MAKE.findall((REPO / "README.md").read_text()))
    assert named and named <= targets, f"README names make targets the Makefile lacks: {sorted(named - targets)}"


def _options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return {o for a in sub.choices[command]._actions for o in a.option_strings}  # noqa: SLF001


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_documented_commands_and_options_exist(doc: Path) -> None:
    """Every `srpose CMD ... --opt` in backticks (and in fenced shell blocks) is a subcommand whose parser takes
    --opt."""
    text = doc.read_text()
    uses = [(m.group(1), m.group(2)) for m in _CLI.finditer(text)]
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        uses += [(m.group(1), m.group(2)) for m in re.finditer(r"^\s*srpose (\w[\w-]*)(.*)$", block, re.M)]
    if not uses:
        pytest.skip(f"{doc.name} names no srpose command")
    parser = build_parser()
    bad = []
    for command, rest in uses:
        if command not in COMMANDS:
            bad.append(f"srpose {command}")
            continue
        known = _options(parser, command)
        bad += [f"srpose {command} {o}" for o in _OPT.findall(rest.split("#")[0]) if o not in known]
    assert not bad, f"{doc.name} documents what the CLI does not take: {sorted(set(bad))}"
