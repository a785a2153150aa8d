"""``srpose serve REPO``: a local tritonserver on 127.0.0.1 (argv -> :class:`~srpose.serve.server.ServeOptions`).

Prints the HTTP and gRPC URLs as its first two lines once every model is ready, then serves until SIGINT/SIGTERM,
which stop the server cleanly (in-flight requests finish)."""
from __future__ import annotations

import argparse
import signal
import sys
import time

from ._args import count, number

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repos", nargs="+", metavar="REPO", help="model repositories written by `srpose triton`")
    p.add_argument("--http-port", type=count(0), default=8000, metavar="P",
                   help="HTTP port (default: 8000; 0: a free one)")
    p.add_argument("--grpc-port", type=count(0), default=8001, metavar="P",
                   help="gRPC port (default: 8001; 0: a free one)")
    p.add_argument("--python", default=None, metavar="PY",
                   help="the server's Python, which runs the python-backend models (default: $SRPOSE_TRITON_PYTHON, "
                        "else this one)")
    p.add_argument("--tritonserver", default=None, metavar="BIN",
                   help="the server binary (default: $SRPOSE_TRITONSERVER, tritonserver on PATH, or the "
                        "nvidia-pytriton wheel's)")
    p.add_argument("--log", default=None, metavar="FILE", help="write the server's log to FILE (default: a temporary "
                   "file, shown when the server fails)")
    p.add_argument("--timeout", type=number(0, above=True), default=180.0, metavar="S",
                   help="seconds to wait for the models to load")
    p.add_argument("--verbose", type=count(0), default=0, metavar="N", help="tritonserver --log-verbose level")


def run(args: argparse.Namespace) -> int:
    from srpose.serve.server import ServeOptions, TritonServer

    server = TritonServer(ServeOptions(repos=args.repos, http_port=args.http_port, grpc_port=args.grpc_port,
                                       python=args.python, tritonserver=args.tritonserver, log_file=args.log,
                                       ready_timeout_s=args.timeout, verbose=args.verbose))
    def interrupt(signum: int, _frame: object) -> None:  # while starting: stop starting (main() says "interrupted")
        raise KeyboardInterrupt

    # Once serving, the handlers only append to a list: a handler that takes a lock (threading.Event.set) can
    # deadlock against the main thread holding that lock inside Event.wait, and Ctrl-C and SIGTERM are then ignored.
    stop: list[int] = []
    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        for s in old:
            signal.signal(s, lambda signum, _frame: stop.append(signum))
        print(server.http_url)
        print(server.grpc_url, flush=True)
        print(f"srpose serve: tritonserver ({server.install.source}) serves {', '.join(map(str, args.repos))}; "
              f"log {server.log_path}; Ctrl-C stops it", file=sys.stderr, flush=True)
        while True:
            time.sleep(0.2)  # a signal ends the sleep early; the handler has run by then
            if stop:
                break
            if not server.alive():
                print(f"srpose serve: error: tritonserver exited (status {server.process.returncode}); "
                      f"{server.log_summary()}", file=sys.stderr)
                return 1
        print("srpose serve: stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        server.close()
        for s, h in old.items():
            signal.signal(s, h)
