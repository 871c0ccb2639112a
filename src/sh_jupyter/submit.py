"""Submit side (login node, as the user): session directory, batch job, and following it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .card import card
from .config import DEFAULT_PATH, ENV_VAR, Config
from .durations import format_walltime
from .errors import SchedulerError, SessionFailure
from .files import ensure_private_dir, ensure_user_dir, read_text, write_private
from .launch import ENV_FILE, LaunchOptions, write_env
from .request import SessionRequest
from .scheduler import Scheduler
from .session import (
    CONNECTION_FILE,
    LOCAL_JOB_ID,
    LOG_FILE,
    REQUEST_FILE,
    STATUS_FILE,
    Status,
    new_session_id,
    now_iso,
)
from .slurm_jobs import JobView, Unknown
from .templates import TemplateContext, expand_path
from .watcher import JobWatcher


@dataclass(frozen=True)
class Submitted:
    session_id: str
    job_id: str
    session_dir: str


def sessions_root(cfg: Config, user: str, home: str, uid: int) -> str:
    ctx = TemplateContext(user, home, uid, "none", "none")
    return expand_path(cfg["session.sessions_dir"], ctx)


def sbatch_options(cfg: Config, req: SessionRequest, session_dir: str) -> list[str]:
    """The job's sbatch options; the script itself is a fixed file, never generated."""
    opts = [
        f"--job-name={cfg['session.job_name']}",
        f"--chdir={session_dir}",
        f"--output={os.path.join(session_dir, LOG_FILE)}",
        "--open-mode=append",
        f"--time={format_walltime(req.walltime)}",
        # An interactive session that lost its node ends (NODE_FAIL): rerun in the same
        # session directory it would restart behind the user's back.
        "--no-requeue",
        "--nodes=1", "--ntasks=1", f"--cpus-per-task={req.cpus}",
        f"--mem={req.memory_gib}G",
    ]
    if req.partition:
        opts.append(f"--partition={req.partition}")
    if req.gpus:
        opts.append(f"--gres=gpu:{req.gpus}")
    if cfg.path.startswith("/") and cfg.path != DEFAULT_PATH:
        # The job's supervisor must read the same config the request was checked against.
        opts.append(f"--export=ALL,{ENV_VAR}={cfg.path}")
    return opts


def submit(cfg: Config, req: SessionRequest, scheduler: Scheduler, user: str, home: str,
           uid: int, launch: LaunchOptions | None = None,
           environment: Mapping[str, str] | None = None) -> Submitted:
    """Create the session directory, write its files, submit; undo the directory on refusal.

    A launcher's `environment` (its secrets) goes to a 0600 file the supervisor deletes on
    reading; nothing of it reaches sbatch's command line, environment or the job script.
    """
    session_id = new_session_id()
    root = sessions_root(cfg, user, home, uid)
    ensure_user_dir(root, uid)
    session_dir = os.path.join(root, session_id)
    ensure_private_dir(session_dir, uid)
    record = {**req.to_dict(), "config": cfg.path}
    if launch is not None and launch != LaunchOptions():
        record["launch"] = launch.to_dict()
    write_private(os.path.join(session_dir, REQUEST_FILE), json.dumps(record, indent=2) + "\n")
    write_env(session_dir, environment or {})
    status = Status(session_id=session_id, phase="Queued", created_at=now_iso(),
                    cpus=req.cpus, memory_gib=req.memory_gib, gpus=req.gpus,
                    walltime=req.walltime,
                    connection_timeout=cfg["session.connection_timeout"])
    write_private(os.path.join(session_dir, STATUS_FILE), status.to_json())
    try:
        job_id = scheduler.submit(sbatch_options(cfg, req, session_dir),
                                  cfg["session.batch_script"])
    except SessionFailure:
        for name in (REQUEST_FILE, STATUS_FILE, ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(session_dir, name))
        os.rmdir(session_dir)
        raise
    # The supervisor may already have written a newer status: only add the job id to ours.
    current = read_text(os.path.join(session_dir, STATUS_FILE))
    latest = Status.from_json(current) if current else status
    if not latest.job_id:
        write_private(os.path.join(session_dir, STATUS_FILE),
                      replace(latest, job_id=job_id).to_json())
    return Submitted(session_id, job_id, session_dir)


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
    except SchedulerError as exc:
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
    return card(status, view, time.time())


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
    says (never "ended"); after `give_up_after` seconds of failures, SchedulerError.
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
            fields = card(status, view, time.time())
            shown = (fields["status"], fields["reason"], bool(fields["scheduler_error"]))
            if shown != last:
                emit(fields)
                last = shown
            if fields["status"] in ("Running", "Completed"):
                return fields
            if watcher.failing_for() > give_up_after:
                raise SchedulerError(f"the scheduler has not answered for {give_up_after:.0f} s "
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
