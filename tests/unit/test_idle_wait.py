"""The session's idle wait and its handoff: the HTTP probes on a real socket, the wait's loop
against a small real HTTP server and a real child process, the exec across which the plan,
the state and a signal must survive, and the card it writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sh_jupyter.session import Status
from sh_jupyter.supervisor import follow, handoff, idle, readiness

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


class Lab(BaseHTTPRequestHandler):
    """What JupyterLab answers to the probes; `replies` maps a path to (status, JSON)."""

    replies: dict = {}
    seen: list = []

    def do_GET(self):
        type(self).seen.append((self.path, self.headers.get("Authorization", "")))
        status, body = type(self).replies.get(self.path.split("?")[0], (404, {}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args):
        pass


@pytest.fixture
def lab():
    Lab.replies, Lab.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Lab)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat()


def test_probes_speak_http_to_a_real_server(lab):
    Lab.replies = {"/api": (200, {"version": "2.14"}),
                   "/api/status": (200, {"kernels": 0, "last_activity": ago(5)}),
                   "/api/terminals": (200, [{"name": "1"}])}
    assert readiness.api_answers("127.0.0.1", lab, "/")
    assert readiness.auth_status("127.0.0.1", lab, "/", "tok") == 200
    assert readiness.server_status("127.0.0.1", lab, "/", "tok")["kernels"] == 0
    assert readiness.terminal_count("127.0.0.1", lab, "/", "tok") == 1
    assert ("/api/status?no_track_activity=1", "token tok") in Lab.seen
    Lab.replies = {"/api": (503, {})}
    assert not readiness.api_answers("127.0.0.1", lab, "/")
    assert readiness.server_status("127.0.0.1", lab, "/", "tok") is None


def serve_once(reply: bytes) -> int:
    """A listener that answers one connection with `reply` (not HTTP) and closes."""
    sock = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = sock.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(reply)
        sock.close()
    threading.Thread(target=answer, daemon=True).start()
    return sock.getsockname()[1]


def test_what_is_not_http_is_no_answer():
    assert not readiness.api_answers("127.0.0.1", serve_once(b"SSH-2.0-OpenSSH\r\n"), "/")
    with pytest.raises(readiness.BadReply):
        readiness.auth_status("127.0.0.1", serve_once(b"garbage without a head"), "/", "t")
    with pytest.raises(readiness.BadReply, match="longer than"):
        readiness.auth_status("127.0.0.1", serve_once(
            b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * (readiness.MAX_REPLY + 10)), "/", "t")


def test_nothing_listening_is_no_answer():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    assert not readiness.api_answers("127.0.0.1", port, "/", timeout=1)


def plan(port: int, **changes) -> dict:
    out = {"host": "127.0.0.1", "port": port, "base_url": "/", "token": "tok",
           "health_interval": 0, "health_failures": 2, "idle_timeout": 0, "walltime_due": 0}
    out.update(changes)
    return out


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def signals():
    before = {s: signal.getsignal(s) for s in handoff.SIGNALS}
    pipe = follow.SignalPipe(handoff.SIGNALS)
    yield pipe
    signal.set_wakeup_fd(-1)
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_an_idle_lab_ends_the_wait_and_busy_ones_do_not(lab, child, signals):
    Lab.replies = {"/api/status": (200, {"kernels": 0, "last_activity": ago(120)}),
                   "/api/terminals": (200, [])}
    times: list[str] = []
    event = idle.watch(plan(lab, idle_timeout=60), follow.ProcessWatch(child.pid), signals,
                       times.append)
    assert event["kind"] == idle.IDLE and event["seconds"] >= 119
    assert times, "a good check is recorded on the card"
    # A terminal keeps it in use: then the followed process's end is what ends the wait.
    Lab.replies["/api/terminals"] = (200, [{"name": "1"}])
    threading.Timer(0.3, child.stdin.close).start()
    event = idle.watch(plan(lab, idle_timeout=60, health_interval=0.05),
                       follow.ProcessWatch(child.pid), signals, lambda _when: None)
    assert event == {"kind": idle.ENDED, "signal": ""}


def test_a_lab_that_stops_answering_ends_it_after_the_failures(child, signals):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    event = idle.watch(plan(port, health_failures=2), follow.ProcessWatch(child.pid), signals,
                       lambda _when: None)
    assert event == {"kind": idle.UNHEALTHY}


def test_a_signal_and_the_walltime_notice_end_it(lab, child, signals):
    Lab.replies = {"/api/status": (200, {"kernels": 1, "last_activity": ago(1)})}
    event = idle.watch(plan(lab, walltime_due=time.time() - 1, health_interval=60),
                       follow.ProcessWatch(child.pid), signals, lambda _when: None)
    assert event == {"kind": idle.WALLTIME}
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    event = idle.watch(plan(lab, health_interval=60), follow.ProcessWatch(child.pid), signals,
                       lambda _when: None)
    assert event == {"kind": idle.ENDED, "signal": "SIGTERM"}


def test_the_card_it_writes_is_the_supervisors(tmp_path):
    status = Status(session_id="0d7f5c4e-0000-4000-8000-000000000000", phase="Running",
                    job_id="7", port=31000, checked_at="2026-12-07T15:00:00+00:00")
    idle.write_status(str(tmp_path), asdict(status))
    path = tmp_path / "status.json"
    assert path.read_text() == status.to_json()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


PROGRAM = """
import os, signal, sys
sys.path.insert(0, {src!r})
from sh_jupyter.supervisor import handoff
blocked = handoff.block_signals
def block_then_signal():  # a SIGTERM between the block and the exec
    blocked()
    os.kill(os.getpid(), signal.SIGTERM)
handoff.block_signals = block_then_signal
handoff.exec_supervisor("receiver", {{"pidfd": os.pidfd_open(os.getpid()), "token": "s3cret"}},
                        b"frozen state")
"""

RECEIVER = """
import json, os, signal, sys
from sh_jupyter.supervisor import handoff, follow
def main(argv):
    plan = json.loads(handoff.read_fd(int(argv[0])))
    state = handoff.read_fd(int(argv[1]))
    pipe = follow.SignalPipe(handoff.SIGNALS)
    handoff.unblock_signals()
    print(json.dumps({{"plan": plan, "state": state.decode(), "signal": pipe.received,
                      "argv": sys.argv,
                      "pidfd_open": os.path.exists(f"/proc/self/fd/{{plan['pidfd']}}")}}))
"""


def test_the_exec_carries_plan_state_pidfd_and_a_pending_signal(tmp_path):
    """A SIGTERM sent while the signals are blocked for the exec waits for the new program."""
    (tmp_path / "receiver.py").write_text(textwrap.dedent(RECEIVER).format())
    program = textwrap.dedent(PROGRAM).format(src=os.path.abspath(SRC))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.path.abspath(SRC)}"}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    got = json.loads(out.stdout)
    assert got["plan"]["token"] == "s3cret" and got["state"] == "frozen state"
    assert got["signal"] == "SIGTERM"
    assert got["pidfd_open"]
    assert got["argv"][-5:-2] == ["sh-jupyter", "run", "(receiver)"]
    assert "s3cret" not in " ".join(got["argv"])


def test_a_signal_its_handler_already_took_stops_the_exec(signals):
    """Taken before the signals were blocked, it would be lost in the new program: no exec,
    the caller handles it."""
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.pending()
    assert handoff.exec_supervisor("never.imported", {"pidfd": -1}, b"state",
                                   signals.pending) is False
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) & set(handoff.SIGNALS) == set()


def test_a_child_known_only_by_its_pid_is_waited_and_ended():
    """How the supervisor takes on the Podman command the idle wait started before the exec."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child = follow.Child(proc.pid)
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.05)
    child.terminate()
    assert child.wait(10) == -signal.SIGTERM
    assert child.poll() == -signal.SIGTERM
    child.kill()  # gone: a no-op, never a signal to a pid that may be reused


def test_the_scratch_the_cancel_removes_is_exactly_the_sessions(tmp_path):
    from sh_jupyter.files import remove_scratch

    scratch = tmp_path / "scratch" / "sid"
    (scratch / "deep").mkdir(parents=True)
    (scratch / "deep" / "f").write_text("x")
    assert remove_scratch(str(scratch), {}) == f"scratch {scratch} removed"
    assert not scratch.exists() and (tmp_path / "scratch").is_dir()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "data").write_text("mine")
    (tmp_path / "link").symlink_to(kept)
    out = remove_scratch(str(tmp_path / "link"), {})
    assert "not removed" in out and (kept / "data").read_text() == "mine"


def test_a_signal_passed_on_in_the_event_is_no_longer_pending(signals):
    """The wait hands a cancel's signal on in its event; left pending, it would stop every
    exec back to the supervisor."""
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.pending()
    assert idle.take_signal(signals) == "SIGTERM"
    assert not signals.pending() and idle.take_signal(signals) == ""
