"""Atomic file writing: artifacts appear whole or not at all."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(f"output folder {parent} does not exist: create it first")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"output folder {parent} is not writable: choose another output location")
    tmp_path = _temp_beside(path)
    try:
        yield tmp_path
        if tmp_path.exists():
            _usual_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_beside(path: Path) -> Path:
    """A new empty temporary file in ``path``'s folder, named after it (hidden)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    return Path(tmp)


def _usual_mode(path: Path) -> None:
    """mkstemp creates 0600: give the file the permissions a new file gets (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically: the one JSON writer of results and reports. Strict JSON
    only: a NaN or infinity (which strict parsers reject) is refused, naming where it is, before anything is
    written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError:  # the object is walked again only to say where
        where = first_nonfinite(obj)
        if where is None:
            raise
        raise ValueError(f"not writing {path}: {where} is not a finite number (JSON has no NaN or Infinity)") from None
    return atomic_write_text(path, text + "\n")


def first_nonfinite(obj: Any, where: str = "the value") -> str | None:
    """Where the first NaN or infinity of a JSON-like ``obj`` (dicts, lists, floats, numpy arrays) is, as
    ``key[0].name = nan``; None when every number is finite."""
    import math

    if isinstance(obj, float):
        return None if math.isfinite(obj) else f"{where} = {obj}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = first_nonfinite(v, f"{k}" if where == "the value" else f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = first_nonfinite(v, f"{'' if where == 'the value' else where}[{i}]")
            if found:
                return found
        return None
    if type(obj).__module__ == "numpy":
        import numpy as np

        a = np.asarray(obj)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            i = np.unravel_index(int(np.flatnonzero(~np.isfinite(a))[0]), a.shape) if a.ndim else ()
            return f"{where}{''.join(f'[{j}]' for j in i)} = {a[i]}"
    return None


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def replace_markdown_section(path: str | os.PathLike, heading: str, section: str) -> Path:
    """Replace the section starting at the line ``heading`` (up to the next ``## `` heading) of a Markdown file with
    ``section``, or append it; every other section is kept. Written atomically."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == heading), None)
    if start is None:
        body = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        after = "".join(lines[end:])
        body = "".join(lines[:start]) + section + ("\n" + after if after else "")
    return atomic_write_text(path, body)


def check_out_file(path: str | os.PathLike | None, *, option: str = "output file") -> Path | None:
    """The one check of an output file (``--json``, ``--results``, ``--plot`` ...), before any work: raise unless
    ``path`` can be written (not a folder, its folder exists and is writable); creates nothing. None passes."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: name a file, e.g. {path / ('out' + (path.suffix or '.json'))}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"{option} {path}: its folder {parent} {what}: create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"{option} {path} cannot be written ({parent} is read-only): choose another path")
    return path


def publish_files(files: "dict[Path, Path]") -> list[Path]:
    """Copy each staged file (``{destination: source}``) to its destination, all or none: every copy goes to a
    temporary name beside its destination first, and only when all of them are complete (the disk may fill up) are
    they renamed into place; on failure the temporary copies are removed and nothing is published."""
    import shutil

    temps: list[tuple[Path, Path]] = []
    try:
        for dst, src in files.items():
            dst = Path(dst)
            tmp = _temp_beside(dst)
            temps.append((tmp, dst))
            shutil.copyfile(src, tmp)
            _usual_mode(tmp)
        for tmp, dst in temps:
            os.replace(tmp, dst)
        return [dst for _, dst in temps]
    finally:
        for tmp, _ in temps:
            if tmp.exists():
                tmp.unlink()


def check_out_dir(path: str | os.PathLike, *, option: str = "output folder") -> Path:
    """Raise unless ``path`` is (or can be created as) a writable folder; creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{option} {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{option} {path} is not writable: choose another one")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot create {option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create {option} {path}: {parent} is not writable")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the local server's, the trainer's process group's)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
