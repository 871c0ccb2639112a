"""Where a running session's secret can be found, by another user and by code inside it.

One Slurm session of shjuser1 (through `sh-jupyter submit`, so the prolog, the batch script
and the job's output are the real ones), then shjuser2 looks everywhere a local user can:
every process's command line, the session's processes' environments, the session's files, the
Podman socket directory and the world-readable logs. Code inside the session (the user's own
notebooks, which read /proc/1/environ) must not find the token in any process's environment
either: it reaches JupyterLab as a config file that is deleted once JupyterLab answers.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

import bed

VICTIM, ATTACKER = bed.USERS[0], bed.USERS[1]

# Run as the attacker; what to look for comes on stdin (never in argv, where ps shows it).
LOOK_PY = r'''
import errno, json, os, sys
job = json.load(sys.stdin)
secret, victim = job["secret"].encode(), job["victim_uid"]
out = {"cmdline": [], "environ": {}, "paths": {}, "logs": []}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if secret in fh.read():
                out["cmdline"].append(pid)
        if os.stat(f"/proc/{pid}").st_uid != victim:
            continue
    except OSError:
        continue
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        out["environ"][pid] = "readable, with the secret" if secret in data else "readable"
    except OSError as exc:
        out["environ"][pid] = errno.errorcode.get(exc.errno, str(exc.errno))
for path in job["paths"]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
            out["paths"][path] = "listed"
        else:
            with open(path, "rb") as fh:
                fh.read()
            out["paths"][path] = "read"
    except OSError as exc:
        out["paths"][path] = errno.errorcode.get(exc.errno, str(exc.errno))
for root in job["log_dirs"]:
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as fh:
                    out["logs"].append([path, secret in fh.read()])
            except OSError:
                pass
print(json.dumps(out))
'''


@pytest.fixture
def cleanup(testbed):
    """Cancel whatever the test submitted, even when it fails half-way."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["scancel", job], check=False)
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING", "COMPLETING"),
                     60, f"job {job} to end")


@pytest.fixture
def running(cleanup) -> dict:
    """A Running Slurm session of VICTIM: its submit record, secret and container."""
    cfg = bed.write_config(bed.E2E_PORTS)
    sub, _ = bed.start(VICTIM, cfg, cleanup)
    with open(os.path.join(sub["session_dir"], "connection.yml"), encoding="utf-8") as fh:
        conn = {k: json.loads(v) for k, _, v in (line.rstrip("\n").partition(": ")
                                                  for line in fh)}
    secret = conn["password"]
    assert len(secret) >= 32
    return {**sub, "secret": secret, "container": f"epcc-ces-jupyter-{sub['session_id']}",
            "uid": pwd.getpwnam(VICTIM).pw_uid}


def _look(s: dict, paths: list[str]) -> dict:
    script = os.path.join(bed.shared_tempdir(), "look.py")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(LOOK_PY)
    os.chmod(script, 0o644)
    job = {"secret": s["secret"], "victim_uid": s["uid"], "paths": paths,
           "log_dirs": ["/var/log", "/var/tmp"]}
    out = bed.as_user(ATTACKER, [bed.PYTHON, script], input=json.dumps(job))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _container_pids(s: dict) -> list[int]:
    """Host pids of every process of the session's container (its PID 1 and descendants)."""
    out = bed.podman(VICTIM, "inspect", "--format", "{{.State.Pid}}", s["container"])
    assert out.returncode == 0, out.stderr
    pids, todo = [], [int(out.stdout.strip())]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                todo += [int(c) for c in fh.read().split()]
    return pids


def test_another_user_finds_the_secret_in_no_argv_environment_file_or_log(running):
    """As shjuser2, while shjuser1's session runs: read every process's command line, open
    /proc/PID/environ of each of shjuser1's processes (the supervisor, conmon, the network
    helper, the container's PID 1 and JupyterLab), read the session directory, connection.yml,
    the job's output.log, the user's runtime and Podman socket directories, and every file it
    can under /var/log (sh-jupyter's hooks.log, Slurm's) and /var/tmp. The secret is in no
    command line, no environment can be opened (EACCES), no session file can be read, and no
    readable log holds it."""
    s = running
    runtime = f"/run/user/{s['uid']}"
    session_dir = s["session_dir"]
    paths = [session_dir, os.path.join(session_dir, "connection.yml"),
             os.path.join(session_dir, "output.log"), os.path.join(session_dir, "status.json"),
             runtime, f"{runtime}/sh-jupyter", f"{runtime}/sh-jupyter/{s['session_id'][:8]}.sock",
             f"{runtime}/sh-jupyter/{s['session_id'][:8]}.auth"]
    found = _look(s, paths)
    assert found["cmdline"] == [], f"the secret is in the argv of pids {found['cmdline']}"
    container = {str(p) for p in _container_pids(s)}
    assert container <= set(found["environ"]), (container, found["environ"])
    opened = {pid: how for pid, how in found["environ"].items() if how not in ("EACCES", "EPERM")}
    assert not opened, f"shjuser2 opened the environment of {VICTIM}'s processes: {opened}"
    readable = {p: how for p, how in found["paths"].items() if how not in ("EACCES", "ENOENT")}
    assert not readable, f"shjuser2 reached {readable}"
    assert found["paths"][os.path.join(session_dir, "connection.yml")] == "EACCES"
    leaks = [path for path, has in found["logs"] if has]
    assert not leaks, f"the secret is in files shjuser2 can read: {leaks}"
    # The job's own output (shjuser1's to read) does not hold it either, nor does any log
    # only root reads (slurmd's and slurmctld's among them): the secret never reaches Slurm.
    assert s["secret"] not in bed.session_log(session_dir)
    for directory, _, files in os.walk("/var/log"):
        for name in files:
            with open(os.path.join(directory, name), "rb") as fh:
                assert s["secret"].encode() not in fh.read(), os.path.join(directory, name)


def test_no_process_of_the_session_keeps_the_secret_in_its_environment(running):
    """As shjuser1's own code inside the session (a notebook reading /proc/1/environ, or any
    process of the container): no process of the container, PID 1 (tini) and JupyterLab
    included, has the token in its environment, Podman's record of the container does not
    hold it, and the config file that handed it to JupyterLab is gone once it answers."""
    s = running
    for pid in _container_pids(s):
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        assert s["secret"].encode() not in env, f"pid {pid} ({argv}) keeps it in its environment"
        assert b"JUPYTER_TOKEN=" not in env, f"pid {pid} ({argv}) has JUPYTER_TOKEN"
    out = bed.podman(VICTIM, "exec", s["container"], "cat", "/proc/1/environ")
    assert out.returncode == 0 and s["secret"] not in out.stdout, "PID 1 shows the secret inside"
    inspect = bed.podman(VICTIM, "inspect", s["container"])
    assert inspect.returncode == 0, inspect.stderr
    assert s["secret"] not in inspect.stdout, "Podman's record of the container holds the secret"
    auth = f"/run/user/{s['uid']}/sh-jupyter/{s['session_id'][:8]}.auth"
    assert not os.path.lexists(auth), f"{auth} outlived JupyterLab's start"
    out = bed.podman(VICTIM, "exec", s["container"], "sh", "-c",
                     "ls -A /run/sh-jupyter-auth 2>&1; echo end")
    assert out.stdout.split() in (["end"], []) or "No such file" in out.stdout, out.stdout
