"""pyslurm backend (used only when pyslurm matches the installed Slurm; see scheduler.py).

Looks up single jobs and cancels through Slurm's C API; submission stays with `sbatch`, whose
options are the wrapper's contract, so both backends submit the identical job. A user's jobs
and multi-job states come from the CLI's server-filtered squeue: pyslurm's `Jobs.load()` has
no user filter and would load the whole queue.
"""

from __future__ import annotations

import pyslurm

from sh_jupyter.errors import SchedulerUnavailable, SessionFailure
from sh_jupyter.slurm.cli_backend import SlurmCLI
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.squeue import NO_SUCH_JOB

ESLURM_INVALID_JOB_ID = 2017  # slurm_errno.h


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
        except pyslurm.RPCError as exc:
            # Only "no such job" is an answer; any other failure is unknown, never gone.
            if getattr(exc, "errno", None) == ESLURM_INVALID_JOB_ID or NO_SUCH_JOB in str(exc):
                return None
            raise SchedulerUnavailable(f"Slurm did not answer for job {job_id}: {exc}") from None

    def cancel(self, job_id: str) -> None:
        try:
            pyslurm.Job(int(job_id)).cancel()
        except pyslurm.RPCError as exc:
            raise SessionFailure(f"cancel failed: {exc}") from None
