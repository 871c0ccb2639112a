"""The fault matrix: `kill -9` each process a session consists of, while it is Starting and while
it is Running, through real Slurm sessions, and check the stated outcome.

A session's processes (seen with `ps --forest` on both platforms): the supervisor, which IS the
batch step's process (the batch script execs it: slurmstepd's child); the container's conmon,
its init (tini, the image's entrypoint) and JupyterLab under it; the network helper
(slirp4netns on Podman 4.3, pasta on Podman 5.4: each forwards the port itself, so no
rootlessport runs); the user's rootless pause process (`catatonit -P`, made by the prolog,
outside the job); and the Podman API service, which runs only while the session starts and
while it ends.

Every outcome is one of two: the session carries on (it stays Running, or becomes Running, and
answers HTTP with its token), or it ends within the row's bound with a true one-line reason on
the card, the job ends, and nothing of the session is left (container, API socket and log,
scratch, processes).

The rows run side by side (one module fixture runs every selected row in a thread pool; each
row's test then reports its own result), so the whole matrix costs about one session's time
plus the slowest bound.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

import bed

U1, U2 = bed.USERS
HEALTH_INTERVAL, HEALTH_FAILURES, RETRY = 5, 2, 5
CHECK_BOUND = HEALTH_INTERVAL + (HEALTH_FAILURES - 1) * RETRY + 10  # the documented bound
SLOW_SECONDS = 12  # JupyterLab's command sleeps this long first: Starting lasts that long
BASE = (bed.E2E_PORTS + f"[session]\nhealth_interval = {HEALTH_INTERVAL}\n"
        f"health_failures = {HEALTH_FAILURES}\n")
SLOW = (f'[image]\ncommand = ["sh", "-c", "sleep {SLOW_SECONDS}; exec jupyter lab \\"$@\\"", '
        '"sh"]\n')
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts")


@dataclass(frozen=True)
class Row:
    process: str
    phase: str  # "Starting" or "Running"
    outcome: str  # "carries on" or "ends"
    bound: float  # seconds from the kill to the final card (ends), 0 for "carries on"
    reason: str = ""  # what the card's reason starts with (ends)
    user: str = U1

    @property
    def id(self) -> str:
        return f"{self.process}-{self.phase}"


ROWS = (
    Row("jupyterlab", "Running", "ends", 15,
        "JupyterLab was killed by SIGKILL (not out of memory)"),
    Row("jupyterlab", "Starting", "ends", 15,
        "JupyterLab was killed by SIGKILL during start-up (not out of memory)"),
    Row("init", "Running", "ends", 15, "JupyterLab was killed by SIGKILL (not out of memory)"),
    Row("init", "Starting", "ends", 15,
        "JupyterLab was killed by SIGKILL during start-up (not out of memory)"),
    # pasta outlives conmon; slirp4netns does not (conmon holds its exit pipe): see _resolved
    Row("conmon", "Running", "carries on", 0),
    Row("conmon", "Starting", "carries on", 0),
    Row("network-helper", "Running", "ends", CHECK_BOUND, "JupyterLab stopped answering on port "),
    Row("network-helper", "Starting", "ends", 15, "JupyterLab cannot be reached on port "),
    Row("pause", "Running", "carries on", 0, user=U2),
    Row("pause", "Starting", "carries on", 0, user=U2),
    Row("supervisor", "Running", "ends", 15,
        "the job ended without a report from its supervisor (FAILED) while the session was "
        "Running"),
    Row("supervisor", "Starting", "ends", 15,
        "the job ended without a report from its supervisor (FAILED) while the session was "
        "Starting"),
    Row("api-service", "Running", "carries on", 0),  # none runs: nothing to kill
    Row("api-service", "Starting", "carries on", 0),
)


def network_mode() -> str:
    """The helper a session runs with here, as podman.network = "auto" picks it: pasta from
    Podman 5 where it is installed, slirp4netns before."""
    if int(bed.versions()["PODMAN_VERSION"].split(".")[0]) >= 5 and any(
            os.path.exists(os.path.join(d, "pasta")) for d in ("/usr/bin", "/usr/local/bin")):
        return "pasta"
    return "slirp4netns"


def _resolved(row: Row) -> Row:
    """The row as it holds on this platform. A killed conmon takes slirp4netns with it (the
    helper's exit pipe closes), so with slirp4netns the session ends like a killed helper,
    and the card says conmon went first; pasta runs on by itself."""
    if row.process != "conmon" or network_mode() != "slirp4netns":
        return row
    if row.phase == "Running":
        return replace(row, outcome="ends", bound=CHECK_BOUND,
                       reason="JupyterLab stopped answering on port ")
    return replace(row, outcome="ends", bound=15, reason="JupyterLab cannot be reached on port ")


# -- finding a session's processes in /proc ------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _argv(pid: int) -> list[str]:
    return [a for a in _read(f"/proc/{pid}/cmdline").split("\0") if a]


def _start_time(pid: int) -> str:
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def _children(pid: int) -> list[int]:
    return [int(p) for p in _read(f"/proc/{pid}/task/{pid}/children").split()]


def _procs_of(uid: int) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                out.append(int(pid))
        except OSError:
            continue
    return out


def _inspect(user: str, name: str) -> dict:
    out = bed.podman(user, "inspect", "--format", "json", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def _network_helpers(uid: int, netns: str) -> list[int]:
    return [pid for pid in _procs_of(uid)
            if os.path.basename((_argv(pid) or [""])[0]) in ("slirp4netns", "pasta", "passt",
                                                                "pasta.avx2")
            and any(netns in a for a in _argv(pid))]


def _is_pause(argv: list[str]) -> bool:
    return bool(argv) and argv[0].split("/")[-1] == "catatonit" and "-P" in argv


def _pause_processes(uid: int) -> list[int]:
    # Each process's argv is read once: one that exits between two reads must not count.
    return [pid for pid in _procs_of(uid) if _is_pause(_argv(pid))]


def _api_services(uid: int, sid: str) -> list[int]:
    return [pid for pid in _procs_of(uid)
            if "service" in _argv(pid) and any(a.endswith(f"/{sid[:8]}.sock") for a in _argv(pid))]


def _batch_process(job_id: str) -> int:
    """The process Slurm started for the job's batch step: slurmstepd [JOB.batch]'s child."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = _argv(int(pid))
        if argv and argv[0].startswith("slurmstepd") and f"[{job_id}.batch]" in " ".join(argv):
            kids = _children(int(pid))
            assert len(kids) == 1, f"slurmstepd [{job_id}.batch] has children {kids}"
            return kids[0]
    raise AssertionError(f"no slurmstepd for job {job_id}'s batch step")


@dataclass
class Tree:
    """A session's processes, as (pid, start time) so a reused pid is never mistaken."""

    supervisor: int
    conmon: int
    init: int
    command: int  # the container's command under init (JupyterLab, or its sleeping shell)
    helpers: list[int]
    api: list[int]
    pause: list[int]

    def session_pids(self) -> dict[int, str]:
        pids = [self.supervisor, self.conmon, self.init, self.command, *self.helpers, *self.api]
        return {pid: _start_time(pid) for pid in pids if pid > 0}


def _tree(user: str, sub: dict) -> Tree:
    uid = pwd.getpwnam(user).pw_uid
    sid = sub["session_id"]
    info = _inspect(user, f"epcc-ces-jupyter-{sid}")
    state = info["State"]
    init = int(state["Pid"])
    kids = _children(init)
    assert len(kids) == 1, f"the container's init {init} has children {kids}"
    supervisor = bed.supervisor_of(user, sid) or 0
    assert supervisor, "the supervisor process was not found"
    # The supervisor is the batch step's process itself: the batch script execs it.
    assert _batch_process(sub["job_id"]) == supervisor
    netns = (info.get("NetworkSettings") or {}).get("SandboxKey") or ""
    assert netns, info.get("NetworkSettings")
    return Tree(supervisor, int(state["ConmonPid"]), init, kids[0],
                _network_helpers(uid, netns), _api_services(uid, sid), _pause_processes(uid))


# -- the session's state ---------------------------------------------------------------------
def _status(sub: dict) -> dict:
    with open(os.path.join(sub["session_dir"], "status.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _lab_answers(conn: dict) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{conn['port']}/api/status",
                                 headers={"Authorization": f"token {conn['password']}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int, started: str) -> bool:
    return bool(started) and _start_time(pid) == started


def _leftovers(user: str, sub: dict, pids: dict[int, str]) -> list[str]:
    """Whatever of the session is still there (empty when nothing is)."""
    sid = sub["session_id"]
    uid = pwd.getpwnam(user).pw_uid
    left = [f"container {n}" for n in bed.containers_of(user, sid)]
    runtime = f"/run/user/{uid}/sh-jupyter"
    if os.path.isdir(runtime):
        left += [f"runtime file {n}" for n in os.listdir(runtime) if n.startswith(sid[:8])]
    scratch = bed.scratch_dir(user, sid)
    if os.path.lexists(scratch):
        left.append(f"scratch {scratch}")
    left += [f"process {pid} {' '.join(_argv(pid))[:80]}" for pid, started in pids.items()
             if _alive(pid, started)]
    return left


def _submit(user: str, cfg: str, cleanup: list[str]) -> dict:
    out = bed.submit(user, "--memory", "1", config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    sub = json.loads(out.stdout)
    cleanup.append(sub["job_id"])
    return sub


def _until_running(user: str, sub: dict, cfg: str, timeout: float = 120) -> dict:
    def running() -> bool:
        phase = _status(sub).get("phase")
        assert phase in ("Queued", "Starting", "Running"), \
            f"{phase}: {_status(sub).get('reason')}\n{bed.session_log(sub['session_dir'])}"
        return phase == "Running"
    bed.wait_for(running, timeout, f"session {sub['session_id'][:8]} Running", interval=0.2)
    return bed.connection(user, sub["session_id"], cfg)


def _container_started(sub: dict) -> bool:
    try:
        return bool(_status(sub).get("port"))
    except (OSError, ValueError):
        return False


def _victims(row: Row, tree: Tree) -> list[int]:
    return {"jupyterlab": [tree.command], "init": [tree.init], "conmon": [tree.conmon],
            "network-helper": tree.helpers, "pause": tree.pause,
            "supervisor": [tree.supervisor], "api-service": tree.api}[row.process]


def _job_end(job_id: str, timeout: float) -> str:
    return str(bed.wait_for(lambda: (s := bed.job_state(job_id)) in FINAL and s, timeout,
                            f"job {job_id} to end", interval=0.2))


# -- one row ---------------------------------------------------------------------------------
def run_row(row: Row, cleanup: list[str], cfgs: dict[str, str]) -> dict:
    """Kill the row's process in the row's phase; check the outcome; return what was measured."""
    row = _resolved(row)
    user = row.user
    cfg = cfgs[row.phase]
    sub = _submit(user, cfg, cleanup)
    sid, job = sub["session_id"], sub["job_id"]
    if row.phase == "Starting":
        bed.wait_for(lambda: _container_started(sub), 120, "the container to start",
                     interval=0.1)
        conn = None
    else:
        conn = _until_running(user, sub, cfg)
    tree = _tree(user, sub)
    pids = tree.session_pids()
    measured: dict = {"row": row.id, "podman": bed.versions().get("PODMAN_VERSION", "?"),
                      "network": network_mode(), "outcome": row.outcome}

    if row.process == "api-service" and row.phase == "Running":
        # Nothing to kill: the supervisor stops its API service right after Running is written.
        uid = pwd.getpwnam(user).pw_uid
        bed.wait_for(lambda: not _api_services(uid, sid), 10,
                     "the API service to stop once the session runs", interval=0.1)
        victims: list[int] = []
    else:
        victims = _victims(row, tree)
        assert victims, f"no {row.process} process found while {row.phase}"
    killed_at = time.time()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    phase_then = _status(sub)["phase"]
    assert phase_then == row.phase, f"killed too late: the session was already {phase_then}"

    if row.outcome == "carries on":
        conn = conn or _until_running(user, sub, cfg)
        # Supervision goes on: a health check after the kill found JupyterLab answering.
        bed.wait_for(lambda: bed.iso_time(_status(sub).get("checked_at") or "1970-01-01T00:00:00Z")
                     > killed_at, 3 * HEALTH_INTERVAL + 10, "a passing health check after the kill",
                     interval=0.2)
        assert _lab_answers(conn), "JupyterLab does not answer with its token"
        card = bed.card(user, sid, cfg)
        assert card["status"] == "Running" and not card["failed"], card
        cancelled = time.time()
        subprocess.run(["scancel", job], check=True)
        state = _job_end(job, 60)
        measured["cancel_to_end_s"] = round(time.time() - cancelled, 1)
        assert state == "CANCELLED", state
        card = bed.card(user, sid, cfg)
        assert card["status"] == "Completed" and card["reason"].startswith("cancelled"), card
    else:
        def ended() -> bool:
            try:
                return bed.card(user, sid, cfg)["status"] == "Completed"
            except AssertionError:
                return False
        bed.wait_for(ended, row.bound + 30, "the card to say Completed", interval=0.2)
        measured["kill_to_card_s"] = round(time.time() - killed_at, 1)
        state = _job_end(job, 60)
        measured["kill_to_job_end_s"] = round(time.time() - killed_at, 1)
        card = bed.card(user, sid, cfg)
        assert card["failed"], card
        assert card["reason"].startswith(row.reason), card["reason"]
        assert "\n" not in card["reason"] and len(card["reason"]) <= 240, card["reason"]
        assert state == "FAILED", state
        if row.process == "network-helper":
            assert f"its network helper ({network_mode()}) is gone, so nothing reaches it" \
                in card["reason"], card["reason"]
        if row.process == "conmon":
            assert f"its network helper ({network_mode()}) is gone, after conmon, so nothing " \
                "reaches it" in card["reason"], card["reason"]
        assert measured["kill_to_card_s"] <= row.bound, measured
    bed.wait_for(lambda: not _leftovers(user, sub, pids), 30,
                 f"nothing of the session left (still: {_leftovers(user, sub, pids)})")
    measured["state"] = state
    measured["reason"] = bed.card(user, sid, cfg)["reason"]
    if row.process == "pause":
        measured["next_session"] = _next_session_works(user, cfg, cleanup)
    return measured


def _next_session_works(user: str, cfg: str, cleanup: list[str]) -> str:
    """After the pause process was killed, the user's Podman still works on the node and the
    user's next session starts (the prolog makes a pause process again, outside the job)."""
    out = bed.podman(user, "ps", "-a")
    assert out.returncode == 0 and "migrate" not in out.stderr, out.stderr
    sub = _submit(user, cfg, cleanup)
    conn = _until_running(user, sub, cfg)
    assert _lab_answers(conn)
    subprocess.run(["scancel", sub["job_id"]], check=True)
    assert _job_end(sub["job_id"], 60) == "CANCELLED"
    bed.wait_for(lambda: not _leftovers(user, sub, {}), 30, "the next session's leftovers gone")
    return "Running"


# -- all selected rows at once ---------------------------------------------------------------
@pytest.fixture(scope="module")
def outcomes(request, testbed) -> dict[str, object]:
    """Run every selected row side by side; each row's test reports its own outcome. Rows of
    the pause process share their user's Podman, so they run one after the other."""
    cfgs = {"Running": bed.write_config(BASE), "Starting": bed.write_config(BASE + SLOW)}
    wanted = bed.selected_ids(request)
    rows = [row for row in ROWS if row.id in wanted]
    jobs: list[str] = []

    def step(row: Row) -> tuple[str, Callable[[], object]]:
        return row.id, lambda: run_row(row, jobs, cfgs)
    chains = [[step(r)] for r in rows if r.user == U1]
    chains.append([step(r) for r in rows if r.user != U1])
    started = time.monotonic()
    try:
        results = bed.side_by_side(chains)
    finally:
        for job in jobs:
            subprocess.run(["scancel", job], check=False)
        for job in jobs:
            bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING",
                                                                "COMPLETING"),
                         60, f"job {job} to end")
    wall = round(time.monotonic() - started, 1)
    os.makedirs(ARTIFACTS, exist_ok=True)
    name = f"fault-matrix-podman-{bed.versions().get('PODMAN_VERSION', 'unknown')}.json"
    with open(os.path.join(ARTIFACTS, name), "w", encoding="utf-8") as fh:
        json.dump({"wall_s": wall, "rows": {k: v if isinstance(v, dict) else repr(v)
                                            for k, v in results.items()}}, fh, indent=2)
    return results


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_kill_9(row: Row, outcomes: dict[str, object]) -> None:
    result = outcomes.get(row.id)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, dict), f"row {row.id} did not run"
