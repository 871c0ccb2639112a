"""Run code in a kernel that a session's JupyterLab starts: its REST API and kernel WebSocket.

Checks "from inside a session" mean code in a real kernel, as a user's notebook runs it, not
`podman exec`. Standard library only (tests and bench/gpu-check use it): start a kernel, send
one execute_request over the WebSocket (Jupyter's JSON protocol, RFC 6455 framing), collect the
output until the kernel is idle again, shut the kernel down.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
import urllib.request
import uuid
from datetime import datetime, timezone

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class KernelError(Exception):
    """The code raised in the kernel, or the kernel could not be reached."""


def _api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None,
         timeout: float = 60) -> dict | None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read()
    return json.loads(text) if text else None


class _WebSocket:
    def __init__(self, host: str, port: int, path: str, token: str, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: token {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise KernelError(f"WebSocket handshake closed: {head!r}")
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if b" 101 " not in head.split(b"\r\n", 1)[0] or accept.encode() not in head:
            raise KernelError(f"WebSocket handshake refused: {head.decode(errors='replace')}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise KernelError("WebSocket closed by the server")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> str:
        """The next whole text message (answering pings on the way)."""
        parts = b""
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise KernelError("WebSocket closed by the server")
            if opcode == 0x9:
                self.send(data, 0xA)
                continue
            if opcode in (0x1, 0x2, 0x0):
                parts += data
                if fin:
                    return parts.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send(b"", 0x8)
        self.sock.close()


def run_code(host: str, port: int, base_url: str, token: str, code: str,
             timeout: float = 90) -> str:
    """Start a kernel in the session, run `code`, return its stdout; KernelError if it raised.
    """
    base = f"http://{host}:{port}{base_url}"
    kernel = _api(base, token, "api/kernels", "POST", {"name": "python3"}, timeout)
    assert kernel is not None
    session = uuid.uuid4().hex
    try:
        ws = _WebSocket(host, port, f"{base_url}api/kernels/{kernel['id']}/channels"
                        f"?session_id={session}", token, timeout)
        try:
            return _execute(ws, session, code, time.monotonic() + timeout)
        finally:
            ws.close()
    finally:
        _api(base, token, f"api/kernels/{kernel['id']}", "DELETE", timeout=timeout)


def _execute(ws: _WebSocket, session: str, code: str, deadline: float) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3",
                   "date": datetime.now(timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }).encode())
    out, error = [], None
    while time.monotonic() < deadline:
        msg = json.loads(ws.receive())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            if error:
                raise KernelError(f"the code raised {error}; output: {''.join(out)}")
            return "".join(out)
    raise KernelError("the kernel did not finish in time")
