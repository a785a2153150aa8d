"""``srpose serve``: a local Triton Inference Server on 127.0.0.1 for trying a repository out (and for the tests).

``ServeOptions -> start_server(options) -> TritonServer`` (a context manager: ``http_url``, ``grpc_url``,
``stop()``, the log). The binary is ``options.tritonserver``, else ``$SRPOSE_TRITONSERVER``, else ``tritonserver``
on PATH (NVIDIA's container), else the one bundled in the ``nvidia-pytriton`` wheel of the server's Python or of
this one. The server's Python (``options.python``, else ``$SRPOSE_TRITON_PYTHON``, else this interpreter) runs the
python-backend models; with the bundled binary this module lays out the python backend as PyTriton does:

- the backend's stub must be built for that Python's version: the wheel ships one per version
  (``python_backend_stubs/3.X``), linked into a backend folder of this server's own;
- the stub links ``libpython3.X.so``: that Python's ``LIBDIR`` goes first on ``LD_LIBRARY_PATH`` (with the
  wheel's ``nvidia_pytriton.libs``);
- the stub embeds Python in isolated mode (``PYTHONPATH`` is ignored) and finds its ``sys.prefix`` by looking up
  ``python3`` on PATH, so that Python's ``bin/`` goes first on PATH: a virtual environment is then found through its
  ``pyvenv.cfg``, and the models import its packages.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._ports import check_ports, free_port

__all__ = ["ServeOptions", "ServerInstall", "TritonServer", "find_tritonserver", "start_server", "probe_python",
           "repository_backends", "check_backends"]

_PROBE = r"""
import importlib.util, json, os, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
mods = {m: importlib.util.find_spec(m) is not None for m in ("numpy", "cv2", "onnxruntime")}
print(json.dumps({"executable": sys.executable, "version": "%d.%d" % sys.version_info[:2],
    "libdir": sysconfig.get_config_var("LIBDIR"), "soname": sysconfig.get_config_var("INSTSONAME"),
    "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")), "prefix": sys.prefix,
    "pytriton": list(spec.submodule_search_locations)[0] if spec else None, "modules": mods}))
"""


@dataclass
class ServeOptions:
    """``repos``: model repositories; ports (0 picks a free one); ``python``: the server's Python; ``tritonserver``:
    the binary; ``log_file``: where the server's log goes (default: a temporary file); ``ready_timeout_s``: how
    long to wait for every model to load."""

    repos: Sequence[str | Path]
    http_port: int = 8000
    grpc_port: int = 8001
    python: str | None = None
    tritonserver: str | None = None
    log_file: str | Path | None = None
    ready_timeout_s: float = 180.0
    exit_timeout_s: int = 10
    verbose: int = 0
    extra_args: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.repos:
            raise ValueError("name at least one model repository")
        for r in self.repos:
            if not Path(r).is_dir():
                raise FileNotFoundError(f"model repository {r} is not a folder: write one with `srpose triton`")
            if not any(Path(r).glob("*/config.pbtxt")):
                raise ValueError(f"model repository {r} holds no model (no MODEL/config.pbtxt): write one into it with "
                                 f"`srpose triton MODEL --out {r}`")
        for name, port in (("http_port", self.http_port), ("grpc_port", self.grpc_port)):
            if not 0 <= int(port) < 65536:
                raise ValueError(f"{name} {port} must be 0 (any free port) to 65535")
        check_ports(int(self.http_port), int(self.grpc_port))


@dataclass
class ServerInstall:
    """How to run the server: binary, backend folder (None: the binary's own), environment, what was probed."""

    binary: Path
    source: str
    python: dict[str, Any]
    stub: Path | None = None
    backends: Path | None = None
    libs: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        bindir = str(Path(self.python["executable"]).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        lib = [self.python["libdir"]] if self.python.get("libdir") else []
        lib += [str(self.libs)] if self.libs else []
        if env.get("LD_LIBRARY_PATH"):
            lib.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib)
        return env


def probe_python(python: str) -> dict[str, Any]:
    """Facts of the server's Python (version, libpython, installed modules, the nvidia-pytriton wheel)."""
    exe = shutil.which(python) or python
    try:
        run = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise FileNotFoundError(f"the server's Python {python!r} cannot run ({e}): pass --python PATH") from None
    if run.returncode != 0:
        raise RuntimeError(f"the server's Python {python!r} failed: {run.stderr.strip()[-500:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _bundled(info: dict[str, Any]) -> ServerInstall | None:
    root = info.get("pytriton")
    if not root:
        return None
    dist = Path(root) / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    stub = dist / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").iterdir()) if \
            (dist / "python_backend_stubs").is_dir() else []
        raise RuntimeError(f"the nvidia-pytriton wheel at {root} has no python backend stub for Python "
                           f"{info['version']} (it has {have}): run the server with one of those Pythons (--python)")
    return ServerInstall(binary=binary, source=f"nvidia-pytriton ({root})", python=info, stub=stub,
                         backends=dist / "backends", libs=Path(root).parent / "nvidia_pytriton.libs")


def find_tritonserver(options: ServeOptions) -> ServerInstall:
    """The server to run for ``options`` (see the module docstring); FileNotFoundError saying how to get one."""
    python = options.python or os.environ.get("SRPOSE_TRITON_PYTHON") or sys.executable
    info = probe_python(python)
    missing = [m for m in ("numpy",) if not info["modules"].get(m)]
    if missing:
        raise RuntimeError(f"the server's Python {info['executable']} lacks {missing}: pip install -r "
                           "REPO/requirements.txt there (or pass --python)")
    explicit = options.tritonserver or os.environ.get("SRPOSE_TRITONSERVER")
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"tritonserver {explicit} does not exist")
        return ServerInstall(binary=Path(explicit), source="--tritonserver", python=info)
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(binary=Path(on_path), source="PATH", python=info)
    found = _bundled(info)
    if found is None and Path(info["executable"]).resolve() != Path(sys.executable).resolve():
        here = probe_python(sys.executable)
        if here.get("pytriton") and here["version"] == info["version"]:
            found = _bundled({**here, "executable": info["executable"], "libdir": info["libdir"],
                              "modules": info["modules"]})
    if found is None:
        raise FileNotFoundError(
            "no tritonserver: use NVIDIA's Triton container (tritonserver on PATH), pass --tritonserver BIN, or "
            f"install the bundled one into the server's Python: {info['executable']} -m pip install --no-deps "
            "nvidia-pytriton")
    if not info.get("shared") and not (Path(info.get("libdir") or "") / str(info.get("soname"))).is_file():
        raise RuntimeError(f"the Python {info['executable']} has no shared libpython{info['version']}, which the "
                           "python backend stub links: use a Python built with --enable-shared (e.g. the system's, "
                           "or pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    return found


#: the backend a model ``platform`` runs on (Triton maps these platforms to backends itself)
_PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "pytorch_libtorch": "pytorch",
                      "tensorflow_savedmodel": "tensorflow", "tensorflow_graphdef": "tensorflow"}
_CONFIG_KEY = re.compile(r'^(backend|platform)\s*:\s*"([^"]+)"', re.M)


def repository_backends(repos: Sequence[str | Path]) -> dict[str, str]:
    """``model folder -> the backend it needs`` for every model of ``repos`` (ensembles need none)."""
    out = {}
    for repo in repos:
        for cfg in sorted(Path(repo).glob("*/config.pbtxt")):
            keys = dict(reversed(_CONFIG_KEY.findall(cfg.read_text(errors="replace"))))  # the first of each key
            backend = keys.get("backend") or _PLATFORM_BACKENDS.get(keys.get("platform", ""))
            if backend:
                out[str(cfg.parent)] = backend
    return out


def check_backends(repos: Sequence[str | Path], install: "ServerInstall") -> None:
    """RuntimeError naming each model whose backend the server lacks and what to do (a server with a known backend
    folder only, e.g. the nvidia-pytriton wheel's, which has the python backend alone)."""
    if install.backends is None:
        return
    have = sorted(d.name for d in install.backends.iterdir() if d.is_dir())
    missing = {m: b for m, b in repository_backends(repos).items() if b not in have}
    if missing:
        lines = [f"  {m}: needs Triton's {b} backend" for m, b in missing.items()]
        raise RuntimeError(
            f"the tritonserver of {install.source} has only the {', '.join(have) or 'no'} backend(s):\n"
            + "\n".join(lines) + "\nwrite the repository with `srpose triton MODEL.onnx --runtime python-onnxruntime` "
            "to serve it here, or serve it in NVIDIA's Triton container (TensorRT engines need that, and a GPU)")


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the process that started it dies (no orphaned servers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TritonServer:
    """A running tritonserver (see :func:`start_server`)."""

    def __init__(self, options: ServeOptions) -> None:
        options.check()
        self.options = options
        self.install = find_tritonserver(options)
        self.workdir = Path(tempfile.mkdtemp(prefix="srpose-triton-"))
        # beside the work folder, not in it: a failed server's log outlives close()
        self.log_path = Path(options.log_file) if options.log_file else self.workdir.with_suffix(".log")
        self.process: subprocess.Popen | None = None
        self.http_port = self.grpc_port = 0
        self._log_start = 0  # where this run's part of the log file begins
        self._clean = False  # the server became ready and was stopped by stop(), not by itself

    # ------------------------------------------------------------------------------------------------ start/stop
    def _backend_dir(self) -> Path | None:
        """The python backend with the stub of the server's Python (bundled binary only)."""
        ins = self.install
        if ins.backends is None:
            return None
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for f in (ins.backends / "python").iterdir():
            if f.is_file() and not (python / f.name).exists():
                (python / f.name).symlink_to(f)
        if not (python / "triton_python_backend_stub").exists():
            (python / "triton_python_backend_stub").symlink_to(ins.stub)
        return python.parent

    def _command(self) -> list[str]:
        o = self.options
        cmd = [str(self.install.binary)]
        cmd += [f"--model-repository={Path(r).resolve()}" for r in o.repos]
        backends = self._backend_dir()
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        cmd += ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--exit-on-error=true",
                "--strict-readiness=true", f"--exit-timeout-secs={int(o.exit_timeout_s)}",
                f"--log-verbose={int(o.verbose)}", *o.extra_args]
        return cmd

    def start(self) -> "TritonServer":
        """Start the server and wait until every model is ready (RuntimeError with the log's end otherwise)."""
        o = self.options
        check_backends(o.repos, self.install)
        for attempt in range(3):
            self.http_port = int(o.http_port) or free_port()
            self.grpc_port = int(o.grpc_port) or free_port()
            while self.grpc_port == self.http_port:
                self.grpc_port = free_port()
            with open(self.log_path, "ab") as log:
                self._log_start = log.tell()  # a --log FILE of an earlier run: only this run's lines count
                self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.install.env(),
                                                start_new_session=True, preexec_fn=_parent_death_signal)
            try:
                self._wait_ready()
                self._clean = True
                return self
            except RuntimeError:
                busy = "already in use" in self.log_tail(4000).lower()
                self.stop()
                if not busy or o.http_port or o.grpc_port or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"tritonserver exited (status {code}) before it was ready; {self.log_summary()}")
            if self._listening() and self._get("/v2/health/ready") == 200:
                if self.process.poll() is None:  # still ours: ready
                    return
                continue
            time.sleep(0.2)
        raise RuntimeError(f"tritonserver was not ready after {self.options.ready_timeout_s:.0f} s; "
                           f"{self.log_summary()}")

    def _listening(self) -> bool:
        """Whether our server logged that it listens on both its ports: a readiness answer counts only then (another
        server on a port we were given would answer it too)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                log = f.read().decode(errors="replace")
        except OSError:
            return False
        return (f"Started HTTPService at 127.0.0.1:{self.http_port}" in log
                and f"Started GRPCInferenceService at 127.0.0.1:{self.grpc_port}" in log)

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.http_url}{path}", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (urllib.error.URLError, OSError):
            return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (the server finishes in-flight requests), then SIGKILL to its process group after
        ``timeout_s`` (default: the exit timeout + 10 s); returns the exit status."""
        p = self.process
        if p is None:
            return None
        if p.poll() is not None:  # it ended by itself: keep its log
            self._clean = False
        else:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout_s if timeout_s is not None else self.options.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self._reap_group(p.pid)
        return p.returncode

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Stub processes of the server's session left behind (they should exit with it) get SIGKILL."""
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Stop the server and remove its working folder; its temporary log too, unless the server failed to start
        or ended by itself (a ``log_file`` is always kept)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._clean and not self.options.log_file:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self if self.alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def log_summary(self, max_errors: int = 20) -> str:
        """Where the log is, its error lines (glog ``E<mmdd> ...``: why a model did not load) and its end."""
        log = self.log_tail(1 << 20)
        errors = [line for line in log.splitlines() if re.match(r"E\d{4} ", line)]
        # the cause first: a port in use or a model that failed to load, before e.g. a CPU machine's CUDA lines
        errors = sorted(errors, key=lambda ln: 0 if re.search(r"already in use|failed to load|failed to bind", ln, re.I)
                        else 1)[:max_errors]
        head = f"its log ({self.log_path}) has these error lines:\n" + "\n".join(errors) + "\nand ends with:\n" \
            if errors else f"its log ({self.log_path}) ends with:\n"
        return head + log[-3000:]


def start_server(options: ServeOptions) -> TritonServer:
    """Start tritonserver on 127.0.0.1 and wait until it is ready."""
    return TritonServer(options).start()
