"""The monthly maintenance users are warned of: the node goes down with sessions running.

Simulated as a reboot would look to the node: slurmd stops, every process of the sessions
(their slurmstepd, supervisor, conmon, JupyterLab, the user's rootless pause process) is killed,
/run/user/UID is cleared, and slurmd comes back. Restarting slurmd alone must not disturb
running sessions.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from sh_jupyter.slurm import config as slurm_config

import bed

U1 = bed.USERS[0]
REPO = Path(__file__).resolve().parents[2]
SLURMD_PID = "/run/sh-jupyter-testbed/slurm/slurmd.pid"
FINAL = ("NODE_FAIL", "CANCELLED", "FAILED", "COMPLETED", "TIMEOUT", "BOOT_FAIL", "GONE")


def _slurmd_pid() -> int | None:
    try:
        with open(SLURMD_PID, encoding="ascii") as fh:
            pid = int(fh.read().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def _stop_slurmd() -> None:
    pid = _slurmd_pid()
    assert pid, "slurmd is not running"
    os.kill(pid, signal.SIGTERM)
    bed.wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "slurmd to stop")


def _start_slurmd() -> None:
    """The test bed's own step starts slurmd again and waits until the node is usable."""
    out = subprocess.run(["bash", str(REPO / "testbed/steps/60-slurm.sh")], capture_output=True,
                         text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _pids(match) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read()
            uid = os.stat(f"/proc/{pid}").st_uid
        except (FileNotFoundError, ProcessLookupError):
            continue
        if match(uid, argv):
            found.append(int(pid))
    return found


def _crash(user: str, job_ids: list[str]) -> None:
    """Kill what a reboot kills: the jobs' slurmstepd and every process of the user."""
    uid = pwd.getpwnam(user).pw_uid
    steps = [f"[{j}.".encode() for j in job_ids]
    victims = _pids(lambda u, argv: u == uid or (argv.startswith(b"slurmstepd")
                                                   and any(s in argv for s in steps)))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    bed.wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in victims), 30,
                 "the session processes to die")
    shutil.rmtree(f"/run/user/{uid}")  # tmpfs after a reboot: gone


def _slurm_seconds(key: str) -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         check=True)
    return int(slurm_config.parse(out.stdout)[key].split()[0])  # "10 sec"


def test_sessions_end_with_the_node_and_the_next_one_starts_clean(cfg, cleanup):
    started = [bed.start(U1, cfg, cleanup)[0] for _ in range(2)]
    jobs = [s["job_id"] for s in started]
    # A node that comes back tells slurmctld which jobs it still runs; slurmctld ends a missing
    # batch job only when the job was last seen more than BatchStartTimeout + MessageTimeout
    # ago (before that it might still be launching). A reboot takes minutes; ours takes as
    # long as that window, so the node's return is what ends the jobs, as after maintenance.
    down_for = _slurm_seconds("BatchStartTimeout") + min(10, _slurm_seconds("MessageTimeout")) + 2
    _stop_slurmd()
    try:
        _crash(U1, jobs)
        crashed = time.monotonic()
        bed.wait_for(lambda: time.monotonic() - crashed > down_for, down_for + 30,
                     "the node's downtime", interval=1)
    finally:
        _start_slurmd()
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) in FINAL, 180, f"job {job} to end",
                     interval=1)
    states = {bed.job_state(j) for j in jobs}
    assert states <= {"NODE_FAIL", "CANCELLED", "FAILED"}, states
    uid = pwd.getpwnam(U1).pw_uid
    for s in started:
        sid = s["session_id"]
        card = bed.card(U1, sid, cfg)
        assert card["status"] == "Completed" and card["failed"], card
        assert "node" in card["reason"], card
        # The epilog (run when slurmd came back) left nothing of the session behind.
        bed.wait_for(lambda i=sid: f"epcc-ces-jupyter-{i}" not in bed.containers_of(U1), 60,
                     "the stale container to be removed")
        assert not os.path.exists(f"/var/tmp/sh-jupyter/{U1}/scratch/{sid}")
        leftovers = os.listdir(f"/run/user/{uid}/sh-jupyter") \
            if os.path.isdir(f"/run/user/{uid}/sh-jupyter") else []
        assert not [n for n in leftovers if n.startswith(sid[:8])], leftovers
    # The user's next session on the node starts without manual steps.
    sub, ready = bed.start(U1, cfg, cleanup)
    assert ready["status"] == "Running"
    out = bed.as_user(U1, [bed.SH, "--config", cfg, "cancel", sub["session_id"]])
    assert out.returncode == 0, out.stderr


def test_restarting_slurmd_leaves_running_sessions_healthy(cfg, cleanup):
    cfg = bed.write_config(bed.E2E_PORTS + "[session]\nhealth_interval = 5\n")
    sub, _ = bed.start(U1, cfg, cleanup)
    _stop_slurmd()
    _start_slurmd()
    restarted = time.time()

    def checked_after_restart() -> bool:
        with open(os.path.join(sub["session_dir"], "status.json"), encoding="utf-8") as fh:
            status = json.load(fh)
        stamp = status.get("checked_at")
        return bool(stamp) and bed.iso_time(stamp) > restarted

    bed.wait_for(checked_after_restart, 30, "a health check after slurmd's restart")
    assert bed.job_state(sub["job_id"]) == "RUNNING"
    assert bed.card(U1, sub["session_id"], cfg)["status"] == "Running"
    subprocess.run(["scancel", sub["job_id"]], check=True)
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "CANCELLED", 30, "job CANCELLED")
    bed.wait_for(lambda: f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U1),
                 30, "container removal")
