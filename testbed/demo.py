"""Start (or show) a demo JupyterLab session for a test user and print how to connect.

Run by `testbed/demo` as root after provisioning; the session itself runs as the test user,
exactly as the product runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid

SH = "/opt/sh-jupyter/venv/bin/sh-jupyter"


def _user_argv(user: str, argv: list[str]) -> list[str]:
    pw = pwd.getpwnam(user)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir, "USER": user,
           "LOGNAME": user, "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", "LANG": "C.UTF-8"}
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    return ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            *argv]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _load(state: str) -> dict | None:
    try:
        with open(state, encoding="utf-8") as fh:
            data = json.load(fh)
    except (FileNotFoundError, ValueError):
        return None
    return data if _alive(data["pid"]) else None


def _connection(session_dir: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(session_dir, "connection.yml"), encoding="utf-8") as fh:
            return {k: json.loads(v) for k, _, v in
                    (line.rstrip("\n").partition(": ") for line in fh)}
    except FileNotFoundError:
        return None


def _start(user: str, state: str) -> dict:
    pw = pwd.getpwnam(user)
    session_id = str(uuid.uuid4())
    session_dir = os.path.join(pw.pw_dir, "shj-demo", session_id)
    log_path = f"/tmp/sh-jupyter-demo-{session_id[:8]}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _user_argv(user, [SH, "run", "--local", "--session-dir", session_dir,
                              "--session-id", session_id]),
            cwd="/tmp", stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    data = {"pid": proc.pid, "session_dir": session_dir, "log": log_path, "user": user}
    os.makedirs(os.path.dirname(state), exist_ok=True)
    with open(state, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    deadline = time.monotonic() + 240
    while _connection(session_dir) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                sys.stderr.write(fh.read())
            sys.exit("demo session did not start; its log is above")
        time.sleep(0.2)  # polling the connection file, bounded by the deadline above
    return data


def _stop(data: dict | None) -> int:
    if not data:
        print("no demo session is running")
        return 0
    children = f"/proc/{data['pid']}/task/{data['pid']}/children"
    with open(children, encoding="ascii") as fh:
        supervisor = int(fh.read().split()[0])
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(data["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    print("demo session stopped; its container is removed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--stop", action="store_true")
    args = parser.parse_args()
    data = _load(args.state)
    if args.stop:
        return _stop(data)
    data = data or _start(args.user, args.state)
    conn = _connection(data["session_dir"])
    host, port, password = conn["host"], conn["port"], conn["password"]
    session_id = os.path.basename(data["session_dir"])
    print(f"JupyterLab is running for {data['user']} (session {session_id})")
    print(f"  URL (auto-login): http://{host}:{port}/lab?token={password}")
    print(f"  URL:              http://127.0.0.1:{port}/lab   password: {password}")
    print(f"  check:            curl -H 'Authorization: token {password}' "
          f"http://127.0.0.1:{port}/api/status")
    print(f"  log: {data['log']}   stop: testbed/demo --stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
