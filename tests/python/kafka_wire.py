"""Socket helpers shared by the pytest fixtures (conftest.py) and the conn_figures.py script.

A plain module (no pytest import), so the figures script can use it on its own.
"""

import socket


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_exact(s, n):
    """Exactly `n` bytes from socket `s`; ConnectionError if the peer closes first."""
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf
