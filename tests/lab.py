"""JupyterLab as a user's browser drives it: the REST API, code run in a kernel that
JupyterLab itself started, over the kernel's websocket, and a terminal over its websocket
(never `podman exec`)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import websocket


def api(port: int, token: str, method: str, path: str, body: dict | None = None,
        base_url: str = "/", host: str = "127.0.0.1") -> dict:
    req = urllib.request.Request(f"http://{host}:{port}{base_url}{path.lstrip('/')}",
                                 method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def _message(msg_type: str, content: dict, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "content": content, "channel": "shell",
            "buffers": []}


def _connect(port: int, token: str, kernel_id: str, timeout: float,
             base_url: str = "/", host: str = "127.0.0.1") -> websocket.WebSocket:
    return websocket.create_connection(
        f"ws://{host}:{port}{base_url}api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"], timeout=timeout)


def _execute(ws: websocket.WebSocket, code: str) -> str:
    """Send an execute_request; returns its msg_id."""
    request = _message("execute_request", {"code": code, "silent": False,
                                           "store_history": False, "user_expressions": {},
                                           "allow_stdin": False, "stop_on_error": True},
                       uuid.uuid4().hex)
    ws.send(json.dumps(request))
    return request["header"]["msg_id"]


def start_in_kernel(port: int, token: str, kernel_id: str, code: str,
                    base_url: str = "/") -> None:
    """Start code in a kernel and return while it runs (the kernel stays busy)."""
    ws = _connect(port, token, kernel_id, 30, base_url)
    try:
        msg_id = _execute(ws, code)
        while True:  # until the kernel says it is busy with our request
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") == msg_id and \
                    msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
                return
    finally:
        ws.close()


def run_in_kernel(port: int, token: str, code: str, timeout: float = 120,
                  base_url: str = "/", host: str = "127.0.0.1") -> str:
    """Start a python3 kernel through JupyterLab, run code, return its stdout (and errors as
    'ERROR name: value' lines); the kernel is shut down afterwards. `host`: where the session's
    port is reached (another node, for bench/gpu-check)."""
    kernel = api(port, token, "POST", "api/kernels", {"name": "python3"}, base_url, host)
    try:
        ws = _connect(port, token, kernel["id"], timeout, base_url, host)
        try:
            msg_id = _execute(ws, code)
            out: list[str] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    out.append(f"ERROR {content['ename']}: {content['evalue']}\n")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
            raise AssertionError(f"the kernel did not finish within {timeout} s: {''.join(out)}")
        finally:
            ws.close()
    finally:
        api(port, token, "DELETE", f"api/kernels/{kernel['id']}", base_url=base_url, host=host)


def run_in_terminal(port: int, token: str, name: str, command: str, expect: str,
                    timeout: float = 60, base_url: str = "/") -> str:
    """Type a command into terminal `name` (made with POST api/terminals) over its websocket,
    as JupyterLab's terminal does; return what it printed until `expect` appeared."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}{base_url}terminals/websocket/{name}",
        header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        ws.send(json.dumps(["stdin", command + "\r"]))
        seen = ""
        deadline = time.monotonic() + timeout
        while expect not in seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"terminal did not print {expect!r} within {timeout} s: "
                                     f"{seen!r}")
            kind, *rest = json.loads(ws.recv())
            if kind == "stdout":
                seen += rest[0]
        return seen
    finally:
        ws.close()
