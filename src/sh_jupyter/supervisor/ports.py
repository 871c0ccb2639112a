"""Choosing a session port on a node shared by many sessions.

A random pick in the range plus a bind test makes collisions rare; the bind test cannot close
the race with another session starting at the same instant, so the caller also retries on
"address in use" from Podman or JupyterLab (two sessions on one node must never collide).
"""

from __future__ import annotations

import errno
import random
import socket


def candidates(port_min: int, port_max: int, count: int, rng: random.Random | None = None,
               ) -> list[int]:
    """Up to `count` distinct random ports from the inclusive range."""
    rng = rng or random.SystemRandom()
    span = port_max - port_min + 1
    return rng.sample(range(port_min, port_max + 1), min(count, span))


def is_free(bind_address: str, port: int) -> bool:
    """True if nothing listens on the port at the bind address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind_address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def probe_address(bind_address: str) -> str:
    """The address the supervisor itself uses to reach the published port."""
    return "127.0.0.1" if bind_address in ("0.0.0.0", "") else bind_address
