"""Shared helpers of the benchmarks: acting as test users (through tests/bed.py), timing,
cleanup, and Markdown tables.

Benchmarks measure; they never assert. A variant that fails in a run is counted as not ok and
left out of that variant's figures; the script still prints its table.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/run --release NAME runs the benchmarks inside that userland and keeps its tables apart.
RESULTS = os.environ.get("SHJ_BENCH_RESULTS") or os.path.join(REPO, "bench", "results")
sys.path.insert(0, os.path.join(REPO, "tests"))

import bed  # noqa: E402

# A port range of our own: the Podman tests use 31000-31999, the end-to-end tests 32000-32999.
PORT_MIN, PORT_MAX = 33000, 33999
CONFIG_TEXT = f"[network]\nport_min = {PORT_MIN}\nport_max = {PORT_MAX}\n"
# The stock-JupyterLab baseline (bench/stock/Containerfile): same versions, plain install.
STOCK_IMAGE = "localhost/sh-jupyter/stock-jupyterlab:latest"
STOCK_CONTAINERFILE = os.path.join(REPO, "bench", "stock", "Containerfile")
STOCK_COMMAND = ("jupyter", "lab")
SESSIONS = "shj-bench-sessions"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics and tables ---------------------------------------------------------------------
@dataclass
class Series:
    """The measurements of one variant (seconds unless said otherwise)."""

    name: str
    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    def fail(self, why: str) -> None:
        self.failures.append(why)
        say(f"  {self.name}: FAILED: {why}")

    @property
    def ok(self) -> str:
        return f"{len(self.values)}/{len(self.values) + len(self.failures)}"

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def fmt(value: float | None, unit: str = "s", digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def ratio(value: float | None, floor: float | None) -> str:
    return "n/a" if value is None or not floor else f"{value / floor:.2f}x"


def series_rows(series: Sequence[Series], floor: Series | None,
                targets: dict[str, str] | None = None, unit: str = "s",
                digits: int = 3) -> list[list[str]]:
    """Rows: variant, ok, median, min, max, ratio of medians to the floor, target."""
    rows = []
    base = floor.median() if floor else None
    for s in series:
        values = s.values
        rows.append([s.name, s.ok, fmt(s.median(), unit, digits),
                     fmt(min(values) if values else None, unit, digits),
                     fmt(max(values) if values else None, unit, digits),
                     ratio(s.median(), base), (targets or {}).get(s.name, "")])
    return rows


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


SERIES_HEADERS = ("variant", "ok", "median", "min", "max", "ratio to floor", "target")


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def say(line: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown result."""
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    sys.stderr.flush()


def round_line(named: dict[str, Series], unit: str = "s", digits: int = 2) -> str:
    """One progress line after a round: each series' latest figure ("  ours 3.47 s, ..."),
    leaving out the series that have none yet."""
    return "  " + ", ".join(f"{label} {s.values[-1]:.{digits}f} {unit}".rstrip()
                            for label, s in named.items() if s.values)


def _cmd(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "?"


def os_name() -> str:
    """PRETTY_NAME of /etc/os-release ("Debian GNU/Linux 13 (trixie)")."""
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def machine_note() -> str:
    """Where and when: enough to tell a quiet run from a noisy one."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = _cmd(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, host `{socket.gethostname()}`, "
            f"{os.cpu_count()} CPUs, kernel {platform.release()}, {os_name()}, "
            f"{_cmd(['podman', '--version'])}, {_cmd(['sinfo', '--version'])}"
            f", commit {commit}{' (dirty)' if dirty not in ('', '?') else ''}, "
            f"load average {load}")


def write_result(name: str, text: str) -> str:
    """Print the Markdown and keep it as bench/results/<name>.md."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    sys.stdout.write(text)
    sys.stdout.flush()
    return path


def rotated(variants: Sequence, run: int) -> list:
    """The variants in a different order each run, so none always goes first."""
    k = run % len(variants)
    return [*variants[k:], *variants[:k]]


# -- /proc ------------------------------------------------------------------------------------
def status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/PID/status (None once the process is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def children(pid: int) -> list[int]:
    kids = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                kids += [int(p) for p in fh.read().split()]
    return kids


def tree(root: int) -> set[int]:
    """The process and all its descendants."""
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children(pid)
    return out


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def argv_of(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def job_pids(job_id: str) -> set[int]:
    """Every process of a Slurm job on this node, as Slurm tracks them: those in the job's
    cgroup (proctrack/cgroup, cgroup v1 or v2: a path component `job_ID` in /proc/PID/cgroup,
    read as root, so relative to the host's cgroup root; a rootless container stays in the
    job's cgroup), else what `scontrol listpids ID` names (any proctrack plugin)."""
    pids = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cgroup", encoding="utf-8", errors="replace") as fh:
                if in_job_cgroup(fh.read(), job_id):
                    pids.add(int(name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    if pids:
        return pids
    try:
        out = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return listed_pids(out)


def in_job_cgroup(proc_cgroup: str, job_id: str) -> bool:
    """Whether /proc/PID/cgroup text puts the process in the job's cgroup in any hierarchy
    (v1 `.../slurm/uid_U/job_ID/step_S/...`, v2 `.../slurmstepd.scope/job_ID/...`)."""
    mark = re.compile(rf"/job_{re.escape(job_id)}(/|$)")
    return any(mark.search(line.split(":", 2)[-1]) for line in proc_cgroup.splitlines())


def listed_pids(listpids: str) -> set[int]:
    """The pids of `scontrol listpids` output (a header, then `PID JOBID STEPID ...` lines)."""
    return {int(line.split()[0]) for line in listpids.splitlines()
            if line.split() and line.split()[0].isdigit()}


def slurmstepd_pids(job_id: str) -> set[int]:
    """The job's slurmstepd processes (root's, one per step: `slurmstepd: [ID.batch]`)."""
    title = f"slurmstepd: [{job_id}."
    return {int(name) for name in filter(str.isdigit, os.listdir("/proc"))
            if cmdline(int(name)).startswith(title)}


def rss_mb(pids: Iterable[int]) -> dict[int, float]:
    """Resident memory of each process (psutil; MB of 2**20 bytes, as overhead.py), read once;
    a process gone meanwhile is left out."""
    import psutil

    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out[pid] = psutil.Process(pid).memory_info().rss / 2**20
    return out




def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def podman_service_of(supervisor: int) -> int | None:
    """The session's own `podman system service` (a child of the supervisor)."""
    for kid in children(supervisor):
        if "system service" in cmdline(kid):
            return kid
    return None


# -- ports, config, users ---------------------------------------------------------------------
def free_port() -> int:
    """A random free port of our range (the floor variants publish one like the launcher)."""
    from sh_jupyter import benchmarking

    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(PORT_MIN, PORT_MAX)
        if benchmarking.port_is_free("0.0.0.0", port):
            return port
    raise RuntimeError(f"no free port in {PORT_MIN}-{PORT_MAX}")


def shared_dir() -> str:
    """A directory test users can read, removed at the end (see Cleanup)."""
    path = tempfile.mkdtemp(prefix="shj-bench-", dir="/tmp")
    os.chmod(path, 0o755)
    CLEANUP.paths.append(path)
    return path


def json_docs(text: str) -> list[dict]:
    """The JSON documents `submit --json --wait` prints one after the other."""
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        try:
            obj, i = decoder.raw_decode(text, i)
        except ValueError:
            break
        out.append(obj)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def write_config(text: str = CONFIG_TEXT) -> str:
    path = os.path.join(shared_dir(), "config.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o644)
    return path


def image_config(image: str, command: Sequence[str]) -> str:
    """A bench config that runs another image or start command (for the floor variants)."""
    commands = ", ".join(f'"{part}"' for part in command)
    return write_config(f'{CONFIG_TEXT}[image]\nname = "{image}"\ncommand = [{commands}]\n')


def ensure_stock_image(store: str | None = None, cache_dir: str | None = None) -> str:
    """Build the stock baseline into the shared store unless it is there and current.

    The build script compares content hashes and returns in a fraction of a second when the
    store already holds this build; from scratch it takes a few minutes (pip from PyPI), and it
    reuses the sh-jupyter image's debootstrap base. Returns "" or why it failed.
    """
    argv = [os.path.join(REPO, "packaging", "image", "build"), "--store", store or bed.STORE,
            "--tag", STOCK_IMAGE, "--containerfile", STOCK_CONTAINERFILE]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    say(f"stock baseline: {STOCK_IMAGE} (built only if missing or stale)")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                             cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"building {STOCK_IMAGE} failed: {exc}"
    if out.returncode != 0:
        return f"building {STOCK_IMAGE} failed ({out.returncode}): {tail(out.stderr, 5)}"
    say(f"  {tail(out.stderr, 1)}")
    return ""


def home_of(user: str) -> str:
    return pwd.getpwnam(user).pw_dir


# -- cleanup ----------------------------------------------------------------------------------
class Cleanup:
    """Everything a benchmark started, so that nothing outlives it, even on failure or ^C."""

    def __init__(self) -> None:
        self.sessions: list[bed.Session] = []
        self.containers: list[tuple[str, str]] = []  # (user, name)
        self.jobs: list[str] = []
        self.paths: list[str] = []
        self.first: list[Callable[[], None]] = []  # e.g. learn the job id of a cut-off submit

    def run(self) -> None:
        for step in self.first:
            with contextlib.suppress(Exception):
                step()
        for s in self.sessions:
            with contextlib.suppress(Exception):
                end_session(s)
        for user, name in self.containers:
            bed.podman(user, "rm", "-f", "-t", "0", name, timeout=120)
        if self.jobs:
            subprocess.run(["scancel", *self.jobs], capture_output=True, check=False)
            for job in self.jobs:
                with contextlib.suppress(AssertionError):
                    wait_job_end(job, 120)
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        for user in bed.USERS:  # our sessions' parent, once empty
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(home_of(user), SESSIONS))
        self.sessions, self.containers, self.jobs, self.paths, self.first = [], [], [], [], []


CLEANUP = Cleanup()


def main_wrapper(body: Callable[[], int]) -> int:
    """Run a benchmark as root; clean up on every way out (SIGTERM becomes KeyboardInterrupt)."""
    if os.geteuid() != 0:
        sys.stderr.write("benchmarks act as the test users and must run as root\n")
        return 2
    problems = bed.missing()
    if problems:
        sys.stderr.write("test bed incomplete:\n  - " + "\n  - ".join(problems) + "\n")
        return 2

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return body()
    except KeyboardInterrupt:
        say("interrupted: no result written")
        return 130
    finally:
        say("cleaning up")
        CLEANUP.run()


# -- sessions (sh-jupyter run --local) --------------------------------------------------------
@dataclass
class LocalRun:
    seconds: float | None
    session: bed.Session
    wall0: float  # time.time() just before the Popen, to place the log's timestamps
    error: str = ""

    def phases(self) -> dict[str, float]:
        """Seconds from the Popen to milestones of the supervisor's own log (ms stamps)."""
        marks = {"first": "", "started": "container started on port",
                 "running": "JupyterLab is running"}
        out: dict[str, float] = {}
        for line in self.session.log().splitlines():
            stamp, _, message = line.partition(" sh-jupyter: ")
            try:
                when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=timezone.utc).timestamp()
            except ValueError:
                continue
            for key, text in marks.items():
                if key not in out and text in message:
                    out[key] = when - self.wall0
        return out


def launch_local(user: str, config: str, timeout: float = 180) -> LocalRun:
    """(c): from Popen of `sh-jupyter run --local` until connection.yml exists (5 ms polls)."""
    session, t0, wall0 = start_session(user, config)
    conn = os.path.join(session.session_dir, "connection.yml")
    while True:
        if os.path.exists(conn):
            return LocalRun(time.monotonic() - t0, session, wall0)
        if session.proc.poll() is not None:
            return LocalRun(None, session, wall0, f"supervisor exited ({session.proc.returncode}): "
                            f"{tail(session.log())}")
        if time.monotonic() - t0 > timeout:
            return LocalRun(None, session, wall0, f"not ready after {timeout:.0f} s")
        time.sleep(0.005)


def start_session(user: str, config: str) -> tuple[bed.Session, float, float]:
    """bed.start_session, but with the session under ~/shj-bench-sessions and a log we own;
    also returns the monotonic and the wall-clock time just before the Popen."""
    import uuid

    session_id = str(uuid.uuid4())
    session_dir = os.path.join(home_of(user), SESSIONS, session_id)
    log_path = os.path.join(shared_dir(), "output.log")
    with open(log_path, "wb") as log:
        t0, wall0 = time.monotonic(), time.time()
        proc = bed.popen_as_user(user, [bed.SH, "--config", config, "run", "--local",
                                        "--session-dir", session_dir, "--session-id",
                                        session_id], stdout=log, stderr=subprocess.STDOUT)
    session = bed.Session(user, session_id, session_dir, proc, log_path)
    CLEANUP.sessions.append(session)
    CLEANUP.paths.append(session_dir)
    return session, t0, wall0


def tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])


def end_session(session: bed.Session, timeout: float = 60) -> tuple[int | None, int | None]:
    """SIGTERM the supervisor itself (not runuser), follow its teardown, wait for its exit.

    Returns (VmHWM in kB last seen before it exited, the supervisor's exit status). /proc is
    read every 5 ms during teardown, so the peak includes the teardown's own work.
    """
    if session in CLEANUP.sessions:
        CLEANUP.sessions.remove(session)
    if session.proc.poll() is not None:
        return None, session.proc.returncode
    try:
        pid = session.supervisor_pid()
    except (FileNotFoundError, IndexError, ValueError):
        session.proc.wait(timeout)
        return None, session.proc.returncode
    hwm = status_kb(pid, "VmHWM")
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        now = status_kb(pid, "VmHWM")
        if now is None:
            break
        hwm = max(hwm or 0, now)
        time.sleep(0.005)
    try:
        code = session.proc.wait(max(1.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        session.proc.kill()
        code = None
    shutil.rmtree(session.session_dir, ignore_errors=True)
    return hwm, code


# -- Slurm --------------------------------------------------------------------------------------
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT")


def wait_job_end(job: str, timeout: float) -> str:
    """Wait until the job (and its epilog: COMPLETING) is over; its final state."""
    state = bed.wait_for(lambda: (s := bed.job_state(job)) not in ACTIVE and s, timeout,
                         f"job {job} to end", interval=0.2)
    return str(state)


def container_gone(user: str, name: str) -> bool:
    return name not in bed.containers_of(user, name)


class LineReader:
    """Collect a pipe's output in a thread (so the reader can poll other things meanwhile)."""

    def __init__(self, stream) -> None:
        self.chunks: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.lock:
                self.chunks.append(line)

    def text(self) -> str:
        with self.lock:
            return "".join(self.chunks)


SESSION_DIR_RE = re.compile(r'"session_dir":\s*"([^"]+)"')
