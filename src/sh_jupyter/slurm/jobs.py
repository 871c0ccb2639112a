"""A Slurm job as sh-jupyter sees it, and the three things the scheduler can say about it (pure).

A lookup answers with a `JobInfo` (the job is in the queue), `None` (definitely not in the queue:
Slurm said so) or `Unknown` (squeue failed, or there is no Slurm job to ask about). Only `None`
or a final state may make a session look ended (a scheduler error is "unknown",
never "gone").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    name: str
    user: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...
    reason: str = ""
    node: str = ""
    submit_time: int = 0
    start_time: int = 0
    time_limit: int = 0  # seconds; 0 when unlimited or unknown
    exit_code: Optional[int] = None  # only the JSON shapes carry it

    @property
    def finished(self) -> bool:
        """True once the batch script is gone (COMPLETING: only the epilog is still running)."""
        return self.state not in ("PENDING", "RUNNING", "CONFIGURING", "SUSPENDED",
                                  "REQUEUED", "RESIZING")


@dataclass(frozen=True)
class Unknown:
    """No definite answer about a job: `error` says why ("" when there is no job to ask about,
    e.g. a `run --local` session)."""

    error: str = ""


# What a lookup of one job gives: in the queue, definitely not in the queue, or unknown.
JobView = Union[JobInfo, None, Unknown]
