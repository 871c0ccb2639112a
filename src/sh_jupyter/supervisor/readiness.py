"""HTTP probes of JupyterLab (readiness is HTTP, not TCP: rootless port forwarding accepts a
connection before JupyterLab listens).

`GET {base}api` needs no auth and does not count as user activity; `GET {base}api/status` with
the token proves the secret is in force. Health checks ask with `no_track_activity=1`, so they
never keep an idle session alive.

The requests are plain HTTP/1.0 on a socket, not http.client: the idle watcher
(`supervisor.idle`) makes them for the session's whole life, and http.client would bring the
ssl and email packages into it (about 6 MB of resident memory for nothing).
"""

from __future__ import annotations

import json
import socket
import time

MAX_REPLY = 1 << 20  # a status reply is a few hundred bytes; never hold more than this


class BadReply(OSError):
    """What answered on the port is not an HTTP server (or said too much)."""


def _complete(data: bytes) -> bool:
    """True once the reply's head and its Content-Length of body have arrived."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return False  # no length: the server closes the connection at the end (HTTP/1.0)


def _get(host: str, port: int, path: str, timeout: float,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET; its status and body. Raises OSError (BadReply for what is not HTTP)."""
    deadline = time.monotonic() + timeout
    lines = [f"GET {path} HTTP/1.0", f"Host: {host}:{port}",
             *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        while not _complete(data):
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REPLY:
                raise BadReply(f"reply from port {port} longer than {MAX_REPLY} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/") \
            or not status[1].isdigit():
        raise BadReply(f"no HTTP reply from port {port}")
    return int(status[1]), body


def api_answers(host: str, port: int, base_url: str, timeout: float = 2.0) -> bool:
    """True when JupyterLab's unauthenticated /api answers with its version."""
    try:
        status, body = _get(host, port, f"{base_url}api", timeout)
    except OSError:
        return False
    if status != 200:
        return False
    try:
        return "version" in json.loads(body)
    except ValueError:
        return False


def auth_status(host: str, port: int, base_url: str, token: str, timeout: float = 5.0) -> int:
    """HTTP status of the authenticated /api/status (200 when the token works)."""
    status, _ = _get(host, port, f"{base_url}api/status", timeout,
                     {"Authorization": f"token {token}"})
    return status


def _get_json(host: str, port: int, path: str, token: str, timeout: float):
    try:
        status, body = _get(host, port, path, timeout, {"Authorization": f"token {token}"})
        return json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None


def server_status(host: str, port: int, base_url: str, token: str,
                  timeout: float = 5.0) -> dict | None:
    """JupyterLab's own view of its activity (kernels, last_activity); None if it does not
    answer. The request itself is not counted as activity."""
    data = _get_json(host, port, f"{base_url}api/status?no_track_activity=1", token, timeout)
    return data if isinstance(data, dict) and "last_activity" in data else None


def terminal_count(host: str, port: int, base_url: str, token: str,
                   timeout: float = 5.0) -> int | None:
    """How many terminals are open (None if JupyterLab does not say)."""
    data = _get_json(host, port, f"{base_url}api/terminals?no_track_activity=1", token, timeout)
    return len(data) if isinstance(data, list) else None
