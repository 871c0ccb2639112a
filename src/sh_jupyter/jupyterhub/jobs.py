"""Where the spawner learns its job's state: one small seam (watch, view, forget; hurry and
calm while it expects a change soon, seconds_to_next to pace its own looks).

Why a seam: every spawner of a hub asks about its own job, and a hub has hundreds; the process's
one JobWatcher (sh_jupyter.slurm.watcher) asks Slurm once per interval for all of them (batchspawner
runs one squeue per spawner, batchspawner#292). And a query that fails reads as "unknown", never
as "gone": one failing squeue must not drop a live server (batchspawner#315).

A view is a JobInfo (in the queue), None (definitely not in the queue) or Unknown (with
`.error`).
"""

from __future__ import annotations

from sh_jupyter.slurm.jobs import JobInfo, JobView, Unknown
from sh_jupyter.slurm.watcher import JobWatcher, shared

JobStates = JobWatcher

__all__ = ["JobInfo", "JobStates", "JobView", "Unknown", "has_ended", "is_unknown", "shared"]


def is_unknown(view: JobView) -> bool:
    return isinstance(view, Unknown)


def has_ended(view: JobView) -> bool:
    """Definitely ended: Slurm lists the job as finished, or no longer lists it."""
    return view is None or (isinstance(view, JobInfo) and view.finished)
