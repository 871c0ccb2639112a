"""Where the spawner learns its job's state: one small seam (watch, view, forget).

Why a seam: every spawner of a hub asks about its own job, and a hub has hundreds; one shared
poller asks Slurm once per interval for all of them (batchspawner runs one squeue per spawner,
batchspawner#292). And a query that fails must read as "unknown", never as "gone": one failing
squeue must not drop a live server (batchspawner#315).

A view is a JobInfo (in the queue), None (definitely not in the queue) or anything else for
"unknown" (it carries `.error`). `shared(cluster)` is the process's poller: the library's
JobWatcher (sh_jupyter.watcher: one squeue per interval for every watched job) where it exists,
else `PerCallStates` (one squeue per question, the same answers).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, Union

from ..errors import SessionFailure
from ..scheduler import Scheduler, get_scheduler
from ..slurm_json import JobInfo


@dataclass(frozen=True)
class Unknown:
    """No definite answer about a job (e.g. squeue failed): keep things as they are."""

    error: str = ""


JobView = Union[JobInfo, None, object]


class JobStates(Protocol):
    def watch(self, job_id: str, user: str | None = None) -> None: ...
    def view(self, job_id: str) -> JobView: ...
    def forget(self, job_id: str) -> None: ...


class PerCallStates:
    """One scheduler question per view; an error is Unknown, only Slurm's answer is "gone"."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def watch(self, job_id: str, user: str | None = None) -> None:
        """Nothing to remember: every view asks."""

    def forget(self, job_id: str) -> None:
        """Nothing to forget."""

    def view(self, job_id: str) -> JobView:
        try:
            return self.scheduler.job(job_id)
        except SessionFailure as exc:
            return Unknown(str(exc))


def is_unknown(view: JobView) -> bool:
    return view is not None and not isinstance(view, JobInfo)


def has_ended(view: JobView) -> bool:
    """Definitely ended: Slurm lists the job as finished, or no longer lists it."""
    return view is None or (isinstance(view, JobInfo) and view.finished)


_SHARED: dict[str, JobStates] = {}
_LOCK = threading.Lock()


def shared(cluster: str = "") -> JobStates:
    """The one poller of this process for `cluster`."""
    try:
        from .. import watcher  # the shared poller, where the library has it
    except ImportError:
        watcher = None
    if watcher is not None:
        return watcher.shared(cluster)
    with _LOCK:
        if cluster not in _SHARED:
            _SHARED[cluster] = PerCallStates(get_scheduler(cluster))
        return _SHARED[cluster]
