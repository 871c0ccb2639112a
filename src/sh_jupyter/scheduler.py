"""Scheduler access behind one small interface: submit, job states, cancel.

The Slurm CLI backend works on 22.05 and 23.02+ (squeue.py picks the squeue form for the
installed version, detected once per process); pyslurm is used when it imports and was built
for the Slurm that is installed (PyPI's pyslurm builds only against matching headers).

Lookups never fetch the whole queue (issue 14: `squeue --json` on 22.05 cost 420 MB and over a
second per call with 9,000 jobs of other users), and a lookup that gets no definite answer
raises SchedulerError ("unknown"), never reports a job as gone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import Protocol

from . import squeue
from .errors import SchedulerError, SessionFailure
from .slurm_jobs import JobInfo

SLURM_TIMEOUT = 30


class Scheduler(Protocol):
    name: str

    def submit(self, options: list[str], script: str) -> str: ...
    def job(self, job_id: str) -> JobInfo | None: ...
    def jobs(self, user: str) -> list[JobInfo]: ...
    def states(self, job_ids: Iterable[str], user: str | None = None,
               ) -> dict[str, JobInfo | None]: ...
    def cancel(self, job_id: str) -> None: ...


def _run(argv: list[str], env: Mapping[str, str] | None = None,
         error: type[SessionFailure] = SessionFailure) -> subprocess.CompletedProcess:
    if not shutil.which(argv[0], path=(env or os.environ).get("PATH")):
        raise error(f"{argv[0]} is not installed (Slurm client commands are needed)")
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        raise error(f"{argv[0]} did not answer within {SLURM_TIMEOUT} s") from None
    except OSError as exc:
        raise error(f"{argv[0]} could not run: {exc}") from None


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())


def squeue_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without the user's SQUEUE_* settings: SQUEUE_PARTITION, _ACCOUNT,
    _NAMES or _QOS would hide the user's own jobs from us (they would look gone), and
    SQUEUE_FORMAT would change the output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEUE_")}
    env.update(extra)
    return env


_VERSION: list[tuple[int, int, int]] = []  # the answer, once squeue gave one


def squeue_version() -> tuple[int, int, int] | None:
    """The installed squeue's version, asked once per process (a few ms); None when unknown
    (then the text form, which every version understands, is used). A failed probe is asked
    again next time: one transient failure must not pin a long-running hub to the text form."""
    if _VERSION:
        return _VERSION[0]
    try:
        out = _run(["squeue", "--version"], error=SchedulerError)
    except SchedulerError:
        return None
    version = squeue.parse_version(out.stdout) if out.returncode == 0 else None
    if version is not None:
        _VERSION.append(version)
    return version


class SlurmCLI:
    """The Slurm command-line tools (`sbatch`, `squeue`, `scancel`)."""

    name = "slurm-cli"

    def __init__(self, cluster: str = "") -> None:
        self.cluster_args = ["-M", cluster] if cluster else []

    def submit(self, options: list[str], script: str) -> str:
        out = _run(["sbatch", "--parsable", *self.cluster_args, *options, script])
        if out.returncode != 0:
            raise SessionFailure(f"sbatch refused the job: {_one_line(out.stderr)}")
        return out.stdout.strip().split(";")[0]

    def _ask(self, job_ids: Iterable[str] = (), user: str | None = None) -> tuple[
            frozenset[str], list[JobInfo]]:
        """One squeue call; the ids asked for and the jobs in the answer."""
        try:
            query = squeue.plan(squeue_version(), job_ids, user, self.cluster_args)
        except ValueError as exc:
            raise SchedulerError(str(exc)) from None
        out = _run(list(query.argv), env=squeue_env(query.env), error=SchedulerError)
        return query.job_ids, squeue.read(query, out.returncode, out.stdout, out.stderr)

    def states(self, job_ids: Iterable[str], user: str | None = None,
               ) -> dict[str, JobInfo | None]:
        """Every job id's state from one squeue call: its JobInfo, or None when it is
        definitely not in the queue. `user` (name or uid), when all the jobs are that user's,
        lets slurmctld filter by user. SchedulerError when the answer is not definite."""
        asked, jobs = self._ask(job_ids, user)
        found = {j.job_id: j for j in jobs}
        return {job_id: found.get(job_id) for job_id in asked}

    def job(self, job_id: str) -> JobInfo | None:
        return self.states([job_id])[job_id]

    def jobs(self, user: str) -> list[JobInfo]:
        """The user's jobs (name or uid), finished ones still in the queue included."""
        return self._ask(user=user)[1]

    def cancel(self, job_id: str) -> None:
        out = _run(["scancel", *self.cluster_args, job_id])
        if out.returncode != 0:
            raise SessionFailure(f"scancel failed: {_one_line(out.stderr)}")


def _slurm_version() -> str:
    out = _run(["sinfo", "--version"])
    match = re.search(r"(\d+\.\d+)", out.stdout)
    return match.group(1) if match else ""


def pyslurm_usable() -> bool:
    """True when pyslurm imports and was built for the installed Slurm's major.minor."""
    try:
        import pyslurm
    except ImportError:
        return False
    try:
        built = ".".join(str(pyslurm.version()).split(".")[:2])
        return bool(built) and built == _slurm_version()
    except (AttributeError, SessionFailure):
        return False


def get_scheduler(cluster: str = "") -> Scheduler:
    """The best available backend; SH_JUPYTER_SCHEDULER=slurm-cli forces the CLI."""
    if os.environ.get("SH_JUPYTER_SCHEDULER") != "slurm-cli" and not cluster \
            and pyslurm_usable():
        from .scheduler_pyslurm import PySlurm
        return PySlurm()
    return SlurmCLI(cluster)
