"""pyslurm backend (used only when pyslurm matches the installed Slurm; see scheduler.py).

Queries and cancels through Slurm's C API; submission stays with `sbatch`, whose options are
the wrapper's contract, so both backends submit the identical job.
"""

from __future__ import annotations

import pyslurm

from .errors import SessionFailure
from .scheduler import SlurmCLI
from .slurm_json import JobInfo


def _info(job) -> JobInfo:
    limit = getattr(job, "time_limit", None)
    return JobInfo(
        job_id=str(job.id), name=str(job.name or ""), user=str(job.user_name or ""),
        state=str(job.state or "UNKNOWN"), reason=str(getattr(job, "state_reason", "") or ""),
        node=str(getattr(job, "batch_host", "") or ""),
        submit_time=int(getattr(job, "submit_time", 0) or 0),
        start_time=int(getattr(job, "start_time", 0) or 0),
        time_limit=int(limit) * 60 if isinstance(limit, int) else 0,
        exit_code=getattr(job, "exit_code", None),
    )


class PySlurm(SlurmCLI):
    name = "pyslurm"

    def job(self, job_id: str) -> JobInfo | None:
        try:
            return _info(pyslurm.Job.load(int(job_id)))
        except pyslurm.RPCError:
            return None

    def jobs(self, user: str) -> list[JobInfo]:
        return [_info(j) for j in pyslurm.Jobs.load().values() if j.user_name == user]

    def cancel(self, job_id: str) -> None:
        try:
            pyslurm.Job(int(job_id)).cancel()
        except pyslurm.RPCError as exc:
            raise SessionFailure(f"cancel failed: {exc}") from None
