"""Scheduler access behind one small interface: submit, job state, cancel.

The Slurm CLI backend works on 22.05 and 24.x+; pyslurm is used when it imports and was built
for the Slurm that is installed (PyPI's pyslurm builds only against matching headers).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Protocol

from .errors import SessionFailure
from .slurm_json import JobInfo, parse_jobs

SLURM_TIMEOUT = 30


class Scheduler(Protocol):
    name: str

    def submit(self, options: list[str], script: str) -> str: ...
    def job(self, job_id: str) -> JobInfo | None: ...
    def jobs(self, user: str) -> list[JobInfo]: ...
    def cancel(self, job_id: str) -> None: ...


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    if not shutil.which(argv[0]):
        raise SessionFailure(f"{argv[0]} is not installed (Slurm client commands are needed)")
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SessionFailure(f"{argv[0]} did not answer within {SLURM_TIMEOUT} s") from None


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())


class SlurmCLI:
    """The Slurm command-line tools (`sbatch`, `squeue --json`, `scancel`)."""

    name = "slurm-cli"

    def __init__(self, cluster: str = "") -> None:
        self.cluster_args = ["-M", cluster] if cluster else []

    def submit(self, options: list[str], script: str) -> str:
        out = _run(["sbatch", "--parsable", *self.cluster_args, *options, script])
        if out.returncode != 0:
            raise SessionFailure(f"sbatch refused the job: {_one_line(out.stderr)}")
        return out.stdout.strip().split(";")[0]

    def _squeue(self, extra: list[str]) -> str:
        out = _run(["squeue", *self.cluster_args, "--json", *extra])
        if out.returncode != 0:
            raise SessionFailure(f"squeue failed: {_one_line(out.stderr)}")
        return out.stdout

    def job(self, job_id: str) -> JobInfo | None:
        # 22.05 ignores -j with --json (filtered in parse_jobs); newer versions honour it but
        # fail for a job that has left the queue, which means "no such job" here.
        out = _run(["squeue", *self.cluster_args, "--json", "-j", job_id])
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:
                return None
            raise SessionFailure(f"squeue failed: {_one_line(out.stderr)}")
        jobs = parse_jobs(out.stdout, job_ids={job_id})
        return jobs[0] if jobs else None

    def jobs(self, user: str) -> list[JobInfo]:
        return parse_jobs(self._squeue(["-u", user]), user=user)

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
