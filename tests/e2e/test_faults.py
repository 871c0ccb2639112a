"""Faults found when the product was tried as a new user and an operator would: each on the real
path, a session through Slurm."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import lab

import bed

U1 = bed.USERS[0]
# JupyterLab starts three seconds late, so the session's Podman API service is certainly up
# while the supervisor waits for it (the options sh-jupyter appends land in "$@").
SLOW_START = '[image]\ncommand = ["sh", "-c", "sleep 3; exec jupyter lab \\"$@\\"", "sh"]\n'


def _status(session_dir: str) -> dict:
    with open(os.path.join(session_dir, "status.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _procs(user: str, *needles: bytes) -> list[int]:
    """Pids of the user's processes whose argv contains every needle."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if all(n in argv for n in needles):
            found.append(int(pid))
    return found


def _api_services(user: str, session_id: str) -> list[int]:
    return _procs(user, b"system\0service", f"/{session_id[:8]}.sock".encode())


def _runtime_leftovers(user: str, session_id: str) -> list[str]:
    directory = f"/run/user/{pwd.getpwnam(user).pw_uid}/sh-jupyter"
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return [n for n in names if n.startswith(session_id[:8])]


def _lab_answers(conn: dict) -> bool:
    url = f"http://127.0.0.1:{conn['port']}/api/status"
    req = urllib.request.Request(url, headers={"Authorization": f"token {conn['password']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status == 200


def _ended(job_id: str, state: str, within: float) -> None:
    bed.wait_for(lambda: bed.job_state(job_id) == state, within, f"job {job_id} {state}",
                 interval=0.5)


def test_a_killed_api_service_does_not_end_the_session(cleanup):
    """Kill -9 the session's Podman API service while JupyterLab starts: the session still
    becomes ready, runs with no API service at all while idle, and a cancel leaves nothing."""
    cfg = bed.write_config(bed.E2E_PORTS + "[session]\nhealth_interval = 5\n" + SLOW_START)
    out = bed.submit(U1, config=cfg)
    assert out.returncode == 0, out.stderr
    sub = json.loads(out.stdout)
    cleanup.append(sub["job_id"])
    sid = sub["session_id"]
    bed.wait_for(lambda: _status(sub["session_dir"]).get("port"), 60, "the container to start")
    services = _api_services(U1, sid)
    assert len(services) == 1, services  # JupyterLab is still sleeping: the service is up
    killed_at = time.time()
    os.kill(services[0], signal.SIGKILL)

    bed.wait_for(lambda: _status(sub["session_dir"])["phase"] != "Starting", 60, "readiness")
    assert _status(sub["session_dir"])["phase"] == "Running", bed.session_log(sub["session_dir"])
    conn = bed.connection(U1, sid, cfg)
    assert _lab_answers(conn)
    # Supervision goes on: health checks after the kill, with no API service held meanwhile.
    bed.wait_for(lambda: _status(sub["session_dir"]).get("checked_at"), 30, "a health check")
    bed.wait_for(lambda: bed.iso_time(_status(sub["session_dir"])["checked_at"]) > killed_at, 30,
                 "a health check after the kill")
    assert _api_services(U1, sid) == [] and _runtime_leftovers(U1, sid) == []
    assert bed.card(U1, sid, cfg)["status"] == "Running"

    subprocess.run(["scancel", sub["job_id"]], check=True)
    _ended(sub["job_id"], "CANCELLED", 30)
    bed.wait_for(lambda: f"epcc-ces-jupyter-{sid}" not in bed.containers_of(U1), 30,
                 "container removal")
    assert _api_services(U1, sid) == [] and _runtime_leftovers(U1, sid) == []


def _idle_cfg() -> str:
    return bed.write_config(bed.E2E_PORTS + "[session]\nidle_timeout = 20\nhealth_interval = 5\n")


def _checked_since_ready(session_dir: str) -> float:
    status = _status(session_dir)
    if not status.get("checked_at"):
        return 0.0
    return bed.iso_time(status["checked_at"]) - bed.iso_time(status["ready_at"])


def _idle_session(cleanup: list[str], cfg: str, hold: str) -> tuple[dict, str]:
    """One session: held busy by `hold` ("", "kernel" or "terminal"); returns its final card
    and what was seen while held."""
    sub, _ = bed.start(U1, cfg, cleanup)
    sid = sub["session_id"]
    conn = bed.connection(U1, sid, cfg)
    port, token = int(conn["port"]), conn["password"]
    seen = ""
    if hold:
        if hold == "kernel":
            kernel = lab.api(port, token, "POST", "api/kernels", {"name": "python3"})
            lab.start_in_kernel(port, token, kernel["id"], "import time; time.sleep(900)")
        else:
            terminal = lab.api(port, token, "POST", "api/terminals")
        # Held across the idle timeout and two more health checks: not ended.
        bed.wait_for(lambda: _checked_since_ready(sub["session_dir"]) >= 20 + 2 * 5, 120,
                     "health checks past the idle timeout")
        seen = bed.card(U1, sid, cfg)["status"]
        if hold == "kernel":
            lab.api(port, token, "DELETE", f"api/kernels/{kernel['id']}")
        else:
            lab.api(port, token, "DELETE", f"api/terminals/{terminal['name']}")
    # Idle now: the session ends by itself, within idle_timeout + health_interval (+ slack).
    _ended(sub["job_id"], "COMPLETED", 20 + 5 + 30)
    assert f"epcc-ces-jupyter-{sid}" not in bed.containers_of(U1)
    return bed.card(U1, sid, cfg), seen


def test_an_idle_session_ends_itself_and_a_busy_one_does_not(cleanup):
    cfg = _idle_cfg()
    with ThreadPoolExecutor(3) as pool:
        results = [f.result() for f in [pool.submit(_idle_session, cleanup, cfg, hold)
                                         for hold in ("", "kernel", "terminal")]]
    for card, _ in results:
        assert card["status"] == "Completed" and not card["failed"], card
        assert "without activity (session.idle_timeout = 20 s)" in card["reason"], card
    assert [seen for _, seen in results] == ["", "Running", "Running"]


def test_a_killed_jupyterlab_gets_a_short_true_reason(cfg, cleanup):
    sub, ready = bed.start(U1, cfg, cleanup)
    port = ready["connect_url"].split(":")[2].split("/")[0]
    lab_pids = _procs(U1, b"jupyter", f"--port={port}".encode())
    assert lab_pids, "JupyterLab's process not found"
    os.kill(min(lab_pids), signal.SIGKILL)
    _ended(sub["job_id"], "FAILED", 60)
    card = bed.card(U1, sub["session_id"], cfg)
    assert card["status"] == "Completed" and card["failed"], card
    assert card["reason"].startswith("JupyterLab was killed by SIGKILL (not out of memory)")
    assert "\n" not in card["reason"] and len(card["reason"]) <= 240, card["reason"]
    log = bed.session_log(sub["session_dir"])
    assert "out-of-memory kill: no" in log and "its last output:" in log


def test_jupyterlab_killed_for_memory_says_out_of_memory(cleanup):
    cfg = bed.write_config(bed.E2E_PORTS + '[image]\ncommand = ["python3", "-c", '
                           '"b = bytearray(3 << 30); print(len(b))"]\n')
    out = bed.submit(U1, "--wait", "--memory", "1", config=cfg, timeout=120)
    got = bed.docs(out.stdout)
    cleanup.append(got[0]["job_id"])
    card = bed.card(U1, got[0]["session_id"], cfg)
    assert card["failed"] and "out-of-memory killer" in card["reason"], card
    assert "1 GiB" in card["reason"] and len(card["reason"]) <= 240, card


def _network_helper() -> tuple[str, bytes]:
    """The rootless network helper a session runs with on this platform, as `auto` picks it:
    pasta from Podman 5 where it is installed, slirp4netns before."""
    podman = bed.versions()["PODMAN_VERSION"]
    if int(podman.split(".")[0]) >= 5 and any(
            os.path.exists(os.path.join(d, "pasta")) for d in ("/usr/bin", "/usr/local/bin")):
        return "pasta", b"pasta"
    return "slirp4netns", b"slirp4netns"


def test_a_killed_network_helper_ends_the_session_with_the_reason(cleanup):
    """Kill -9 the session's rootless network helper while it runs: JupyterLab is unreachable
    at once. The supervisor's health checks act: within health_interval + (health_failures - 1)
    x 5 s (+ probe timeouts) the card says JupyterLab stopped answering and names the dead
    helper, the job ends, and nothing of the session is left."""
    cfg = bed.write_config(bed.E2E_PORTS + "[session]\nhealth_interval = 5\n"
                           "health_failures = 2\n")
    sub, _ = bed.start(U1, cfg, cleanup)
    sid = sub["session_id"]
    scratch = bed.scratch_dir(U1, sid)
    assert os.path.isdir(scratch), scratch  # what the end must remove
    mode, needle = _network_helper()
    helpers = _procs(U1, needle)
    assert helpers, f"no {mode} process of {U1}"
    for pid in helpers:  # one session of this user on the node: its helper(s)
        os.kill(pid, signal.SIGKILL)
    _ended(sub["job_id"], "FAILED", 5 + 5 + 10 + 30)
    card = bed.card(U1, sid, cfg)
    assert card["status"] == "Completed" and card["failed"], card
    assert card["reason"].startswith("JupyterLab stopped answering on port "), card["reason"]
    assert f"its network helper ({mode}) is gone" in card["reason"], card["reason"]
    assert f"epcc-ces-jupyter-{sid}" not in bed.containers_of(U1)
    assert _api_services(U1, sid) == [] and _runtime_leftovers(U1, sid) == []
    assert not os.path.lexists(scratch), scratch
