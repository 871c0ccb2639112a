"""The job's end as Slurm sees it (start time + time limit), asked once, off the path to
Connect: a thread asks squeue while the Podman service boots, and whoever needs the answer
(the container's environment, the card, the walltime notices) waits a bounded time for it.
A user at their process limit may get no thread: then the first who needs the answer asks.

Slurm 22.05 gives a batch job no SLURM_JOB_END_TIME, so squeue is the one source on every
supported version; an unknown end (squeue failed) means no walltime notices, never a failure.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from sh_jupyter.errors import ShJupyterError
from sh_jupyter.progress import say
from sh_jupyter.slurm.jobs import JobInfo


class JobClock:
    def __init__(self, lookup: Callable[[], Optional[JobInfo]] | None) -> None:
        self._info: JobInfo | None = None
        self._done = threading.Event()
        self._lazy: Callable[[], Optional[JobInfo]] | None = None  # asked in info(), if set
        self._lock = threading.Lock()
        if lookup is None:
            self._done.set()
            return

        def ask() -> None:
            try:
                self._info = lookup()
            except ShJupyterError as exc:
                say(f"the job's end time is unknown ({exc}): no walltime notices")
            finally:
                self._done.set()
        try:
            threading.Thread(target=ask, name="job-clock", daemon=True).start()
        except RuntimeError as exc:  # "can't start new thread": the user's process limit
            say(f"the job's end time is asked when first needed (no thread: {exc})")
            self._lazy = ask

    @classmethod
    def fixed(cls, info: JobInfo | None) -> JobClock:
        """A clock whose answer is already known (the supervisor taking a session back)."""
        clock = cls(None)
        clock._info = info
        return clock

    def info(self, timeout: float = 5.0) -> JobInfo | None:
        """The job as Slurm saw it; waits at most `timeout` seconds for the thread's answer
        (asks here, once, when no thread could be started)."""
        if self._lazy is not None:
            with self._lock:
                ask, self._lazy = self._lazy, None
                if ask is not None:
                    try:
                        ask()
                    except Exception as exc:  # noqa: BLE001 - as a thread would: never fatal
                        say(f"the job's end time is unknown ({exc!r}): no walltime notices")
        self._done.wait(timeout)
        return self._info

    def end(self, timeout: float = 5.0) -> int:
        """The job's end (epoch seconds); 0 when unknown or unlimited."""
        info = self.info(timeout)
        if info is None or not info.start_time or not info.time_limit:
            return 0
        return info.start_time + info.time_limit
