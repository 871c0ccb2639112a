#!/opt/sh-jupyter/venv/bin/python
"""Queue-size benchmark: status, list and submit --wait with 0, 10,000 and 50,000
held jobs of another user in the queue, as shjuser1, beside Slurm's own floor.

The other user is `shjbench` (testbed/steps/30-users.sh); its held jobs are plain sbatch
submissions in parallel (a pending job array is one record in slurmctld, not one per task, so
it would not make a queue of that size). For each queue size, in every run (the first not
counted):
  (d) `sh-jupyter submit --wait --json` as shjuser1, from Popen to its exit with Running;
then, in rotated order, against the session it made:
  (a) floor: `squeue -h -j ID -o %T` (Slurm's own cost of looking at one job);
  (b) `sh-jupyter status SESSION --json`;
  (c) `sh-jupyter list --json` (the bench's sessions directory holds that one session);
  informational: `squeue -h -u shjuser1 -o %i` (list's floor), `squeue -h -t all -o %i` (the
  whole queue, what any per-session full dump pays in squeue alone), and a plain
  `sbatch --wrap` until it is RUNNING (slurmctld's own scheduling latency at this size);
then the session's job is cancelled and its directory removed. Each command's peak RSS is the
`ru_maxrss` of its process tree from wait4 (the larger of sh-jupyter itself and the squeue it
runs). Ratios are against the same command's median on the empty queue in the same run.

Afterwards the bench user's jobs are cancelled and the benchmark waits until squeue no longer
lists them (MinJobAge: about 5 minutes on the bed).

Run as root: `/opt/sh-jupyter/venv/bin/python bench/queue.py [--runs N] [--sizes 0,10000,50000]`.
Measurements only: targets are reported next to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

import benchlib as bl
from benchlib import Series, bed, say

USER = bed.USERS[0]
BENCH_USER = "shjbench"  # testbed/lib.sh TESTBED_BENCH_USER
HELD_NAME = "shj-bench-held"
SESSIONS = "shj-bench-queue"
FLOOR = "(a) floor: `squeue -h -j ID -o %T`"
STATUS = "(b) `status SESSION --json`"
LIST = "(c) `list --json`"
SUBMIT = "(d) `submit --wait --json` until Running"
USER_Q = "`squeue -h -u USER -o %i` (list's floor, informational)"
WHOLE_Q = "`squeue -h -t all -o %i`, the whole queue (informational)"
SBATCH = "plain `sbatch` until RUNNING (Slurm's scheduling, informational)"
ORDER = (FLOOR, STATUS, LIST, SUBMIT, USER_Q, WHOLE_Q, SBATCH)
TARGETED = (STATUS, LIST, SUBMIT)
RATIO_TARGET = 1.2
RSS_TARGET_MB = 40
SUBMIT_ARGS = ("--memory", "1", "--cpus", "1", "--time", "30")
SLURM_CONF = "/etc/slurm/slurm.conf"

# Runs as the bench user: many held sbatch submissions from a few threads in one process.
SUBMITTER = r"""
import subprocess, sys
from concurrent.futures import ThreadPoolExecutor
count, workers, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
argv = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null",
        "--chdir=/tmp", "--time=10", "--mem=100M", "--wrap=true"]
def one(_):
    return subprocess.run(argv, capture_output=True, text=True).returncode == 0
with ThreadPoolExecutor(workers) as pool:
    ok = sum(pool.map(one, range(count), chunksize=64))
print(ok)
"""


# -- measuring one command --------------------------------------------------------------------
class Run:
    """A command as a user: wall time to its exit and its process tree's peak RSS (wait4)."""

    def __init__(self, user: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # Files, not pipes: the command is reaped with wait4 (for its rusage), not communicate.
        self.out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the Run
        self.err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.t0 = time.monotonic()
        self.proc = bed.popen_as_user(user, argv, env=env, stdout=self.out, stderr=self.err)
        self.seconds: float | None = None
        self.rss_kb = 0
        self.code: int | None = None

    def poll(self) -> bool:
        """True once the command has exited (reaped here with its rusage)."""
        if self.code is not None:
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.seconds = time.monotonic() - self.t0
        self.code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.code
        self.rss_kb = usage.ru_maxrss
        return True

    def wait(self, timeout: float) -> None:
        end = self.t0 + timeout
        while not self.poll():
            if time.monotonic() > end:
                self.proc.kill()
                _pid, status, _usage = os.wait4(self.proc.pid, 0)
                self.code = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.code
                self.seconds = None
                return
            time.sleep(0.002)

    def text(self) -> tuple[str, str]:
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()


class Measure:
    """The times and peak RSS of one variant at one queue size."""

    def __init__(self, name: str) -> None:
        self.series = Series(name)
        self.rss_kb: list[int] = []

    def add(self, run: Run, ok: bool, why: str = "") -> None:
        if ok and run.seconds is not None:
            self.series.add(run.seconds)
            self.rss_kb.append(run.rss_kb)
        else:
            out, err = run.text()
            self.series.fail(why or f"exit {run.code}: {bl.tail(err or out)}")


def timed(user: str, argv: list[str], timeout: float = 120) -> Run:
    run = Run(user, argv)
    run.wait(timeout)
    return run


# -- the queue --------------------------------------------------------------------------------
def bench_jobs(states: str = "all") -> int:
    out = subprocess.run(["squeue", "-h", "-t", states, "-u", BENCH_USER, "-o", "%i"],
                         capture_output=True, text=True, check=False, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"squeue for {BENCH_USER}: {out.stderr.strip()}")
    return len(out.stdout.split())


def fill_queue(target: int, workers: int = 4) -> float:
    """Held jobs of the bench user until it has `target` pending; seconds it took."""
    t0 = time.monotonic()
    have = bench_jobs("PD")
    while have < target:
        need = target - have
        say(f"  submitting {need} held jobs as {BENCH_USER} ({have} queued)")
        out = bed.as_user(BENCH_USER, [f"{bed.VENV}/bin/python", "-c", SUBMITTER, str(need),
                                       str(workers), HELD_NAME], timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(f"held submissions failed: {bl.tail(out.stderr)}")
        now = bench_jobs("PD")
        if now <= have:
            raise RuntimeError(f"the queue did not grow past {now} (MaxJobCount?)")
        have = now
    return time.monotonic() - t0


def empty_queue(timeout: float = 1200) -> float:
    """Cancel the bench user's jobs and wait until squeue lists none (MinJobAge)."""
    t0 = time.monotonic()
    subprocess.run(["scancel", "-u", BENCH_USER], capture_output=True, check=False, timeout=600)
    bed.wait_for(lambda: bench_jobs() == 0, timeout, f"{BENCH_USER}'s jobs to leave squeue",
                 interval=5)
    return time.monotonic() - t0


def max_job_count() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         check=False)
    match = re.search(r"^MaxJobCount\s*=\s*(\d+)", out.stdout, re.MULTILINE)
    return int(match.group(1)) if match else 0


# -- one run at one queue size ----------------------------------------------------------------
def sbatch_until_running(m: Measure) -> None:
    run = Run(USER, ["sbatch", "--parsable", "--job-name=shj-bench-plain", "--output=/dev/null",
                     "--chdir=/tmp", "--time=5", "--mem=100M", "--wrap=sleep 300"])
    run.wait(60)
    out, err = run.text()
    job = out.strip().split(";")[0]
    if run.code != 0 or not job.isdigit():
        m.series.fail(f"sbatch: {bl.tail(err)}")
        return
    bl.CLEANUP.jobs.append(job)
    try:
        bed.wait_for(lambda: bed.job_state(job) == "RUNNING", 120, f"job {job} RUNNING",
                     interval=0.005)
        m.series.add(time.monotonic() - run.t0)
    except AssertionError as exc:
        m.series.fail(str(exc))
    subprocess.run(["scancel", job], check=False)
    bl.wait_job_end(job, 120)
    bl.CLEANUP.jobs.remove(job)


def one_run(config: str, measures: dict[str, Measure], run_no: int) -> None:
    sh = [bed.SH, "--config", config]
    sub = timed(USER, [*sh, "submit", "--json", "--wait", *SUBMIT_ARGS], timeout=300)
    got = bl.json_docs(sub.text()[0])
    first = got[0] if got else {}
    if first.get("job_id"):
        bl.CLEANUP.jobs.append(first["job_id"])
    if first.get("session_dir"):
        bl.CLEANUP.paths.append(first["session_dir"])
    ready = sub.code == 0 and len(got) > 1 and got[-1].get("status") == "Running"
    measures[SUBMIT].add(sub, ready, "" if ready else
                         f"exit {sub.code}, last {got[-1] if got else None}: "
                         f"{bl.tail(sub.text()[1])}")
    if ready:
        job, session = first["job_id"], first["session_id"]
        steps = {
            FLOOR: ([ "squeue", "-h", "-j", job, "-o", "%T"], lambda o: o.strip() == "RUNNING"),
            STATUS: ([*sh, "status", "--json", session],
                     lambda o: json.loads(o)["status"] == "Running"),
            LIST: ([*sh, "list", "--json"],
                   lambda o: [c["status"] for c in json.loads(o)] == ["Running"]),
            USER_Q: (["squeue", "-h", "-u", USER, "-o", "%i"], lambda o: job in o.split()),
            WHOLE_Q: (["squeue", "-h", "-t", "all", "-o", "%i"], lambda o: job in o.split()),
        }
        for name in bl.rotated([*steps, SBATCH], run_no):
            if name == SBATCH:
                sbatch_until_running(measures[SBATCH])
                continue
            argv, check = steps[name]
            run = timed(USER, argv)
            out, err = run.text()
            try:
                ok = run.code == 0 and check(out)
            except (ValueError, KeyError, TypeError):
                ok = False
            measures[name].add(run, ok, "" if ok else
                               f"exit {run.code}: {bl.tail(err or out)}")
    if first.get("job_id"):
        subprocess.run(["scancel", first["job_id"]], check=False)
        bl.wait_job_end(first["job_id"], 120)
        bl.CLEANUP.jobs.remove(first["job_id"])
    if first.get("session_dir"):
        shutil.rmtree(first["session_dir"], ignore_errors=True)


def at_size(config: str, runs: int) -> dict[str, Measure]:
    measures = {name: Measure(name) for name in ORDER}
    for i in range(runs + 1):  # round 0 warms up, not counted
        say(f"  run {i}" + (" (warm-up)" if i == 0 else ""))
        one_run(config, measures if i else {n: Measure(n) for n in ORDER}, i)
    return measures


# -- report -------------------------------------------------------------------------------------
def mb(kb: int | None) -> str:
    return "n/a" if not kb else f"{kb / 1024:.1f} MB"


def report(sizes: list[int], by_size: dict[int, dict[str, Measure]], runs: int,
           notes: list[str], load0: float) -> str:
    base = by_size[sizes[0]]
    head = ["variant"] + [h for n in sizes for h in
                          ([f"{n:,} jobs"] if n == sizes[0] else [f"{n:,} jobs", "ratio"])]
    top = sizes[-1]
    rows = []
    for name in ORDER:
        row = [name]
        for n in sizes:
            med = by_size[n][name].series.median()
            row.append(f"{bl.fmt(med)} ({by_size[n][name].series.ok})")
            if n != sizes[0]:
                row.append(bl.ratio(med, base[name].series.median()))
        if name in TARGETED:
            med, floor = by_size[top][name].series.median(), base[name].series.median()
            met = None if med is None or not floor else med / floor <= RATIO_TARGET
            row.append(f"<= {RATIO_TARGET}x at {top:,}: {bl.verdict(met)}")
        else:
            row.append("")
        rows.append(row)
    rss_rows = []
    for name in (FLOOR, STATUS, LIST, SUBMIT):
        peaks = [max(by_size[n][name].rss_kb, default=0) for n in sizes]
        target = ""
        if name in TARGETED:
            met = None if not peaks[-1] else peaks[-1] / 1024 <= RSS_TARGET_MB
            target = f"<= {RSS_TARGET_MB} MB: {bl.verdict(met)}"
        rss_rows.append([name, *[mb(p) for p in peaks], target])
    text = [
        "## Queue size: status, list and submit --wait as the queue grows\n",
        f"{bl.machine_note()}. {runs} runs per queue size (one warm-up round not counted), "
        f"variants rotated after the submit of each run. Load average before: {load0:.2f}. "
        f"Queue: held jobs of `{BENCH_USER}` (another user); the measured commands run as "
        f"`{USER}`.\n",
        "### Wall time (median, ok runs) and ratio to the same command on the empty queue\n",
        bl.table([*head, "target"], rows),
        "### Peak RSS (largest over the runs; the command's process tree, wait4 ru_maxrss)\n",
        bl.table(["variant", *[f"{n:,} jobs" for n in sizes], "target"], rss_rows),
        "\n".join(f"- {n}" for n in notes) + "\n",
    ]
    failures = [f"- {n:,} jobs, {m.series.name}: {why}" for n in sizes
                for m in by_size[n].values() for why in m.series.failures]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per queue size")
    parser.add_argument("--sizes", default="0,10000,50000",
                        help="queue sizes (held jobs of the bench user), ascending")
    parser.add_argument("--name", default="queue", help="result file bench/results/NAME.md")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    try:
        pwd.getpwnam(BENCH_USER)
    except KeyError:
        say(f"user {BENCH_USER} is missing: run testbed/provision 30")
        return 2
    if max_job_count() < sizes[-1] + 1000:
        say(f"MaxJobCount {max_job_count()} is too small for {sizes[-1]} jobs: "
            "run testbed/provision 60")
        return 2
    home = pwd.getpwnam(USER).pw_dir
    config = bl.write_config(bl.CONFIG_TEXT + f'[session]\nsessions_dir = "{{home}}/{SESSIONS}"\n')
    bl.CLEANUP.paths.append(os.path.join(home, SESSIONS))
    bl.CLEANUP.first.append(lambda: subprocess.run(["scancel", "-u", BENCH_USER], check=False))
    load0 = os.getloadavg()[0]
    notes = []
    if bench_jobs() and sizes[0] == 0:
        say(f"{BENCH_USER} has jobs from an earlier run: cleaning them first")
        empty_queue()
    by_size: dict[int, dict[str, Measure]] = {}
    for n in sizes:
        took = fill_queue(n)
        if n:
            notes.append(f"{n:,} held jobs in the queue after {took:.0f} s of parallel sbatch")
        say(f"queue: {bench_jobs('PD')} held jobs of {BENCH_USER}")
        by_size[n] = at_size(config, args.runs)
    say("cleaning the queue")
    took = empty_queue()
    notes.append(f"the bench user's jobs cancelled and gone from squeue after {took:.0f} s "
                 "(MinJobAge 300 s)")
    bl.write_result(args.name, report(sizes, by_size, args.runs, notes, load0))
    return 0


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
