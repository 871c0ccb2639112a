"""Resources running out, through real Slurm sessions: the user's home full (when a session
starts and while it runs), the node's scratch filesystem full (likewise), and the user's
process limit reached. Each case says why where the user looks (the card; where the card itself
cannot be written, `sh-jupyter status`), leaves nothing half-made, and the next session works
once the resource is back.

The bed (testbed/steps/30-users.sh) gives user shjfull a 64 MiB tmpfs home and mounts a small
tmpfs (4 MiB, 256 inodes) for scratch; the tests fill them and empty them again. Cases that
share a user run one after the other, the others side by side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

import lab

import bed

FULL_USER = "shjfull"
U2 = bed.USERS[1]
# Scratch cases run as shjfull too: a user's rootless Podman keeps the mount namespace its
# pause process was made in, and on a bed that runs for long the other users' pause
# processes are older than the small scratch mount (they would not see it: "statfs ... no
# such file or directory"). A site mounts its scratch at boot, before any of them.
SCRATCH_USER = FULL_USER
SMALL_SCRATCH = "/var/tmp/shj-small-scratch"
HEALTH_INTERVAL = 5
BASE = bed.E2E_PORTS + f"[session]\nhealth_interval = {HEALTH_INTERVAL}\n"
SCRATCH_CFG = BASE + (f'[[mounts]]\nsource = "{SMALL_SCRATCH}/{{user}}/{{session_id}}"\n'
                      'target = "/scratch"\ncreate = true\nephemeral = true\n')
NPROC = 160  # the job's process limit (ulimit -u) in the process-limit case
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


# -- helpers -----------------------------------------------------------------------------
def _status(sub: dict) -> dict:
    with open(os.path.join(sub["session_dir"], "status.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _submit(user: str, cfg: str, cleanup: list[str], env: dict[str, str] | None = None,
            wrapper: tuple[str, ...] = ()) -> dict:
    out = bed.as_user(user, [*wrapper, bed.SH, "--config", cfg, "submit", "--json",
                             "--memory", "1"], env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    sub = json.loads(out.stdout)
    cleanup.append(sub["job_id"])
    return sub


def _job_end(job_id: str, timeout: float = 90) -> str:
    return str(bed.wait_for(lambda: (s := bed.job_state(job_id)) in FINAL and s, timeout,
                            f"job {job_id} to end", interval=0.2))


def _until_running(user: str, sub: dict, cfg: str) -> dict:
    def running() -> bool:
        status = _status(sub)
        assert status["phase"] in ("Queued", "Starting", "Running"), \
            f"{status['phase']}: {status.get('reason')}"
        return status["phase"] == "Running"
    bed.wait_for(running, 120, f"session {sub['session_id'][:8]} Running", interval=0.2)
    return bed.connection(user, sub["session_id"], cfg)


def _lab_answers(conn: dict) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{conn['port']}/api/status",
                                 headers={"Authorization": f"token {conn['password']}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def _leftovers(user: str, sub: dict, scratch_root: str) -> list[str]:
    """What of the session is still there: container, runtime files, scratch, processes."""
    sid = sub["session_id"]
    uid = pwd.getpwnam(user).pw_uid
    left = [f"container {n}" for n in bed.containers_of(user, sid)]
    runtime = f"/run/user/{uid}/sh-jupyter"
    if os.path.isdir(runtime):
        left += [f"runtime file {n}" for n in os.listdir(runtime) if n.startswith(sid[:8])]
    scratch = os.path.join(scratch_root, sid)
    if os.path.lexists(scratch):
        left.append(f"scratch {scratch}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if sid.encode() in argv or sid[:8].encode() + b".sock" in argv or cwd.endswith(sid):
            left.append(f"process {pid} {argv[:80]!r}")
    return left


def _nothing_left(user: str, sub: dict, scratch_root: str) -> None:
    bed.wait_for(lambda: not _leftovers(user, sub, scratch_root), 30,
                 f"nothing of session {sub['session_id'][:8]} left "
                 f"(still: {_leftovers(user, sub, scratch_root)})")


def _fill(directory: str) -> list[str]:
    """Fill the filesystem of `directory` (as root: blocks, then inodes); returns the files
    made, for _unfill. tmpfs keeps nothing back for root, so the user finds it full too."""
    made = []
    big = os.path.join(directory, ".shj-test-fill")
    made.append(big)
    with open(big, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    st = os.statvfs(directory)
    assert st.f_bavail == 0, st
    return made


def _fill_inodes(directory: str) -> list[str]:
    made = []
    for i in range(100000):
        path = os.path.join(directory, f".shj-test-inode-{i}")
        try:
            os.mkdir(path)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            break
        made.append(path)
    assert os.statvfs(directory).f_favail == 0
    return made


def _unfill(made: list[str]) -> None:
    for path in reversed(made):
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(path):
                os.rmdir(path)
            else:
                os.unlink(path)


def _next_session_works(user: str, cfg: str, cleanup: list[str], scratch_root: str) -> None:
    sub = _submit(user, cfg, cleanup)
    conn = _until_running(user, sub, cfg)
    assert _lab_answers(conn)
    subprocess.run(["scancel", sub["job_id"]], check=True)
    assert _job_end(sub["job_id"]) == "CANCELLED"
    _nothing_left(user, sub, scratch_root)


def _default_scratch(user: str) -> str:
    return os.path.dirname(bed.scratch_dir(user, "x"))


# -- the cases ---------------------------------------------------------------------------
def home_full_at_start(cleanup: list[str]) -> dict:
    """The home fills between submit and the job's start: the supervisor cannot write
    status.json (nor output.log: both are in the home). It ends at once, before anything is
    made; `sh-jupyter status` says the job ended without a report and that the session
    directory's filesystem is full."""
    cfg = bed.write_config(BASE)
    home = pwd.getpwnam(FULL_USER).pw_dir
    sub = _submit(FULL_USER, cfg, cleanup, env={"SBATCH_HOLD": "1"})
    made = _fill(home)
    try:
        subprocess.run(["scontrol", "release", sub["job_id"]], check=True)
        released = time.time()
        state = _job_end(sub["job_id"])
        took = round(time.time() - released, 1)
        assert state == "FAILED", state
        out = bed.as_user(FULL_USER, [bed.SH, "--config", cfg, "status", "--json",
                                      sub["session_id"]])
        assert out.returncode == 0, out.stderr
        card = json.loads(out.stdout)
        assert card["status"] == "Completed" and card["failed"], card
        assert card["reason"] == (
            "the job ended without a report from its supervisor (FAILED) while the session was "
            "Queued; the session directory's filesystem is full, so the session could not "
            "record why"), card["reason"]
        _nothing_left(FULL_USER, sub, _default_scratch(FULL_USER))
    finally:
        _unfill(made)
    _next_session_works(FULL_USER, cfg, cleanup, _default_scratch(FULL_USER))
    return {"release_to_job_end_s": took, "reason": card["reason"]}


def home_full_while_running(cleanup: list[str]) -> dict:
    """The home fills while the session runs: the supervisor's writes (health check stamps,
    its log) fail and it carries on; JupyterLab stays reachable (the user can free space from
    it); once there is space again the card is written again. A cancel then leaves nothing."""
    cfg = bed.write_config(BASE)
    home = pwd.getpwnam(FULL_USER).pw_dir
    sub = _submit(FULL_USER, cfg, cleanup)
    conn = _until_running(FULL_USER, sub, cfg)
    made = _fill(home)
    try:
        filled = time.monotonic()
        supervisor = bed.supervisor_of(FULL_USER, sub["session_id"])
        assert supervisor
        # Two health checks' worth of failed writes: the supervisor lives on, the lab answers.
        bed.wait_for(lambda: time.monotonic() - filled > 2 * HEALTH_INTERVAL + 1, 30,
                     "two health intervals with a full home", interval=0.5)
        assert os.path.exists(f"/proc/{supervisor}"), bed.session_log(sub["session_dir"])
        assert _lab_answers(conn)
        assert bed.card(FULL_USER, sub["session_id"], cfg)["status"] == "Running"
    finally:
        _unfill(made)
    freed = time.time()
    bed.wait_for(lambda: bed.iso_time(_status(sub)["checked_at"] or "1970-01-01T00:00:00Z")
                 > freed, 3 * HEALTH_INTERVAL,
                 "a health check recorded after space came back", interval=0.5)
    assert "status.json written again" in bed.session_log(sub["session_dir"])
    subprocess.run(["scancel", sub["job_id"]], check=True)
    assert _job_end(sub["job_id"]) == "CANCELLED"
    card = bed.card(FULL_USER, sub["session_id"], cfg)
    assert card["status"] == "Completed" and card["reason"] == "cancelled (SIGTERM)", card
    _nothing_left(FULL_USER, sub, _default_scratch(FULL_USER))
    return {"reason": card["reason"]}


def scratch_full_at_start(cleanup: list[str]) -> dict:
    """The node's scratch filesystem has no room for the session's scratch directory: the
    session fails at once saying so; nothing is left; with room again the next one runs."""
    cfg = bed.write_config(SCRATCH_CFG)
    user_dir = os.path.join(SMALL_SCRATCH, SCRATCH_USER)
    made = _fill(SMALL_SCRATCH)  # blocks first: the big file needs an inode
    made += _fill_inodes(SMALL_SCRATCH)
    try:
        out = bed.submit(SCRATCH_USER, "--wait", "--memory", "1", config=cfg, timeout=120)
        got = bed.docs(out.stdout)
        assert got, out.stderr
        sub = got[0]
        cleanup.append(sub["job_id"])
        assert _job_end(sub["job_id"]) == "FAILED"
        card = bed.card(SCRATCH_USER, sub["session_id"], cfg)
        assert card["failed"], card
        assert card["reason"].startswith(f"could not create {SMALL_SCRATCH}/"), card["reason"]
        assert card["reason"].endswith("(for /scratch): No space left on device"), card["reason"]
        _nothing_left(SCRATCH_USER, sub, user_dir)
    finally:
        _unfill(made)
    _next_session_works(SCRATCH_USER, cfg, cleanup, user_dir)
    return {"reason": card["reason"]}


def scratch_full_while_running(cleanup: list[str]) -> dict:
    """Scratch fills while the session runs: writing there fails inside JupyterLab with the
    kernel's own error, and the session carries on; a cancel leaves nothing."""
    cfg = bed.write_config(SCRATCH_CFG)
    user_dir = os.path.join(SMALL_SCRATCH, SCRATCH_USER)
    sub = _submit(SCRATCH_USER, cfg, cleanup)
    conn = _until_running(SCRATCH_USER, sub, cfg)
    port, token = int(conn["port"]), conn["password"]
    made = _fill(SMALL_SCRATCH)
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            lab.api(port, token, "PUT", "api/contents/scratch/big.txt",
                    {"type": "file", "format": "text", "content": "x" * (1 << 20)})
        # JupyterLab's own words (its atomic save hides the ENOSPC behind the failed rename
        # of its temporary file): the save fails, and says which file.
        said = refused.value.read().decode("utf-8", "replace")
        assert refused.value.code == 500 and "saving file: scratch/big.txt" in said, said
        assert _lab_answers(conn)
        assert bed.card(SCRATCH_USER, sub["session_id"], cfg)["status"] == "Running"
    finally:
        _unfill(made)
    subprocess.run(["scancel", sub["job_id"]], check=True)
    assert _job_end(sub["job_id"]) == "CANCELLED"
    _nothing_left(SCRATCH_USER, sub, user_dir)
    return {"refused_with": refused.value.code, "said": said}


def _army(uid: int, user: str, up_to: int) -> subprocess.Popen:
    """Sleepers of the user's own, outside any job, until the user has `up_to` processes and
    threads (the shell that starts them is one); one process group of ours, for _stop_army."""
    sleepers = up_to - bed.count_tasks(uid) - 1
    assert sleepers > 0, (up_to, bed.count_tasks(uid))
    army = bed.popen_as_user(user, ["sh", "-c", 'n=$1; while [ "$n" -gt 0 ]; do sleep 600 & '
                                    'n=$((n-1)); done; wait', "sh", str(sleepers)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    bed.wait_for(lambda: bed.count_tasks(uid) >= up_to, 30, f"{user} at {up_to} processes",
                 interval=0.2)
    return army


def process_limit_at_start(cleanup: list[str]) -> dict:
    """The user already runs one process fewer than their limit (ulimit -u) allows: the job's
    supervisor starts, but cannot start Podman. The card says the process limit is reached,
    with the numbers; nothing is left; with the processes gone the next session runs.
    (Processes inside the user's rootless user namespace, Podman's and the container's, are
    held to the limit of whoever made that namespace: the prolog. So it is the supervisor's
    own fork that meets the job's limit.)"""
    cfg = bed.write_config(BASE)
    uid = pwd.getpwnam(U2).pw_uid
    sub = _submit(U2, cfg, cleanup, env={"SBATCH_HOLD": "1"},
                  wrapper=("prlimit", f"--nproc={NPROC}:{NPROC}", "--"))
    army = _army(uid, U2, NPROC - 1)
    try:
        subprocess.run(["scontrol", "release", sub["job_id"]], check=True)
        assert _job_end(sub["job_id"]) == "FAILED"
        card = bed.card(U2, sub["session_id"], cfg)
        assert card["failed"], card
        assert card["reason"].startswith("could not start podman system service: Resource "
                                         "temporarily unavailable (the process limit is "
                                         f"reached: ulimit -u is {NPROC}, and this user has "), \
            card["reason"]
        _nothing_left(U2, sub, _default_scratch(U2))
    finally:
        _stop_army(army, uid)
    _next_session_works(U2, cfg, cleanup, _default_scratch(U2))
    return {"reason": card["reason"]}


def process_limit_while_running(cleanup: list[str]) -> dict:
    """The user reaches their process limit while the session runs: JupyterLab goes on
    answering and the supervisor's checks go on (they fork nothing); a cancel at the limit
    still removes everything (when Podman cannot start, the supervisor stops the container's
    processes itself, which makes room for it), and the card says it was cancelled."""
    cfg = bed.write_config(BASE)
    uid = pwd.getpwnam(U2).pw_uid
    sub = _submit(U2, cfg, cleanup, wrapper=("prlimit", f"--nproc={NPROC}:{NPROC}", "--"))
    conn = _until_running(U2, sub, cfg)
    army = _army(uid, U2, NPROC)
    try:
        reached = time.time()
        bed.wait_for(lambda: bed.iso_time(_status(sub)["checked_at"] or "1970-01-01T00:00:00Z")
                     > reached, 3 * HEALTH_INTERVAL, "a health check at the limit", interval=0.5)
        assert _lab_answers(conn)
        subprocess.run(["scancel", sub["job_id"]], check=True)
        assert _job_end(sub["job_id"]) == "CANCELLED"
        card = bed.card(U2, sub["session_id"], cfg)
        assert card["status"] == "Completed" and card["reason"] == "cancelled (SIGTERM)", card
        _nothing_left(U2, sub, _default_scratch(U2))
    finally:
        _stop_army(army, uid)
    log = bed.session_log(sub["session_dir"])
    return {"reason": card["reason"],
            "stopped_directly": "stopped the container's processes directly" in log}


def _stop_army(army: subprocess.Popen, uid: int) -> None:
    """End the sleepers: runuser, its shell and the sleeps (one process group of ours; the
    sleeps are also found by their argv, in case the shell moved to a group of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(army.pid, signal.SIGKILL)
    army.wait(timeout=30)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read() == b"sleep\x00600\x00":
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            continue


CASES: dict[str, Callable[[list[str]], dict]] = {
    "home-full-at-start": home_full_at_start,
    "home-full-while-running": home_full_while_running,
    "scratch-full-at-start": scratch_full_at_start,
    "scratch-full-while-running": scratch_full_while_running,
    "process-limit-at-start": process_limit_at_start,
    "process-limit-while-running": process_limit_while_running,
}
# Cases that share a user's home or a filesystem run one after the other.
CHAINS = (("home-full-at-start", "home-full-while-running", "scratch-full-at-start",
           "scratch-full-while-running"),
          ("process-limit-at-start", "process-limit-while-running"))


@pytest.fixture(scope="module")
def outcomes(request, testbed) -> dict[str, object]:
    wanted = bed.selected_ids(request)
    jobs: list[str] = []
    chains = [[(name, lambda n=name: CASES[n](jobs)) for name in chain if name in wanted]
              for chain in CHAINS]
    try:
        return bed.side_by_side(chains)
    finally:
        for job in jobs:
            subprocess.run(["scancel", job], check=False)
        for job in jobs:
            bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING",
                                                                "COMPLETING"),
                         60, f"job {job} to end")


@pytest.mark.parametrize("case", list(CASES))
def test_resource(case: str, outcomes: dict[str, object]) -> None:
    result = outcomes.get(case)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, dict), f"case {case} did not run"
