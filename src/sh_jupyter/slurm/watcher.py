"""One squeue call per interval for all the jobs a poller watches, with a bounded back-off.

Why: a poller that asks once per session costs slurmctld one query per session per interval
(JupyterHub's batchspawner runs `squeue -j` per spawner: squeue load at 200+ users, #292), and
one that reads a failed query as "ended" drops live servers (#315). A JobWatcher holds the set
of watched job ids and answers for all of them from one squeue call per interval. The interval
starts at `Backoff.start` and grows by `factor` up to `cap` while no job changes (or while
squeue fails, to spare a struggling slurmctld); it starts short again when a job changes or a
new one is watched. A failed call leaves every answer `Unknown`; only a definite answer says a
job is gone (None).

Sharing: thread-safe, and calls coalesce: any number of callers within one interval (the
spawners of one hub process, each calling `view()` from its poll) cause one squeue call.
`shared()` gives one watcher per cluster for the whole process. A hub spawner calls
`watch(job_id, user)` once its job is submitted, `view(job_id)` from its poll and
`forget(job_id)` when it stops. When all watched jobs belong to one user, slurmctld filters by
that user; jobs of several users are asked for by id (see squeue.py).

Hurrying: a caller that expects a change soon (a hub spawner whose session says Running and
must see Slurm name the job's node; a stop() waiting for a cancelled job to be gone) calls
`hurry(job_id)`: the next view() asks at once, and the watcher then asks every `HURRY` seconds
instead of backing off, until `calm(job_id)` or `forget(job_id)`. Calls still cover every
watched job, so any number of hurried jobs cost one squeue per `HURRY`; a failing squeue backs
off even then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sh_jupyter.errors import SchedulerUnavailable
from sh_jupyter.slurm.jobs import JobInfo, JobView, Unknown
from sh_jupyter.slurm.scheduler import Scheduler, get_scheduler

NOT_ASKED = Unknown("not asked yet")
HURRY = 0.1  # seconds between squeue calls while a job is hurried


@dataclass(frozen=True)
class Backoff:
    """Seconds between squeue calls: from `start`, times `factor` per quiet call, at most `cap`."""

    start: float = 0.5
    factor: float = 1.5
    cap: float = 5.0

    def after(self, interval: float, changed: bool) -> float:
        return self.start if changed else min(self.cap, interval * self.factor)


def _key(view: JobView) -> object:
    """What counts as a change: not a pending job's re-estimated start time."""
    if isinstance(view, JobInfo):
        return (view.state, view.reason, view.node)
    return view


class JobWatcher:
    """The states of a set of jobs, refreshed by one squeue call per (backed-off) interval."""

    def __init__(self, scheduler: Scheduler, backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scheduler = scheduler
        self.backoff = backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, str | None] = {}
        self._views: dict[str, JobView] = {}
        self._interval = backoff.start
        self._due = clock()
        self._failing_since: float | None = None
        # Hurried jobs and their intervals: a lock of their own, never held across a squeue
        # call, so hurry() and calm() never wait for one (they are safe in an event loop).
        self._hurried: dict[str, float] = {}
        self._hurry_lock = threading.Lock()
        self.calls = 0  # squeue calls made

    def watch(self, job_id: str, user: str | None = None) -> None:
        """Follow a job from now on (`user`: its owner, name or uid, when known)."""
        with self._lock:
            if job_id not in self._users:
                self._users[job_id] = user
                self._views[job_id] = NOT_ASKED
                self._interval = self.backoff.start
                self._due = self._clock()

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._users.pop(job_id, None)
            self._views.pop(job_id, None)
        self.calm(job_id)

    def hurry(self, job_id: str, interval: float = HURRY) -> None:
        """Ask about the job at once (the next view() calls squeue), then every `interval`
        seconds, not backing off, until calm() or forget(). Hurrying a job that is already
        hurried changes nothing (it does not ask again at once). Never waits for a squeue call
        in progress; one in progress when the job is hurried is followed by the next within
        `interval`."""
        with self._hurry_lock:
            new = job_id not in self._hurried
            self._hurried[job_id] = interval
            if new:
                self._due = min(self._due, self._clock())

    def calm(self, job_id: str) -> None:
        """Stop hurrying the job: the watcher backs off again (the job stays watched)."""
        with self._hurry_lock:
            self._hurried.pop(job_id, None)

    def _fastest(self, ids: list[str]) -> float | None:
        """The shortest interval of the hurried jobs among `ids` (None: none is hurried)."""
        with self._hurry_lock:
            wanted = [self._hurried[i] for i in ids if i in self._hurried]
        return min(wanted) if wanted else None

    def view(self, job_id: str) -> JobView:
        """The job's state as of the last call, after one more call if one is due.

        JobInfo (in the queue), None (definitely not in the queue) or Unknown.
        """
        with self._lock:
            if job_id not in self._users:
                raise KeyError(f"job {job_id} is not watched")
            if self._clock() >= self._due:
                self._refresh()
            return self._views[job_id]

    def refresh(self) -> None:
        """Ask now, whether due or not."""
        with self._lock:
            self._refresh()

    def seconds_to_next(self) -> float:
        with self._lock:
            return max(0.0, self._due - self._clock())

    def failing_for(self) -> float:
        """Seconds since squeue started failing without a success since (0: it answers)."""
        with self._lock:
            return 0.0 if self._failing_since is None else self._clock() - self._failing_since

    def _refresh(self) -> None:
        ids = list(self._users)
        if not ids:
            return
        owners = set(self._users.values())
        user = owners.pop() if len(owners) == 1 else None
        self.calls += 1
        try:
            answer: dict[str, JobView] = dict(self.scheduler.states(ids, user))
        except SchedulerUnavailable as exc:
            if self._failing_since is None:
                self._failing_since = self._clock()
            answer = dict.fromkeys(ids, Unknown(str(exc)))
            changed = False  # back off from a failing scheduler too
        else:
            self._failing_since = None
            changed = any(_key(self._views.get(i)) != _key(answer.get(i)) for i in ids)
        self._views.update({i: answer.get(i) for i in ids})
        self._interval = self.backoff.after(self._interval, changed)
        wait = self._interval
        fast = None if self._failing_since is not None else self._fastest(ids)
        if fast is not None:
            wait = min(wait, fast)  # hurried: no back-off while squeue answers
        self._due = self._clock() + wait


_SHARED: dict[str, JobWatcher] = {}
_SHARED_LOCK = threading.Lock()


def shared(cluster: str = "", backoff: Backoff = Backoff()) -> JobWatcher:
    """The process's one watcher for `cluster` (created on first use with `backoff`)."""
    with _SHARED_LOCK:
        if cluster not in _SHARED:
            _SHARED[cluster] = JobWatcher(get_scheduler(cluster), backoff)
        return _SHARED[cluster]
