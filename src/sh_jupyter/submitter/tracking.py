"""Following a submitted session (as the user): its status file, its job, its card."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from sh_jupyter.errors import SchedulerUnavailable, SessionFailure
from sh_jupyter.files import read_text
from sh_jupyter.session import CONNECTION_FILE, LOCAL_JOB_ID, STATUS_FILE, Status
from sh_jupyter.slurm.jobs import JobView, Unknown
from sh_jupyter.slurm.scheduler import Scheduler
from sh_jupyter.slurm.watcher import JobWatcher
from sh_jupyter.submitter.card import build as build_card


def load_status(session_dir: str) -> Status:
    text = read_text(os.path.join(session_dir, STATUS_FILE))
    if text is None:
        raise SessionFailure(f"{session_dir} holds no {STATUS_FILE}")
    return Status.from_json(text)


def job_view(scheduler: Scheduler, job_id: str) -> JobView:
    """One job's state from one single-job squeue; Unknown when squeue gives no definite
    answer or the session has no Slurm job (a `run --local` session, a submit in flight)."""
    if not job_id or job_id == LOCAL_JOB_ID:
        return Unknown()
    try:
        return scheduler.job(job_id)
    except SchedulerUnavailable as exc:
        return Unknown(str(exc))


def needs_scheduler(status: Status) -> bool:
    """Only a session with a Slurm job that has not finished needs Slurm's view; a finished
    session's card comes from its status file alone."""
    return status.phase != "Completed" and bool(status.job_id) \
        and status.job_id != LOCAL_JOB_ID


def current_card(session_dir: str, scheduler: Scheduler) -> dict:
    """The card now: the status file merged with the scheduler's view of the job (one
    single-job squeue; none for a finished session, whose status file says it all)."""
    status = load_status(session_dir)
    view = job_view(scheduler, status.job_id) if needs_scheduler(status) else Unknown()
    return with_space_note(build_card(status, view, time.time()), status, session_dir)


def with_space_note(fields: dict, status: Status, session_dir: str) -> dict:
    """A session that ended without its own final word, in a directory whose filesystem is
    full: say so, since that is why the supervisor could not write its reason there."""
    if not fields["failed"] or status.phase == "Completed":
        return fields
    try:
        st = os.statvfs(session_dir)
    except OSError:
        return fields
    if st.f_bavail and st.f_favail:
        return fields
    return {**fields, "reason": f"{fields['reason']}; the session directory's filesystem is "
                                "full, so the session could not record why"}


FOLLOW_TICK = 0.2  # seconds between reads of status.json (a small local file)
GIVE_UP_AFTER = 300  # seconds of failing squeue after which follow stops waiting


def follow(session_dir: str, scheduler: Scheduler, emit: Callable[[dict], None],
           user: str | None = None, watcher: JobWatcher | None = None,
           tick: float = FOLLOW_TICK, give_up_after: float = GIVE_UP_AFTER) -> dict:
    """Emit each change of the card until the session runs or ends; returns the last card.

    The status file (where the supervisor says Starting, Running or why it failed) is read
    every `tick`; the scheduler is asked through a JobWatcher, one single-job squeue per
    backed-off interval (0.5 s growing to 5 s), only to learn that the job started or died
    without a word; when the status file changes, it is asked at once (a cached PENDING must
    not hide the supervisor's Running). A failing squeue leaves the card as the status file
    says (never "ended"); after `give_up_after` seconds of failures, SchedulerUnavailable.
    """
    job_id = load_status(session_dir).job_id
    watcher = watcher or JobWatcher(scheduler)
    if job_id:
        watcher.watch(job_id, user)
    last: tuple = ()
    phase = ""
    try:
        while True:
            status = load_status(session_dir)
            if job_id and status.phase != phase and phase:
                watcher.refresh()  # news from the supervisor: the cached job state may be stale
            phase = status.phase
            view = watcher.view(job_id) if job_id else Unknown()
            fields = with_space_note(build_card(status, view, time.time()), status,
                                     session_dir)
            shown = (fields["status"], fields["reason"], bool(fields["scheduler_error"]))
            if shown != last:
                emit(fields)
                last = shown
            if fields["status"] in ("Running", "Completed"):
                return fields
            if watcher.failing_for() > give_up_after:
                raise SchedulerUnavailable(
                    f"the scheduler has not answered for {give_up_after:.0f} s "
                    f"({fields['scheduler_error']}); the session may still "
                    f"start: `sh-jupyter status {status.session_id[:8]}`")
            time.sleep(tick)
    finally:
        if job_id:
            watcher.forget(job_id)


def connection(session_dir: str) -> dict[str, str]:
    text = read_text(os.path.join(session_dir, CONNECTION_FILE))
    if text is None:
        raise SessionFailure("the session is not running (no connection file yet)")
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        out[key] = json.loads(value)
    return out
