"""Start (or show) a demo JupyterLab session for a test user and print how to connect.

Run by `testbed/demo` as root after provisioning. The session is the real thing: a `jupyter_app`
Slurm job submitted as the test user through the sbatch wrapper.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys

SH = "/opt/sh-jupyter/venv/bin/sh-jupyter"


def as_user(user: str, argv: list[str]) -> subprocess.CompletedProcess:
    pw = pwd.getpwnam(user)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir, "USER": user,
           "LOGNAME": user, "LANG": "C.UTF-8"}
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i",
                           *[f"{k}={v}" for k, v in env.items()], *argv],
                          cwd="/tmp", capture_output=True, text=True, check=False)


def running_session(user: str, state: str) -> str | None:
    """The demo session id if its card still says Running."""
    try:
        with open(state, encoding="utf-8") as fh:
            session_id = fh.read().strip()
    except FileNotFoundError:
        return None
    out = as_user(user, [SH, "status", "--json", session_id])
    if out.returncode == 0 and json.loads(out.stdout)["status"] == "Running":
        return session_id
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--stop", action="store_true")
    parser.add_argument("--nodelist", default="", help="the node(s) the session may run on")
    parser.add_argument("--check-prefix", default="", help="how to run the check command "
                        "where the session's URL answers (the cluster's login host)")
    args = parser.parse_args()
    session_id = running_session(args.user, args.state)
    if args.stop:
        if session_id:
            out = as_user(args.user, [SH, "cancel", session_id])
            print(out.stdout.strip() or out.stderr.strip())
        else:
            print("no demo session is running")
        return 0
    if not session_id:
        print(f"submitting a JupyterLab session as {args.user} ...", flush=True)
        nodes = ["--nodelist", args.nodelist] if args.nodelist else []
        out = as_user(args.user, [SH, "submit", "--wait", "--json", "--time", "1:00:00", *nodes])
        if out.returncode != 0:
            sys.stderr.write(out.stdout + out.stderr)
            return 1
        session_id = json.loads(out.stdout[:out.stdout.index("\n}") + 2])["session_id"]
        os.makedirs(os.path.dirname(args.state), exist_ok=True)
        with open(args.state, "w", encoding="utf-8") as fh:
            fh.write(session_id + "\n")
    card = as_user(args.user, [SH, "status", session_id])
    conn = json.loads(as_user(args.user, [SH, "connect", "--json", session_id]).stdout)
    host, port, password = conn["host"], conn["port"], conn["password"]
    print(card.stdout.rstrip())
    print(f"\n  URL (auto-login): {conn['url']}")
    print(f"  password:         {password}")
    where = host if args.check_prefix else "127.0.0.1"
    print(f"  check:            {args.check_prefix}curl -H 'Authorization: token {password}' "
          f"http://{where}:{port}/api/status")
    print(f"  stop:             testbed/demo {'--cluster ' if args.nodelist else ''}--stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
