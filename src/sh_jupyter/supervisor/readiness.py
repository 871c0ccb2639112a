"""HTTP probes of JupyterLab (readiness is HTTP, not TCP: rootless port forwarding accepts a
connection before JupyterLab listens).

`GET {base}api` needs no auth and does not count as user activity; `GET {base}api/status` with
the token proves the secret is in force. Health checks ask with `no_track_activity=1`, so they
never keep an idle session alive.
"""

from __future__ import annotations

import http.client
import json


def _get(host: str, port: int, path: str, timeout: float,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api_answers(host: str, port: int, base_url: str, timeout: float = 2.0) -> bool:
    """True when JupyterLab's unauthenticated /api answers with its version."""
    try:
        status, body = _get(host, port, f"{base_url}api", timeout)
    except (OSError, http.client.HTTPException):
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
    except (OSError, http.client.HTTPException, ValueError):
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
