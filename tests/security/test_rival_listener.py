"""A rival listener: another user holds or races for the session's port to catch its token.

The supervisor's readiness probe sends the session's token to the port it chose. If that
port's socket could belong to someone else, the token goes to them. The rival here is a small
HTTP server run as shjuser2 that answers like JupyterLab (`GET /api` gives a version) and
records every request line and header it receives. It holds ports of the session's range
before the session starts, and it watches /proc for `jupyter-lab --port=N` (every user can
read a command line) to bind N during the start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import pytest

import bed

VICTIM, RIVAL = bed.USERS[0], bed.USERS[1]

RIVAL_PY = r'''
import json, os, re, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

held, lo, hi = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
requests, race, lock = [], {}, threading.Lock()

class Answer(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        with lock:
            requests.append({"port": self.server.server_address[1], "line": self.requestline,
                             "headers": dict(self.headers.items())})
        body = (b'{"version": "2.21.1"}' if self.path.split("?")[0].endswith("/api")
                else b'{"started": "2026-01-01T00:00:00Z", "last_activity": '
                     b'"2026-01-01T00:00:00Z", "connections": 0, "kernels": 0}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET

def serve(address):
    server = ThreadingHTTPServer(address, Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()

for port in held:
    serve(("0.0.0.0", port))
print("ready", flush=True)

def racer():
    """Bind any session port a jupyter-lab command line shows, as fast as it appears."""
    while True:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if not any(b"jupyter" in a for a in argv[:2]):
                continue
            for a in argv:
                m = re.fullmatch(rb"--port=(\d+)", a)
                if m and lo <= int(m[1]) <= hi and int(m[1]) not in held \
                        and int(m[1]) not in race:
                    port = int(m[1])
                    tried = []
                    for address in ("127.0.0.1", "0.0.0.0"):
                        try:
                            serve((address, port))
                            tried.append(f"{address}: bound")
                            break
                        except OSError as exc:
                            tried.append(f"{address}: {exc.strerror}")
                    race[port] = tried
        time.sleep(0.002)

threading.Thread(target=racer, daemon=True).start()
sys.stdin.read()  # the test closes it: report and end
with lock:
    print(json.dumps({"requests": requests, "race": race}), flush=True)
'''


def _free_block(count: int, start: int = 36000, end: int = 36999) -> int:
    """The first port of `count` consecutive ports nobody listens on (36000-36999: no other
    suite uses them)."""
    for base in range(start, end, count):
        if all(bed_port_free(p) for p in range(base, base + count)):
            return base
    raise AssertionError(f"no {count} free consecutive ports in {start}-{end}")


def bed_port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class Rival:
    """The rival listener, running as RIVAL."""

    def __init__(self, held: list[int], lo: int, hi: int) -> None:
        script = os.path.join(bed.shared_tempdir(), "rival.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(RIVAL_PY)
        os.chmod(script, 0o644)
        self.proc = bed.popen_as_user(RIVAL, [bed.PYTHON, script, json.dumps(held), str(lo),
                                              str(hi)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        bed.wait_for(lambda: "ready" in self.lines or self.proc.poll() is not None, 20,
                     "the rival to hold its ports")
        assert "ready" in self.lines, self.proc.stderr.read()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def report(self) -> dict:
        """Stop the rival; what it received and how its races went."""
        self.proc.stdin.close()
        self.proc.wait(timeout=20)
        bed.wait_for(lambda: len(self.lines) >= 2, 5, "the rival's report")
        return json.loads(self.lines[-1])


def _carries(request: dict, secret: str) -> bool:
    """A request that hands over a credential: the secret itself, or any token at all."""
    text = request["line"] + json.dumps(request["headers"])
    return (bool(secret) and secret in text) or "authorization" in \
        {k.lower() for k in request["headers"]} or "token=" in request["line"]


@pytest.fixture
def ports(testbed) -> tuple[int, int]:
    base = _free_block(4)
    return base, base + 3


def _attack(ports: tuple[int, int], site: str) -> tuple[bed.Session, dict, int]:
    """Start VICTIM's session with the rival holding all but the range's last port and
    racing for whatever port JupyterLab is given; returns the session, the rival's report
    and the supervisor's exit status (None while it still runs)."""
    lo, hi = ports
    rival = Rival(list(range(lo, hi)), lo, hi)
    s = bed.start_session(VICTIM, bed.write_config(
        f"[network]\nport_min = {lo}\nport_max = {hi}\nport_attempts = 4\n{site}"))
    conn_file = os.path.join(s.session_dir, "connection.yml")
    try:
        bed.wait_for(lambda: os.path.exists(conn_file) or s.proc.poll() is not None, 90,
                     "the session to be Running or to end")
    finally:
        report = rival.report()
    return s, report, s.proc.poll()


def _end(s: bed.Session) -> None:
    s.terminate()
    s.wait_exit(30)
    assert s.container() not in bed.containers_of(VICTIM)


def test_a_rival_listener_gets_no_token_and_the_session_comes_up(ports):
    """As shjuser2, listen on every port but one of the session range before shjuser1's
    session starts, and bind the session's port as soon as `jupyter-lab --port=N` shows in
    ps. The session comes up on the free port, the rival cannot take it (the session's own
    network helper holds it from before JupyterLab starts), and no request carrying the
    token, or any credential, ever reaches the rival."""
    s, report, code = _attack(ports, "")
    try:
        assert code is None, f"the session ended ({code}):\n{s.log()}"
        conn = s.connection()
        secret, port = conn["password"], int(conn["port"])
        assert port == ports[1], (port, s.log())
        # The attack ran: the rival saw the port in ps and tried it, and was refused.
        assert str(port) in report["race"], (report, s.log())
        assert not any("bound" in r for r in report["race"][str(port)]), report["race"]
        assert not [r for r in report["requests"] if _carries(r, secret)], report["requests"]
    finally:
        _end(s)


def test_host_networking_is_refused_so_no_rival_can_answer_for_jupyterlab(ports):
    """As shjuser2, the same rival against a site that configures podman.network = "host"
    (JupyterLab's own socket on the node, which the rival can bind first): sh-jupyter
    refuses the setting before anything starts (exit 2, naming it), so the rival never
    receives a token."""
    s, report, code = _attack(ports, '[podman]\nnetwork = "host"\n')
    try:
        secret = ""
        if os.path.exists(os.path.join(s.session_dir, "connection.yml")):
            secret = s.connection()["password"]
        assert not [r for r in report["requests"] if _carries(r, secret)], report["requests"]
        assert code == 2, f"host networking was accepted ({code}):\n{s.log()}"
        assert "podman.network = 'host'" in s.log(), s.log()
        assert not report["requests"] and not report["race"], report
    finally:
        if s.proc.poll() is None:
            _end(s)
