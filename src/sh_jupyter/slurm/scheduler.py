"""Scheduler access behind one small interface: submit, job states, cancel.

Two backends answer it: the Slurm CLI (`cli_backend`, always there) and pyslurm
(`pyslurm_backend`), used when it imports and was built for the Slurm that is installed
(PyPI's pyslurm builds only against matching headers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Protocol

from sh_jupyter.errors import SessionFailure
from sh_jupyter.slurm.cli_backend import SlurmCLI, run_slurm
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.willrun import WillRun


class Scheduler(Protocol):
    name: str

    def submit(self, options: list[str], script: str) -> str: ...
    def job(self, job_id: str) -> JobInfo | None: ...
    def jobs(self, user: str) -> list[JobInfo]: ...
    def states(self, job_ids: Iterable[str], user: str | None = None,
               ) -> dict[str, JobInfo | None]: ...
    def cancel(self, job_id: str) -> None: ...
    def will_run(self, options: list[str], script: str) -> WillRun: ...


def _slurm_version() -> str:
    out = run_slurm(["sinfo", "--version"])
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
        from sh_jupyter.slurm.pyslurm_backend import PySlurm
        return PySlurm()
    return SlurmCLI(cluster)
