#!/opt/sh-jupyter/venv/bin/python
"""JupyterHub: sh-jupyter's spawner beside batchspawner's and `submit --wait`, as shjuser1.

Three variants in one run, the order rotated from round to round, after a warm-up round that
is not counted:
  floor: `sh-jupyter submit --wait --json` (JupyterLab, same image, same resources), from Popen
         until it exits with Running;
  ours:  a real JupyterHub and configurable-http-proxy on this machine (tests/hub_bed.py) with
         sh-jupyter's spawner: submit as the user, follow, jupyterhub-singleuser in the
         container;
  peer:  a second hub and proxy on other ports with batchspawner's SlurmSpawner at its
         documented defaults and a native single-user venv of the image's exact package set
         (bench/peer.py installs both on demand; the first run takes a few minutes). The same
         CPUs, memory and time. `--no-peer` leaves it out.
Per round, for each hub:
  spawn:  POST /hub/api/users/shjuser1/server, then the user model read every 50 ms until its
          server is `ready` (the spawner's start() returned and the hub saw the server answer);
  routed: until GET /user/shjuser1/api answers 200 through the proxy (informational);
  RSS:    `--settle` seconds later, the resident memory (psutil) of every process of the
          server's Slurm job on this node (the job's cgroup, else `scontrol listpids`) that is
          not root's: in total, and besides JupyterLab itself (the single-user server's process
          tree; for sh-jupyter also the container's init, tini). The job's slurmstepd
          processes (root's, one per job step) apart, informational;
  stop:   DELETE /hub/api/users/shjuser1/server until the hub no longer lists the server and
          squeue no longer lists the job as active (it ended and its epilog is done).
The side-by-side table names both spawners' versions and gives the ratios of the medians, ours
to batchspawner's.

Run as root: `/opt/sh-jupyter/venv/bin/python bench/hub.py [--runs N] [--no-peer]` (testbed
step 80 first). Measurements only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import benchlib as bl
import peer
from benchlib import Series, bed, say

from sh_jupyter.benchmarking import real_uid
from slurm import SUBMIT_ARGS, Submission

import hub_bed  # tests/, on the path through benchlib

U1 = bed.USERS[0]
POLL = 0.05  # seconds between looks at the user model and at squeue
SPAWN_TIMEOUT = 240.0
STOP_TIMEOUT = 180.0
SERVERS = ("jupyterhub-singleuser", "batchspawner-singleuser")
CONTAINER_INIT = "tini"
FLOOR = "floor: `submit --wait --json` exits with Running"


@dataclass
class Figures:
    """The series of one hub (one spawner)."""

    name: str
    ready: Series = field(init=False)
    routed: Series = field(init=False)
    stop: Series = field(init=False)
    rss_rest: Series = field(init=False)
    rss_total: Series = field(init=False)
    stepd: Series = field(init=False)
    # The last round's processes: label -> (count, MB)
    processes: dict[str, tuple[int, float]] = field(default_factory=dict)
    # Where the spawn goes: milestone -> seconds after the POST, one value per round
    marks: dict[str, Series] = field(default_factory=dict)

    def mark(self, what: str, seconds: float | None) -> None:
        series = self.marks.setdefault(what, Series(f"{self.name}: {what}"))
        if seconds is None:
            series.fail("not found in the logs")
        else:
            series.add(seconds)

    def __post_init__(self) -> None:
        n = self.name
        self.ready = Series(f"{n}: REST spawn until the user model says ready")
        self.routed = Series(f"{n}: REST spawn until /user/NAME/api answers through the proxy "
                             "(informational)")
        self.stop = Series(f"{n}: REST stop until the hub has stopped it and squeue no longer "
                           "lists the job")
        self.rss_rest = Series(f"{n}: RSS of the job's processes besides JupyterLab")
        self.rss_total = Series(f"{n}: RSS of the job's processes, total")
        self.stepd = Series(f"{n}: RSS of the job's slurmstepd (root's; informational)")

    def times(self) -> list[Series]:
        return [self.ready, self.routed, self.stop]

    def memory(self) -> list[Series]:
        return [self.rss_rest, self.rss_total, self.stepd]


@dataclass
class Side:
    """One hub with its spawner."""

    label: str  # the spawner and its version
    hub: hub_bed.Hub
    figures: Figures
    leftovers: Callable[[str], list[str]] = lambda job: []  # files a job leaves behind
    output: Callable[[str], str] | None = None  # the server's job's output file
    output_marks: tuple[tuple[str, str], ...] = ()  # (milestone, pattern) in that file


# -- one round on one hub -----------------------------------------------------------------------
def until_ready(hub: hub_bed.Hub, t0: float, jobs: list[str]) -> float:
    """Read the user model every POLL s until the server is ready; seconds since t0. Every job
    id the spawner's state shows on the way is kept in `jobs` (and for the final cleanup)."""
    while True:
        status, model = hub.api("GET", f"users/{U1}")
        server = model.get("servers", {}).get("", {}) if status == 200 else {}
        job = str((server.get("state") or {}).get("job_id") or "")
        if job.isdigit() and job not in jobs:
            jobs.append(job)
            bl.CLEANUP.jobs.append(job)
        if server.get("ready"):
            return time.monotonic() - t0
        if status == 200 and not server:
            raise AssertionError(f"the spawn failed (the hub dropped the server): "
                                 f"{hub_errors(hub)}")
        if time.monotonic() - t0 > SPAWN_TIMEOUT:
            raise AssertionError(f"not ready after {SPAWN_TIMEOUT:.0f} s")
        time.sleep(POLL)


def hub_errors(hub: hub_bed.Hub) -> str:
    """The hub log's last error lines (the hub logs no secret at INFO; ours none at DEBUG)."""
    with contextlib.suppress(OSError):
        lines = [line for line in hub.log().splitlines()
                 if line.startswith("[E ") or "rror" in line]
        return bl.tail("\n".join(lines), 2) or "no error in the hub's log"
    return "the hub's log is unreadable"


def is_server(argv: list[str]) -> bool:
    """The single-user server itself (the script, or an interpreter running it): not srun or
    a shell whose arguments merely name it."""
    names = [os.path.basename(a) for a in argv[:2]]
    if not names:
        return False
    return names[0] in SERVERS or (names[0].startswith("python") and len(names) > 1
                                   and names[1] in SERVERS)


def lab_of(argv: dict[int, list[str]], parents: dict[int, int | None]) -> set[int]:
    """Of a job's processes (their argv and parent pids): JupyterLab itself, i.e. each
    outermost single-user server with its descendants, and its parent when that is the
    container's init (tini, as bench/overhead.py counts the container's tree)."""
    tops = {p for p in argv if is_server(argv[p]) and not is_server(argv.get(parents[p], []))}
    lab, frontier = set(tops), set(tops)
    while frontier:  # their descendants, within the job
        frontier = {p for p in argv if parents[p] in frontier and p not in lab}
        lab |= frontier
    for top in tops:
        up = parents[top]
        if up in argv and os.path.basename((argv[up] or [""])[0]) == CONTAINER_INIT:
            lab.add(up)
    return lab


def label(argv: list[str], in_lab: bool) -> str:
    names = [os.path.basename(a) for a in argv[:2]]
    if not names:
        return "(gone)"
    name = names[1] if names[0].startswith("python") and len(names) > 1 else names[0]
    if "sh-jupyter" in (name, *argv[1:5]) and "run" in argv:
        # the supervisor, or what it became for the idle wait ("... sh-jupyter run (idle)")
        name = "sh-jupyter run (supervisor" + (", idle wait)" if "(idle)" in argv else ")")
    elif "system service" in " ".join(argv):
        name = "podman system service"
    return f"{name} (JupyterLab)" if in_lab else name


def measure_rss(job: str, figures: Figures) -> None:
    """RSS of the job's non-root processes on this node, in total and besides JupyterLab."""
    pids = {p for p in bl.job_pids(job) if real_uid(p) not in (None, 0)}
    argv = {p: bl.argv_of(p) for p in pids}
    lab = lab_of(argv, {p: bl.parent(p) for p in pids})
    rss = bl.rss_mb(pids)
    if not rss or not lab:
        why = (f"no process of job {job} found (its cgroup, scontrol listpids)" if not rss
               else f"no {' or '.join(SERVERS)} among job {job}'s processes")
        figures.rss_rest.fail(why)
        figures.rss_total.fail(why)
    else:
        figures.rss_total.add(sum(rss.values()))
        figures.rss_rest.add(sum(mb for pid, mb in rss.items() if pid not in lab))
        breakdown: dict[str, list[float]] = defaultdict(list)
        for pid, mb in rss.items():
            breakdown[label(argv[pid], pid in lab)].append(mb)
        figures.processes = {k: (len(v), sum(v)) for k, v in breakdown.items()}
    stepd = bl.rss_mb(bl.slurmstepd_pids(job))
    if stepd:
        figures.stepd.add(sum(stepd.values()))
    else:
        figures.stepd.fail(f"no slurmstepd of job {job}")


def stop_and_time(hub: hub_bed.Hub, jobs: list[str], series: Series | None) -> None:
    """DELETE the server; time until the hub no longer lists it and no job is active."""
    t1 = time.monotonic()
    status, body = hub.api("DELETE", f"users/{U1}/server", timeout=STOP_TIMEOUT)

    def done() -> bool:
        return not hub.server(U1) and all(bed.job_state(j) not in bl.ACTIVE for j in jobs)
    try:
        bed.wait_for(done, STOP_TIMEOUT, "the hub to stop the server and its job to be gone",
                     interval=POLL)
        took = time.monotonic() - t1
        if series is not None:
            if status in (202, 204):
                series.add(took)
            else:
                series.fail(f"DELETE answered {status}: {str(body)[:200]}")
    except AssertionError as exc:
        if series is not None:
            series.fail(str(exc))
    for job in jobs:
        with contextlib.suppress(AssertionError):
            bl.wait_job_end(job, 120)
        bl.CLEANUP.jobs.remove(job)


# -- where the spawn goes ---------------------------------------------------------------------
SLURM_LOGS = "/var/log/sh-jupyter-testbed"  # testbed/steps/60-slurm.sh


def _stamp(text: str) -> float | None:
    """Epoch seconds of a log line's time ("2026-12-07T16:00:36.897Z", "[2026-12-07T16:00:36.897]"
    from Slurm, "[I 2026-12-07 16:00:36.897 ServerApp]" from Jupyter); the bed runs in UTC."""
    text = text.strip("[]Z").replace("T", " ")
    try:
        when = datetime.strptime(text[:23], "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc).timestamp()


def _first(path: str, pattern: str) -> float | None:
    """The time of the first line of `path` matching `pattern` (its stamp is the first
    bracketed or leading field), None when there is none."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if re.search(pattern, line):
                found = re.search(r"\d{4}-\d\d-\d\d[T ][\d:.]+", line)
                return _stamp(found.group(0)) if found else None
    return None


def job_workdir(job: str) -> str:
    """The job's working directory (a session's: its output.log is there)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%Z"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "/nonexistent"


def milestones(side: Side, job: str, t0: float, figures: Figures) -> None:
    """Where one spawn went, from the Slurm daemons' logs and the server's own output, in
    seconds after the REST POST (wall clock, t0)."""
    ctld = os.path.join(SLURM_LOGS, "slurmctld", "slurmctld.log")
    marks = [("sbatch accepted by slurmctld", ctld, rf"submit_batch_job: JobId={job}\b"),
             ("job allocated a node", ctld, rf"Allocate JobId={job}\b"),
             ("batch script launched by slurmd", os.path.join(SLURM_LOGS, "slurmd.log"),
              rf"Launching batch job {job}\b")]
    if side.output is not None:
        marks += [(what, side.output(job), pattern) for what, pattern in side.output_marks]
    for what, path, pattern in marks:
        when = _first(path, pattern)
        figures.mark(what, None if when is None else when - t0)


def run_hub(side: Side, figures: Figures, settle: float) -> None:
    hub, jobs = side.hub, []
    t0, wall0 = time.monotonic(), time.time()
    status, body = hub.api("POST", f"users/{U1}/server")
    spawned = status in (201, 202)
    if not spawned:
        figures.ready.fail(f"POST answered {status}: {str(body)[:200]}")
    else:
        try:
            figures.ready.add(until_ready(hub, t0, jobs))
        except AssertionError as exc:
            figures.ready.fail(str(exc))
            spawned = False
    if spawned:
        try:
            bed.wait_for(lambda: hub_bed.answers(f"{hub.url}/user/{U1}/api"), 60, "the route",
                         interval=0.005)
            figures.routed.add(time.monotonic() - t0)
        except AssertionError as exc:
            figures.routed.fail(str(exc))
        if jobs:
            milestones(side, jobs[-1], wall0, figures)
            figures.mark("the hub says ready", figures.ready.values[-1]
                         if figures.ready.values else None)
            time.sleep(settle)
            measure_rss(jobs[-1], figures)
    stop_and_time(hub, jobs, figures.stop if spawned else None)
    for job in jobs:
        for path in side.leftovers(job):
            with contextlib.suppress(OSError):
                os.remove(path)


def run_floor(config: str, series: Series) -> None:
    sub = Submission(U1, config)
    sub.wait()
    if sub.ready():
        series.add(sub.done_at - sub.t0)
    else:
        series.fail(sub.error())
    sub.cancel()
    sub.forget()


# -- the hubs -----------------------------------------------------------------------------------
def our_side(env: dict[str, str], poll_interval: int) -> Side:
    import sh_jupyter

    config = bl.write_config(f'{bl.CONFIG_TEXT}[image]\nname = "{env["HUB_IMAGE"]}"\n'
                             f'store = "{env["HUB_STORE"]}"\n')
    hub = hub_bed.Hub(config, poll_interval=poll_interval)
    return Side(f"sh-jupyter {sh_jupyter.__version__}", hub, Figures("sh-jupyter"),
                output=lambda job: os.path.join(job_workdir(job), "output.log"),
                output_marks=(("supervisor's first line", r"sh-jupyter: session .* starting"),
                              ("container started", r"sh-jupyter: container started"),
                              ("JupyterLab answers: Running",
                               r"sh-jupyter: JupyterLab is running")))


def peer_side(args: argparse.Namespace, poll_interval: int) -> Side:
    """batchspawner's hub (installed first if needed); RuntimeError when it cannot be had."""
    installed = peer.ensure(args.peer_force, args.batchspawner)
    hub = peer.peer_hub(installed, poll_interval)
    home = pwd.getpwnam(U1).pw_dir
    # The output file of batchspawner's default batch script (--output in the user's home).

    def log(job: str) -> str:
        return os.path.join(home, f"jupyterhub_slurmspawner_{job}.log")
    return Side(installed.label(), hub, Figures("batchspawner"), lambda job: [log(job)],
                output=log,
                output_marks=(("the server's first log line", r"^\[[IDWE] "),
                              ("the server listens", r"running at|Jupyter Server .* is running")))


def start(side: Side) -> None:
    bl.CLEANUP.first.append(side.hub.close)
    bl.CLEANUP.paths.append(side.hub.workdir)
    side.hub.start()


# -- the report ---------------------------------------------------------------------------------
def side_by_side(ours: Side, theirs: Side) -> str:
    rows = []
    for what, a, b, unit in (
            ("REST spawn until the hub says ready", ours.figures.ready, theirs.figures.ready,
             "s"),
            ("... until the server answers through the proxy (informational)",
             ours.figures.routed, theirs.figures.routed, "s"),
            ("REST stop until the hub is done and the job is gone", ours.figures.stop,
             theirs.figures.stop, "s"),
            ("RSS of the job's processes besides JupyterLab", ours.figures.rss_rest,
             theirs.figures.rss_rest, "MB"),
            ("RSS of the job's processes, total", ours.figures.rss_total,
             theirs.figures.rss_total, "MB"),
            ("RSS of the job's slurmstepd (informational)", ours.figures.stepd,
             theirs.figures.stepd, "MB")):
        digits = 3 if unit == "s" else 1
        rows.append([what, f"{bl.fmt(a.median(), unit, digits)} ({a.ok})",
                     f"{bl.fmt(b.median(), unit, digits)} ({b.ok})",
                     bl.ratio(a.median(), b.median())])
    return bl.table(["median", ours.label, theirs.label,
                     f"ours / {theirs.label.split()[0]}'s"], rows)


def marks_row(series: Series) -> list[str]:
    if not series.values:
        return ["n/a", "n/a", "n/a"]
    ordered = sorted(series.values)
    return [f"{statistics.median(ordered):.3f} s", f"{ordered[0]:.3f} s", f"{ordered[-1]:.3f} s"]


def processes_table(sides: list[Side]) -> str:
    rows = []
    for side in sides:
        for name, (count, mb) in sorted(side.figures.processes.items(),
                                        key=lambda kv: -kv[1][1]):
            rows.append([side.label, name + (f" (x{count})" if count > 1 else ""),
                         f"{mb:.1f} MB"])
    return bl.table(["spawner", "process of the job (last round)", "RSS"], rows)


def report(args: argparse.Namespace, env: dict[str, str], floor: Series, ours: Side,
           theirs: Side | None, peer_error: str, load0: float) -> str:
    sides = [ours, *([theirs] if theirs else [])]
    times = [s for side in sides for s in side.figures.times()]
    memory = [s for side in sides for s in side.figures.memory()]
    text = ["## JupyterHub: spawn, stop and memory, side by side (as shjuser1)\n",
            f"{bl.machine_note()}, JupyterHub {env['JUPYTERHUB_VERSION']}. {args.runs} runs, "
            "variants interleaved (order rotated), one warm-up round not counted. Load "
            f"average before: {load0:.2f}. Jobs ask for `{' '.join(SUBMIT_ARGS)}`; both hubs' "
            f"spawners ask for the same. The user model and squeue are read every "
            f"{POLL * 1000:.0f} ms; RSS is read {args.settle:g} s after the route answers.\n"]
    if theirs:
        text += ["### Side by side\n", side_by_side(ours, theirs)]
    else:
        text.append(f"The peer (batchspawner) was not measured: {peer_error}\n")
    text += ["### Wall time\n", bl.table(bl.SERIES_HEADERS, bl.series_rows([floor, *times],
                                                                           floor)),
             "### Memory of the server's Slurm job on the node\n",
             bl.table(bl.SERIES_HEADERS[:5],
                      [row[:5] for row in bl.series_rows(memory, None, unit="MB", digits=1)]),
             processes_table(sides),
             "### Where the spawn goes (seconds after the REST POST; medians)\n",
             bl.table(["spawner", "milestone", "median", "min", "max"],
                      [[side.label, series.name.split(": ", 1)[1], *marks_row(series)]
                       for side in sides for series in side.figures.marks.values()]),
             "From the Slurm daemons' logs (millisecond stamps) and the server's own output "
             "(ours: the supervisor's output.log; batchspawner's: its job's log file).\n",
             "sh-jupyter's spawn includes what `submit --wait` does (sbatch, Slurm, the "
             "prolog, the container, readiness) plus the spawner's user-side commands "
             "(`sh-jupyter submit --stdin`, `sh-jupyter wait --no-scheduler`), "
             "jupyterhub-singleuser's own start instead of JupyterLab's, and the hub's check "
             "that the server answers. batchspawner's: `sbatch` through `runuser`, `squeue` "
             "every 0.5 s until RUNNING, then waiting for batchspawner-singleuser (under "
             "`srun`) to report its port to the hub, and the same check. Its job's processes "
             "are the batch shell, srun and the server; ours are the supervisor, conmon, the "
             "network helper, the user's rootless pause process and the container.\n"]
    failures = [f"- {s.name}: {why}" for s in [floor, *times, *memory] for why in s.failures]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    return "\n".join(text)


def main(args: argparse.Namespace) -> int:
    env = hub_bed.hub_env()
    poll_interval = 30
    ours = our_side(env, poll_interval)
    theirs, peer_error = None, "left out (--no-peer)"
    if args.peer:
        try:
            theirs = peer_side(args, poll_interval)
        except (RuntimeError, OSError, KeyError) as exc:
            peer_error = f"installing it failed: {exc}"
            say(f"peer: {peer_error}")
    start(ours)
    if theirs:
        try:
            start(theirs)
        except AssertionError as exc:
            peer_error = f"its hub did not start: {bl.tail(str(exc), 5)}"
            say(f"peer: {peer_error}")
            theirs = None
    floor = Series(FLOOR)
    config = ours.hub.site_config
    load0 = os.getloadavg()[0]
    sides = [ours, *([theirs] if theirs else [])]
    say("warm-up (not counted)")
    run_floor(config, Series(FLOOR))
    for side in sides:
        run_hub(side, Figures(side.figures.name), args.settle)
    steps = {"floor": lambda: run_floor(config, floor)}
    for side in sides:
        steps[side.figures.name] = lambda s=side: run_hub(s, s.figures, args.settle)
    for i in range(args.runs):
        say(f"run {i + 1}")
        for name in bl.rotated(list(steps), i):
            steps[name]()
        say(bl.round_line({"floor": floor, **{f"{s.figures.name} ready": s.figures.ready
                                              for s in sides},
                           **{f"{s.figures.name} stop": s.figures.stop for s in sides}}))
    for side in sides:
        side.hub.close()
    bl.write_result("hub", report(args, env, floor, ours, theirs, peer_error, load0))
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="measure batchspawner's SlurmSpawner too (default: yes)")
    parser.add_argument("--peer-force", action="store_true",
                        help="rebuild the peer's venvs first (bench/peer.py --force)")
    parser.add_argument("--batchspawner", default=peer.BATCHSPAWNER,
                        help=f"the peer's batchspawner version (default {peer.BATCHSPAWNER})")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between the route answering and reading RSS")
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    raise SystemExit(bl.main_wrapper(lambda: main(options)))
