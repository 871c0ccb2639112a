"""Sessions through the real Slurm cluster, as unprivileged users, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import bed

U1, U2 = bed.USERS
PORTS = bed.E2E_PORTS


def _lab_ok(url: str) -> bool:
    url = url.replace(url.split("/")[2].split(":", maxsplit=1)[0], "127.0.0.1", 1)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status == 200 and b"JupyterLab" in resp.read()


def _shutdown(conn: dict) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{conn['port']}/api/shutdown", method="POST",
                                 headers={"Authorization": f"token {conn['password']}"})
    urllib.request.urlopen(req, timeout=10).close()


def test_submit_wait_connect_and_shut_down(cfg, cleanup):
    sub, ready = bed.start(U1, cfg, cleanup, "--cpus", "2", "--memory", "2", "--time", "1:00:00")
    assert ready["status"] == "Running"
    assert _lab_ok(ready["connect_url"])
    card = bed.card(U1, sub["session_id"], cfg)
    assert card["status"] == "Running" and card["cpus"] == 2 and card["memory_gib"] == 2
    assert card["message"] == ("JupyterLab is running in Podman container "
                               f"epcc-ces-jupyter-{sub['session_id']}")
    assert 0 < card["time_remaining"] <= 3600 and card["connection_timeout"] == 180
    assert bed.job_state(sub["job_id"]) == "RUNNING"
    assert subprocess.run(["squeue", "-h", "-j", sub["job_id"], "-o", "%j"], capture_output=True,
                          text=True, check=False).stdout.strip() == "jupyter_app"

    _shutdown(bed.connection(U1, sub["session_id"], cfg))  # File > Shut Down
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "COMPLETED", 60, "job COMPLETED")
    assert f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U1)
    card = bed.card(U1, sub["session_id"], cfg)
    assert card["status"] == "Completed" and not card["failed"], card
    with open(os.path.join(sub["session_dir"], "status.json"), encoding="utf-8") as fh:
        status = json.load(fh)
    stamps = [status[k] for k in ("created_at", "started_at", "ready_at", "ended_at")]
    assert all(stamps) and stamps == sorted(stamps)  # Queued -> Starting -> Running -> Completed


def _gone_after(user: str, sub: dict, action, within: float) -> float:
    name = f"epcc-ces-jupyter-{sub['session_id']}"
    assert name in bed.containers_of(user)
    t0 = time.monotonic()
    action()
    bed.wait_for(lambda: name not in bed.containers_of(user), within, f"{name} removal",
                 interval=0.2)
    return time.monotonic() - t0


def _next_session_starts(user: str, cfg: str, cleanup: list[str]) -> None:
    """After any way of ending, the user's Podman still works (no `podman system migrate`)."""
    sub, ready = bed.start(user, cfg, cleanup, "--time", "10")
    assert ready["status"] == "Running"
    out = bed.as_user(user, [bed.SH, "--config", cfg, "cancel", sub["session_id"]])
    assert out.returncode == 0, out.stderr


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        line = next(line for line in fh if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_an_idle_session_keeps_only_the_small_wait_and_a_cancel_ends_it(testbed, cleanup):
    """While it runs, the batch step's process is the small idle wait (not the 31 MB
    supervisor), health checks keep the card fresh, and a cancel still ends everything."""
    cfg = bed.write_config(bed.E2E_PORTS + "[session]\nhealth_interval = 5\n")
    sub, _ = bed.start(U1, cfg, cleanup)
    pid = bed.supervisor_of(U1, sub["session_id"])
    assert pid is not None
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().decode().rstrip("\0").split("\0")
    assert argv[-5:-2] == ["sh-jupyter", "run", "(idle)"], argv
    assert _rss_mb(pid) <= 16, f"the idle wait holds {_rss_mb(pid):.1f} MB"
    status_file = os.path.join(sub["session_dir"], "status.json")

    def checked() -> str:
        with open(status_file, encoding="utf-8") as fh:
            return json.load(fh).get("checked_at") or ""
    first = checked()
    bed.wait_for(lambda: checked() not in ("", first), 30, "a health check on the card")
    assert bed.supervisor_of(U1, sub["session_id"]) == pid  # checks stay in the small wait
    scratch = bed.scratch_dir(U1, sub["session_id"])
    assert os.path.isdir(scratch)
    subprocess.run(["scancel", sub["job_id"]], check=True)
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "CANCELLED", 30, "job CANCELLED")
    assert f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U1)
    assert not os.path.exists(scratch)
    card = bed.card(U1, sub["session_id"], cfg)
    assert card["status"] == "Completed" and not card["failed"], card
    assert "received SIGTERM" in bed.session_log(sub["session_dir"])


def test_scancel_removes_the_container_before_killwait(cfg, cleanup):
    sub, _ = bed.start(U1, cfg, cleanup)
    took = _gone_after(U1, sub, lambda: subprocess.run(["scancel", sub["job_id"]], check=True),
                       10)
    assert took < 10  # KillWait on the test bed
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "CANCELLED", 30, "job CANCELLED")
    _next_session_starts(U1, cfg, cleanup)


def test_sigkilled_supervisor_is_cleaned_by_the_epilog(cfg, cleanup):
    sub, _ = bed.start(U1, cfg, cleanup)
    pid = bed.supervisor_of(U1, sub["session_id"])
    assert pid, "supervisor process not found"
    scratch = f"/var/tmp/sh-jupyter/{U1}/scratch/{sub['session_id']}"
    assert os.path.isdir(scratch)
    _gone_after(U1, sub, lambda: os.kill(pid, signal.SIGKILL), 60)
    card = bed.card(U1, sub["session_id"], cfg)
    assert card["status"] == "Completed" and card["failed"], card
    # The epilog also removed the scratch and ended the session's orphaned API service.
    bed.wait_for(lambda: not os.path.exists(scratch), 30, "scratch removal")
    marker = f"/sh-jupyter/{sub['session_id'][:8]}.sock".encode()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and marker in _cmdline(p)]
    _next_session_starts(U1, cfg, cleanup)


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def test_walltime_expiry_ends_the_session(cfg, cleanup):
    sub, _ = bed.start(U1, cfg, cleanup, "--time", "1")
    name = f"epcc-ces-jupyter-{sub['session_id']}"
    bed.wait_for(lambda: name not in bed.containers_of(U1), 150, "walltime teardown",
                 interval=1)
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "TIMEOUT", 60, "job TIMEOUT")
    _next_session_starts(U1, cfg, cleanup)


def test_connection_timeout_cancels_the_job_with_the_reason_on_the_card(testbed, cleanup):
    cfg = bed.write_config(PORTS + '[session]\nconnection_timeout = 10\n'
                           '[image]\ncommand = ["sh", "-c", "sleep 600"]\n')
    out = bed.submit(U1, "--wait", config=cfg, timeout=120)
    got = bed.docs(out.stdout)
    cleanup.append(got[0]["job_id"])
    assert out.returncode == 3, out.stdout + out.stderr
    assert got[-1]["status"] == "Completed" and got[-1]["failed"]
    bed.wait_for(lambda: bed.job_state(got[0]["job_id"]) == "CANCELLED", 30, "job CANCELLED")
    card = bed.card(U1, got[0]["session_id"], cfg)
    assert "did not answer within the connection timeout" in card["reason"], card


def test_two_users_two_sessions_each_are_isolated(cfg, cleanup):
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(bed.start, u, cfg, cleanup) for u in (U1, U1, U2, U2)]
        results = [f.result() for f in futures]
    ports = {int(r[1]["connect_url"].split(":")[2].split("/")[0]) for r in results}
    names = {r[0]["session_id"] for r in results}
    assert len(ports) == 4 and len(names) == 4
    (s1, _), (s1b, _), (s2, _), _ = results
    # Another user can neither read the connection file nor cancel the session.
    conn_file = os.path.join(s1["session_dir"], "connection.yml")
    assert bed.as_user(U2, ["cat", conn_file]).returncode != 0
    assert bed.as_user(U2, ["scancel", s1["job_id"]]).returncode != 0
    assert bed.job_state(s1["job_id"]) == "RUNNING"
    # U1's cancel and the epilog it triggers touch only that one job.
    out = bed.as_user(U1, [bed.SH, "--config", cfg, "cancel", s1["session_id"]])
    assert out.returncode == 0, out.stderr
    bed.wait_for(lambda: bed.job_state(s1["job_id"]) == "CANCELLED", 30, "job CANCELLED")
    bed.wait_for(lambda: f"epcc-ces-jupyter-{s1['session_id']}" not in bed.containers_of(U1),
                 30, "container removal")
    assert f"epcc-ces-jupyter-{s1b['session_id']}" in bed.containers_of(U1)
    assert f"epcc-ces-jupyter-{s2['session_id']}" in bed.containers_of(U2)
    assert bed.job_state(s1b["job_id"]) == "RUNNING" and bed.job_state(s2["job_id"]) == "RUNNING"
