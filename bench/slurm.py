#!/opt/sh-jupyter/venv/bin/python
"""Slurm integration benchmark (issue "Slurm integration"), acting as the test users.

  (i)   `sh-jupyter submit --wait --json` as shjuser1, from Popen to its exit with Running (and,
        informational, to the moment connection.yml appears), against the local launch
        `sh-jupyter run --local` in the same run, interleaved;
  (ii)  scancel of that job to its container gone from `podman ps -a`;
  (iii) Prolog and Epilog wall time for a plain (non-Jupyter) job, run directly as root with
        a Slurm-like environment, against the interpreter's own start-up; and the Epilog of a
        Jupyter job with nothing left to clean (informational);
  (iv)  8 sessions submitted at once (4 per user): all ready, distinct ports, time until the
        last is ready; then all cancelled and their containers gone.

Run as root: `/opt/sh-jupyter/venv/bin/python bench/slurm.py [--runs N]`.
Measurements only: targets are reported next to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence

import benchlib as bl
from benchlib import Series, bed, say

U1, U2 = bed.USERS
SUBMIT = "(i) `submit --wait --json` exits with Running"
SUBMIT_CONN = "(i) submit until connection.yml exists (informational)"
LOCAL = "floor: `sh-jupyter run --local` until connection.yml"
SCANCEL = "(ii) scancel to container gone"
SCANCEL_JOB = "(ii) scancel to job ended, epilog done (informational)"
HOOK_FLOOR = "floor: `python -I -c pass` (interpreter start)"
PROLOG = "(iii) prolog, plain job"
EPILOG = "(iii) epilog, plain job"
EPILOG_J = "(iii) epilog, Jupyter job, nothing to clean (informational)"
HOOKS = "/usr/libexec/sh-jupyter"
SUBMIT_ARGS = ("--memory", "1", "--cpus", "1", "--time", "30")  # 8 fit on the node at once
SCANCEL_TARGET = 3.0
HOOK_TARGET = 0.2
SUBMIT_TIMEOUT = 300
BURST_RATIO_TARGET = 4.0  # 2 cores doing 8 CPU-bound starts: about 4 starts' worth


class Submission:
    """One `sh-jupyter submit --wait --json` as a user, followed from the outside."""

    def __init__(self, user: str, config: str, args: Sequence[str] = SUBMIT_ARGS) -> None:
        self.user = user
        self.t0 = time.monotonic()
        # Unbuffered, so the first document (with the session directory) arrives at once and
        # connection.yml can be watched; a pipe would hold it until the command exits.
        self.proc = bed.popen_as_user(user, [bed.SH, "--config", config, "submit", "--json",
                                             "--wait", *args],
                                      env={"PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.out = bl.LineReader(self.proc.stdout)
        self.err = bl.LineReader(self.proc.stderr)
        self.conn_at: float | None = None
        self.done_at: float | None = None
        self.job_id = ""
        self.session_id = ""
        self.session_dir = ""
        bl.CLEANUP.first.append(self.cut_off)

    def cancel(self) -> None:
        """scancel the job (if it got one) and wait until Slurm has ended it."""
        if self.job_id:
            subprocess.run(["scancel", self.job_id], check=False)
            bl.wait_job_end(self.job_id, 120)
            bl.CLEANUP.jobs.remove(self.job_id)

    def forget(self) -> None:
        """Leave the session directory to the final cleanup."""
        if self.session_dir:
            bl.CLEANUP.paths.append(self.session_dir)

    def cut_off(self) -> None:
        """On an interrupted benchmark: stop following, but learn the job id to cancel it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.out.thread.join(5)
        self.poll()
        if self.session_dir:
            bl.CLEANUP.paths.append(self.session_dir)

    def poll(self) -> bool:
        """One look (cheap enough for 5 ms polls); True once the command has exited."""
        if not self.job_id:
            got = bl.json_docs(self.out.text())
            if got:
                self.job_id, self.session_id = got[0]["job_id"], got[0]["session_id"]
                self.session_dir = got[0]["session_dir"]
                bl.CLEANUP.jobs.append(self.job_id)
        if self.session_dir and self.conn_at is None and \
                os.path.exists(os.path.join(self.session_dir, "connection.yml")):
            self.conn_at = time.monotonic()
        if self.proc.poll() is not None:
            if self.done_at is None:
                self.done_at = time.monotonic()
            return True
        return False

    def wait(self, timeout: float = SUBMIT_TIMEOUT) -> None:
        end = self.t0 + timeout
        while not self.poll():
            if time.monotonic() > end:
                self.proc.kill()
                self.proc.wait()
                break
            time.sleep(0.005)
        self.out.thread.join(5)
        self.poll()

    def final(self) -> dict:
        got = bl.json_docs(self.out.text())
        return got[-1] if len(got) > 1 else {}

    def ready(self) -> bool:
        return self.proc.returncode == 0 and self.final().get("status") == "Running"

    def error(self) -> str:
        final = self.final()
        return (f"exit {self.proc.returncode}, status {final.get('status')!r}, reason "
                f"{final.get('reason')!r}; {bl.tail(self.err.text())}")

    def port(self) -> int | None:
        url = self.final().get("connect_url", "")
        return urllib.parse.urlsplit(url).port if url else None

    def container(self) -> str:
        return f"epcc-ces-jupyter-{self.session_id}"

    def removed_by_supervisor(self) -> bool:
        try:
            with open(os.path.join(self.session_dir, "output.log"), encoding="utf-8",
                      errors="replace") as fh:
                return f"container {self.container()} removed" in fh.read()
        except OSError:
            return False


def cancel_and_time(sub: Submission, gone: Series, ended: Series, by_sup: list[bool]) -> None:
    """(ii): scancel, then poll `podman ps -a` as the user until the container is gone.

    The time is taken when the `podman ps` that no longer lists it returns (an upper bound;
    one `podman ps` as the user takes about 0.1-0.3 s here).
    """
    if not bl.container_gone(sub.user, sub.container()):
        t0 = time.monotonic()
        subprocess.run(["scancel", sub.job_id], check=False)
        try:
            bed.wait_for(lambda: bl.container_gone(sub.user, sub.container()), 120,
                         f"{sub.container()} removal", interval=0.0)
            gone.add(time.monotonic() - t0)
        except AssertionError as exc:
            gone.fail(str(exc))
        try:
            bl.wait_job_end(sub.job_id, 120)
            ended.add(time.monotonic() - t0)
        except AssertionError as exc:
            ended.fail(str(exc))
        by_sup.append(sub.removed_by_supervisor())
    else:
        gone.fail(f"container of job {sub.job_id} was not there to cancel")
        subprocess.run(["scancel", sub.job_id], check=False)
        bl.wait_job_end(sub.job_id, 120)
    bl.CLEANUP.jobs.remove(sub.job_id)


def run_submit(config: str, ready: Series, conn: Series, gone: Series, ended: Series,
               by_sup: list[bool]) -> None:
    sub = Submission(U1, config)
    sub.wait()
    if sub.ready():
        ready.add(sub.done_at - sub.t0)
        if sub.conn_at is not None:
            conn.add(sub.conn_at - sub.t0)
        cancel_and_time(sub, gone, ended, by_sup)
    else:
        ready.fail(sub.error())
        sub.cancel()
    sub.forget()


def run_local(config: str, series: Series) -> None:
    run = bl.launch_local(U1, config)
    if run.seconds is None:
        series.fail(run.error)
    else:
        series.add(run.seconds)
    bl.end_session(run.session)


# -- (iii) hooks --------------------------------------------------------------------------------
def hook_env(user: str, job_id: str, work_dir: str) -> dict[str, str]:
    """What slurmd gives a Prolog/Epilog: no PATH, no HOME, no job name."""
    pw = pwd.getpwnam(user)
    env = {"SLURM_JOB_ID": job_id, "SLURM_JOB_USER": user, "SLURM_JOB_UID": str(pw.pw_uid),
           "SLURM_JOB_GID": str(pw.pw_gid), "SLURM_JOB_WORK_DIR": work_dir}
    if work_dir != "/tmp":
        env["SLURM_JOB_STDOUT"] = os.path.join(work_dir, "output.log")
    return env


def time_hook(argv: list[str], env: dict[str, str], series: Series) -> None:
    t0 = time.monotonic()
    out = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120,
                         check=False)
    took = time.monotonic() - t0
    if out.returncode == 0:
        series.add(took)
    else:
        series.fail(f"exit {out.returncode}: {bl.tail(out.stderr)}")


def run_hooks(runs: int) -> list[Series]:
    floor, prolog, epilog, jepilog = (Series(n) for n in (HOOK_FLOOR, PROLOG, EPILOG, EPILOG_J))
    py = f"{bed.VENV}/bin/python"  # the interpreter the hooks exec, venv and all
    sessions = os.path.join(pwd.getpwnam(U1).pw_dir, bl.SESSIONS)
    for i in range(runs + 1):  # the first round warms the page cache, not counted
        job = str(990_000_000 + i)  # no real job has such an id on the bed
        steps = {
            HOOK_FLOOR: ([py, "-I", "-c", "pass"], {}),
            PROLOG: ([f"{HOOKS}/prolog"], hook_env(U1, job, "/tmp")),
            EPILOG: ([f"{HOOKS}/epilog"], hook_env(U1, job, "/tmp")),
            # A session directory that was never created: nothing of it exists to clean.
            EPILOG_J: ([f"{HOOKS}/epilog"],
                       hook_env(U1, job, os.path.join(sessions, str(uuid.uuid4())))),
        }
        for name in bl.rotated(list(steps), i):
            argv, env = steps[name]
            target = {HOOK_FLOOR: floor, PROLOG: prolog, EPILOG: epilog, EPILOG_J: jepilog}
            time_hook(argv, env, target[name] if i else Series(name))
    return [floor, prolog, epilog, jepilog]


# -- (iv) burst --------------------------------------------------------------------------------
def run_burst(config: str, per_user: int) -> dict:
    users = [u for u in (U1, U2) for _ in range(per_user)]
    t0 = time.monotonic()
    subs = [Submission(u, config) for u in users]
    threads = [threading.Thread(target=s.wait) for s in subs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ready = [s for s in subs if s.ready()]
    ports = [s.port() for s in ready]
    out = {
        "count": len(subs), "ready": len(ready), "ports": len(set(ports)),
        "first": min((s.done_at - t0 for s in ready), default=None),
        "last": max((s.done_at - t0 for s in ready), default=None),
        "errors": [s.error() for s in subs if not s.ready()],
        "submitted": max(s.t0 for s in subs) - t0,
    }
    say(f"  burst: {len(ready)}/{len(subs)} ready, last after {bl.fmt(out['last'])}; "
        "cancelling")
    jobs = [s.job_id for s in subs if s.job_id]
    t1 = time.monotonic()
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)
    def all_gone() -> bool:  # one `podman ps -a` per user per look
        return all(not {s.container() for s in subs if s.user == u and s.session_id}
                   & set(bed.containers_of(u)) for u in (U1, U2))
    try:
        bed.wait_for(all_gone, 180, "all burst containers gone", interval=0.0)
        out["gone"] = time.monotonic() - t1
    except AssertionError as exc:
        out["errors"].append(str(exc))
        out["gone"] = None
    for s in subs:
        if s.job_id:
            bl.wait_job_end(s.job_id, 180)
            bl.CLEANUP.jobs.remove(s.job_id)
        if s.session_dir:
            bl.CLEANUP.paths.append(s.session_dir)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--burst-per-user", type=int, default=4,
                        help="sessions each test user submits at once in (iv)")
    args = parser.parse_args()
    config = bl.write_config()
    ready, conn, local = Series(SUBMIT), Series(SUBMIT_CONN), Series(LOCAL)
    gone, ended = Series(SCANCEL), Series(SCANCEL_JOB)
    by_sup: list[bool] = []
    load0 = os.getloadavg()
    say("warm-up (not counted)")
    run_local(config, Series(LOCAL))
    run_submit(config, Series(SUBMIT), Series(SUBMIT_CONN), Series(SCANCEL), Series(SCANCEL_JOB),
               [])
    steps = {SUBMIT: lambda: run_submit(config, ready, conn, gone, ended, by_sup),
             LOCAL: lambda: run_local(config, local)}
    for i in range(args.runs):
        say(f"run {i + 1}")
        for name in bl.rotated(list(steps), i):
            steps[name]()
        say(bl.round_line({s.name.split(" ")[0]: s for s in (ready, local, gone)}))
    say("hooks")
    hooks = run_hooks(args.runs)
    say("burst")
    burst = run_burst(config, args.burst_per_user)

    text = ["## Slurm integration (as the test users)\n",
            f"{bl.machine_note()}. {args.runs} runs, variants interleaved (order rotated), one "
            f"warm-up round not counted. Load average before: {load0[0]:.2f}. Jobs ask for "
            f"`{' '.join(SUBMIT_ARGS)}`.\n",
            "### (i) sbatch to connect-ready, and (ii) scancel to container gone\n",
            bl.table(bl.SERIES_HEADERS, [
                *bl.series_rows([local, ready, conn], local),
                *bl.series_rows([gone, ended], None, {
                    SCANCEL: f"median <= {SCANCEL_TARGET:.0f} s: "
                             f"{bl.verdict(none_or(gone.median(), SCANCEL_TARGET))} "
                             "(KillWait 10 s here, Slurm default 30 s)"}),
            ]),
            f"(i) \"ratio to floor\" is against the local launch. (ii) the container was "
            f"removed by the supervisor itself (not the epilog) in {by_sup.count(True)}/"
            f"{len(by_sup)} cancels; its time is when the first `podman ps -a` not listing it "
            "returned.\n",
            "### (iii) Prolog and Epilog wall time (run as root, Slurm-like environment)\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows(hooks, hooks[0], {
                PROLOG: hook_target(hooks[1]), EPILOG: hook_target(hooks[2])})),
            "Plain job: SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_UID, SLURM_JOB_GID, "
            "SLURM_JOB_WORK_DIR=/tmp; no PATH, no HOME. Jupyter job: SLURM_JOB_WORK_DIR is a "
            "session directory (plus SLURM_JOB_STDOUT), for a job id no container carries.\n",
            burst_table(burst, args.burst_per_user, ready.median())]
    failures = [f"- {s.name}: {why}" for s in (local, ready, gone, ended, *hooks)
                for why in s.failures] + [f"- burst: {e}" for e in burst["errors"]]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    bl.write_result("slurm", "\n".join(text))
    return 0


def hook_target(series: Series) -> str:
    return f"median <= {HOOK_TARGET} s: {bl.verdict(none_or(series.median(), HOOK_TARGET))}"


def none_or(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def burst_table(b: dict, per_user: int, single: float | None) -> str:
    """`single`: one session's submit --wait to Running (median of (i), same run); the burst's
    last ready is held against BURST_RATIO_TARGET times that."""
    last_ok = None if b["last"] is None or not single or b["ready"] < b["count"] \
        else b["last"] <= BURST_RATIO_TARGET * single
    rows = [
        ["sessions ready", f"{b['ready']}/{b['count']}", f"all {b['count']}"],
        ["distinct ports among the ready", f"{b['ports']}/{b['ready']}", "all distinct"],
        ["all submitted (last Popen) after", bl.fmt(b["submitted"]), "informational"],
        ["first ready after", bl.fmt(b["first"]), "informational"],
        ["last ready after (from the first submit)", bl.fmt(b["last"]),
         f"<= {BURST_RATIO_TARGET:.0f}x one session's (i) ({bl.ratio(b['last'], single)}): "
         f"{bl.verdict(last_ok)}"],
        ["scancel of all to every container gone", bl.fmt(b["gone"]), "informational"],
    ]
    return (f"### (iv) {b['count']} sessions submitted at once ({per_user} per user)\n\n"
            + bl.table(("measure", "value", "target"), rows))


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
