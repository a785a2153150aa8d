"""The local server's ports: free ones, and a check that the ports asked for are free before the server starts (a
server already on them would answer the readiness probe instead of ours)."""
from __future__ import annotations

import socket

from srpose._io import free_port

__all__ = ["port_free", "free_port", "check_ports"]


def port_free(port: int) -> bool:
    """Whether a server can listen on 127.0.0.1:``port`` now (one in TIME_WAIT counts as free, as for servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def check_ports(http_port: int, grpc_port: int) -> None:
    """ValueError naming a port asked for (0: any free one) that is taken, or the same port asked for twice."""
    if http_port and http_port == grpc_port:
        raise ValueError(f"--http-port and --grpc-port are both {http_port}: give two ports")
    for option, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if port and not port_free(port):
            raise ValueError(f"{option} {port} is in use on 127.0.0.1 (another server?): stop that server, or pass "
                             "another port (0 picks a free one)")
