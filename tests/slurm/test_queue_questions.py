"""status, list, connect and submit --wait ask Slurm only about the user's own jobs, and a
failing squeue is "unknown", never "ended", on the real cluster as a test user.

Every squeue the CLI runs goes through a logging wrapper first on the user's PATH, which keeps
its arguments and its whole answer: the answers must hold none of another user's jobs (held
jobs of shjuser2, named like sessions), whatever the queue holds.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import uuid

import pytest

import bed

U1, U2 = bed.USERS
PORTS = "[network]\nport_min = 32000\nport_max = 32999\n"
SESSIONS_REL = "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output"

# The wrapper: logs argv and answer (stdout) of each call, then answers as squeue did.
# One call's ARGV and OUT lines are written together under a lock: the supervisor's own
# squeue (the job's end time) may run while the CLI's does, and their lines must not interleave.
LOGGING_SQUEUE = """#!/bin/bash
log="$(dirname -- "$0")/log"
out="$(/usr/bin/squeue "$@")"
rc=$?
{
    /usr/bin/flock 9
    printf 'ARGV %s\\n' "$*"
    printf '%s\\n' "$out" | sed 's/^/OUT /'
} 9>>"$log" >>"$log"
[[ -n "$out" ]] && printf '%s\\n' "$out"
exit $rc
"""
# The failing one: what 22.05 says with slurmctld down, after a while.
FAILING_SQUEUE = """#!/bin/bash
if [[ "$1" == --version ]]; then exec /usr/bin/squeue --version; fi
echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2
exit 1
"""


def _wrapper_dir(user: str, script: str) -> str:
    """A directory on the user's PATH holding `squeue` (and writable for its log)."""
    path = os.path.join(bed.shared_tempdir(), "bin")
    os.mkdir(path, 0o755)
    with open(os.path.join(path, "squeue"), "w", encoding="utf-8") as fh:
        fh.write(script)
    os.chmod(os.path.join(path, "squeue"), 0o755)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def _env(wrapper: str, **extra: str) -> dict[str, str]:
    return {"PATH": f"{wrapper}:/usr/local/bin:/usr/bin:/bin", **extra}


def _sh(user: str, cfg: str, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return bed.as_user(user, [bed.SH, "--config", cfg, *args], env=env, timeout=timeout)


def _calls(wrapper: str) -> list[tuple[str, list[str]]]:
    """(argv, answer lines) of each logged squeue call."""
    calls: list[tuple[str, list[str]]] = []
    try:
        with open(os.path.join(wrapper, "log"), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("ARGV "):
                    calls.append((line[5:].rstrip("\n"), []))
                elif line.startswith("OUT ") and calls and line[4:].strip():
                    calls[-1][1].append(line[4:].rstrip("\n"))
    except FileNotFoundError:
        pass
    return calls


def _docs(text: str) -> list[dict]:
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def _end(jobs: list[str]) -> None:
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING", "COMPLETING"),
                     60, f"job {job} to end")


@pytest.fixture(scope="module")
def others(testbed):
    """Held jobs of another user, named like sessions: they must never reach U1's answers."""
    jobs = []
    for _ in range(3):
        out = bed.as_user(U2, ["sbatch", "--parsable", "--hold", "--job-name=jupyter_app",
                               "--output=/dev/null", "--chdir=/tmp", "--wrap=true"])
        assert out.returncode == 0, out.stderr
        jobs.append(out.stdout.strip().split(";")[0])
    yield jobs
    _end(jobs)


@pytest.fixture(scope="module")
def cfg(testbed) -> str:
    return bed.write_config(PORTS)


@pytest.fixture(scope="module")
def session(cfg, others):
    """A running session of U1, submitted with --wait through the logging squeue."""
    wrapper = _wrapper_dir(U1, LOGGING_SQUEUE)
    out = _sh(U1, cfg, "submit", "--json", "--wait", env=_env(wrapper), timeout=300)
    got = _docs(out.stdout)
    jobs = [got[0]["job_id"]] if got else []
    try:
        assert out.returncode == 0 and got[-1]["status"] == "Running", out.stdout + out.stderr
        yield {**got[0], "wait_calls": _calls(wrapper)}
    finally:
        _end(jobs)


def _json_form() -> bool:
    """squeue --json from 23.02 (where a single -j/-u filters it), the text form before."""
    out = subprocess.run(["squeue", "--version"], capture_output=True, text=True, check=True)
    major, minor = (int(x) for x in re.findall(r"(\d+)\.(\d+)", out.stdout)[0])
    return (major, minor) >= (23, 2)


def _listed(answer: list[str]) -> set[str]:
    """The job ids in one squeue answer (JSON, or our text form: the id first)."""
    text = "\n".join(answer)
    if text.lstrip().startswith("{"):
        return {str(j["job_id"]) for j in json.loads(text)["jobs"]}
    return {line.split("|", 1)[0] for line in answer}


def _only_mine(calls: list[tuple[str, list[str]]], job: str, others: list[str]) -> None:
    uid = str(pwd.getpwnam(U1).pw_uid)
    json_form = _json_form()
    asked = [(argv, answer) for argv, answer in calls if argv != "--version"]
    assert asked, "no squeue was run"
    for argv, answer in asked:
        args = argv.split()
        # one job by id, or this user's jobs: slurmctld filters both
        assert f"--jobs={job}" in args or ("-u" in args and args[args.index("-u") + 1] == uid), \
            argv
        assert ("--json" in args) == json_form, argv  # 22.05's --json dumps the whole queue
        assert not _listed(answer) & set(others), (argv, answer)


def test_submit_wait_status_and_list_ask_only_for_the_users_jobs(session, cfg, others):
    job, sid = session["job_id"], session["session_id"]
    _only_mine(session["wait_calls"], job, others)

    wrapper = _wrapper_dir(U1, LOGGING_SQUEUE)
    # SQUEUE_* in the user's environment would otherwise filter the user's own jobs away
    env = _env(wrapper, SQUEUE_PARTITION="nosuchpartition", SQUEUE_FORMAT="%j")
    out = _sh(U1, cfg, "status", "--json", sid, env=env)
    assert out.returncode == 0, out.stderr
    card = json.loads(out.stdout)
    assert card["status"] == "Running" and card["job_state"] == "RUNNING", card
    assert card["scheduler_error"] == "" and card["time_remaining"] > 0

    out = _sh(U1, cfg, "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    cards = json.loads(out.stdout)
    mine = [c for c in cards if c["session_id"] == sid]
    assert len(mine) == 1 and mine[0]["status"] == "Running", cards
    # The user's history may hold sessions whose job ids another Slurm cluster gave (a home
    # shared between clusters): what must never happen is a card taking an others' job's state.
    leaked = [c for c in cards if c["job_id"] in others and c["job_state"] in ("PENDING",
                                                                               "RUNNING")]
    assert not leaked, leaked

    out = _sh(U1, cfg, "connect", "--json", sid, env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["port"], out.stderr
    calls = _calls(wrapper)
    _only_mine(calls, job, others)
    assert len([c for c in calls if c[0] != "--version"]) == 3  # one each, list included


def test_a_failing_squeue_is_unknown_never_ended(session, cfg):
    sid = session["session_id"]
    env = _env(_wrapper_dir(U1, FAILING_SQUEUE))
    out = _sh(U1, cfg, "status", "--json", sid, env=env)
    assert out.returncode == 0, out.stderr
    card = json.loads(out.stdout)
    assert card["status"] == "Running" and not card["failed"], card
    assert card["job_state"] == "unknown" and "Unable to contact" in card["scheduler_error"]
    text = _sh(U1, cfg, "status", sid, env=env).stdout
    assert "[Running]" in text and "Job state:              unknown" in text, text

    out = _sh(U1, cfg, "list", env=env)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith(sid))
    assert "Running (job state unknown)" in line and "Completed" not in line
    assert "job states unknown, shown as last recorded: squeue failed (exit 1)" in out.stdout

    out = _sh(U1, cfg, "connect", sid, env=env)
    assert out.returncode == 0 and "token=" in out.stdout, out.stderr


def test_submit_wait_outlasts_a_failing_squeue(cfg):
    """sbatch works, squeue fails throughout: the wait goes on and ends with Running."""
    env = _env(_wrapper_dir(U1, FAILING_SQUEUE))
    out = _sh(U1, cfg, "submit", "--json", "--wait", env=env, timeout=300)
    got = _docs(out.stdout)
    try:
        assert out.returncode == 0 and got[-1]["status"] == "Running", out.stdout + out.stderr
        assert not any(d.get("status") == "Completed" for d in got)
        assert any(d.get("job_state") == "unknown" for d in got[1:]), got
    finally:
        _end([got[0]["job_id"]] if got else [])


def test_a_job_slurm_no_longer_knows_is_definitely_ended(cfg, testbed):
    """A session whose job id slurmctld refuses as invalid (purged) is ended, by status and
    list alike; a Completed session is not asked about at all."""
    pw = pwd.getpwnam(U1)
    root = os.path.join(pw.pw_dir, SESSIONS_REL)
    assert bed.as_user(U1, ["mkdir", "-p", "-m", "0700", root]).returncode == 0
    gone, done = str(uuid.uuid4()), str(uuid.uuid4())
    made = []
    for sid, phase in ((gone, "Running"), (done, "Completed")):
        path = os.path.join(root, sid)
        os.makedirs(path, mode=0o700)
        made.append(path)
        with open(os.path.join(path, "status.json"), "w", encoding="utf-8") as fh:
            json.dump({"session_id": sid, "phase": phase, "job_id": "999999999",
                       "created_at": "2026-01-01T00:00:00+00:00"}, fh)
        for p in (path, os.path.join(path, "status.json")):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    try:
        wrapper = _wrapper_dir(U1, LOGGING_SQUEUE)
        card = json.loads(_sh(U1, cfg, "status", "--json", gone, env=_env(wrapper)).stdout)
        assert card["status"] == "Completed" and card["failed"] and card["job_state"] == "gone"
        assert "no longer in the queue" in card["reason"]
        card = json.loads(_sh(U1, cfg, "status", "--json", done, env=_env(wrapper)).stdout)
        assert card["status"] == "Completed" and not card["failed"]
        asked = [c[0].split() for c in _calls(wrapper) if c[0] != "--version"]
        assert len(asked) == 1 and "--jobs=999999999" in asked[0], asked  # only for `gone`
        cards = json.loads(_sh(U1, cfg, "list", "--json").stdout)
        assert {c["session_id"]: c["job_state"] for c in cards if c["session_id"] in
                (gone, done)} == {gone: "gone", done: ""}
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
