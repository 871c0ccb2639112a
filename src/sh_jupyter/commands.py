"""The user's session commands (submit, status, list, connect, cancel): thin over the library,
human output by default and `--json` for portals."""

from __future__ import annotations

import argparse
import json
import os
import time

from . import config as config_mod
from . import request as request_mod
from .card import card, render
from .errors import EXIT_SESSION_FAILED, SchedulerError, SessionFailure, UsageError
from .scheduler import get_scheduler
from .session import LOCAL_JOB_ID, Status, is_session_id, lab_url
from .slurm_jobs import JobInfo, JobView, Unknown
from .submit import connection, current_card, follow, load_status, sessions_root, submit
from .users import current_user, session_user


def _emit(args: argparse.Namespace, data, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _session_dir(cfg: config_mod.Config, ident: str) -> str:
    """Find a session of this user by id or unique id prefix."""
    me = current_user()
    root = sessions_root(cfg, me.pw_name, me.pw_dir, me.pw_uid)
    if not ident or not all(c in "0123456789abcdef-" for c in ident):
        raise UsageError("session", ident, "must be a session id (a UUID) or a prefix of one")
    try:
        names = [n for n in os.listdir(root) if is_session_id(n) and n.startswith(ident)]
    except FileNotFoundError:
        names = []
    if len(names) != 1:
        raise UsageError("session", ident, "matches no session of yours" if not names
                         else f"matches {len(names)} sessions; give more of the id")
    return os.path.join(root, names[0])


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    req = request_mod.validate(cfg, args.cpus, args.memory, args.time, args.partition,
                               args.cluster, args.gpus)
    me = session_user()
    scheduler = get_scheduler(req.cluster)
    done = submit(cfg, req, scheduler, me.pw_name, me.pw_dir, me.pw_uid)
    data = {"session_id": done.session_id, "job_id": done.job_id,
            "session_dir": done.session_dir}
    _emit(args, data, f"session {done.session_id} submitted as job {done.job_id} "
          f"({cfg['session.job_name']}); `sh-jupyter status {done.session_id[:8]}` shows its card")
    if not args.wait:
        return 0

    def progress(fields: dict) -> None:
        if not args.json:
            stamp = time.strftime("%H:%M:%S")
            unknown = (f" (job state unknown: {fields['scheduler_error']})"
                       if fields["scheduler_error"] else "")
            print(f"{stamp} {fields['status']}" + (f": {fields['reason']}"
                                                    if fields["reason"] else "") + unknown,
                  flush=True)
    final = follow(done.session_dir, scheduler, progress, user=str(me.pw_uid))
    if final["status"] == "Running":
        conn = connection(done.session_dir)
        url = lab_url(conn["host"], int(conn["port"]), load_status(done.session_dir).base_url,
                      conn["password"])
        _emit(args, {**final, "connect_url": url}, f"{final['message']}\nconnect: {url}")
        return 0
    _emit(args, final, f"session ended: {final['reason'] or 'completed'}")
    return EXIT_SESSION_FAILED if final["failed"] else 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    session_dir = _session_dir(cfg, args.session)
    fields = current_card(session_dir, get_scheduler())
    _emit(args, fields, render(fields))
    return 0


def _needs_scheduler(status: Status) -> bool:
    """A finished session's card comes from its status file alone."""
    return status.phase != "Completed" and bool(status.job_id) \
        and status.job_id != LOCAL_JOB_ID


def _listed(status: Status, jobs: dict[str, JobInfo] | None, error: str) -> JobView:
    """The job's view from the user's one squeue (None in `jobs`: that squeue failed)."""
    if not _needs_scheduler(status):
        return Unknown()
    if jobs is None:
        return Unknown(error)
    return jobs.get(status.job_id)  # not among the user's jobs: definitely gone


def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    me = current_user()
    root = sessions_root(cfg, me.pw_name, me.pw_dir, me.pw_uid)
    statuses = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not is_session_id(name):
            continue
        try:
            statuses.append(load_status(os.path.join(root, name)))
        except (OSError, ValueError, SessionFailure):
            continue
    jobs: dict[str, JobInfo] | None = {}
    error = ""
    if any(_needs_scheduler(s) for s in statuses):  # one squeue, for this user's jobs only
        try:
            jobs = {j.job_id: j for j in get_scheduler().jobs(str(me.pw_uid))}
        except SchedulerError as exc:
            jobs, error = None, str(exc)
    now = time.time()
    cards = [card(s, _listed(s, jobs, error), now) for s in statuses]
    cards.sort(key=lambda c: c["created_at"], reverse=True)
    lines = [f"{c['session_id']}  {c['job_id'] or '-':>8}  {c['created_at']}  {c['status']}"
             + (" (failed)" if c["failed"] else "")
             + (" (job state unknown)" if c["scheduler_error"] else "") for c in cards]
    if error and not args.json:
        lines.append(f"job states unknown, shown as last recorded: {error}")
    _emit(args, cards, "\n".join(lines) or "no sessions")
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    session_dir = _session_dir(cfg, args.session)
    fields = current_card(session_dir, get_scheduler())
    if fields["status"] != "Running":
        why = f": {fields['reason']}" if fields["reason"] else ""
        raise SessionFailure(f"session {fields['session_id']} is not running "
                             f"({fields['status']}{why})")
    conn = connection(session_dir)
    url = lab_url(conn["host"], int(conn["port"]), load_status(session_dir).base_url,
                  conn["password"])
    _emit(args, {"url": url, **conn}, url)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    session_dir = _session_dir(cfg, args.session)
    status = load_status(session_dir)
    if not status.job_id or status.job_id == LOCAL_JOB_ID:
        raise UsageError("session", args.session, "has no Slurm job to cancel")
    get_scheduler().cancel(status.job_id)
    _emit(args, {"session_id": status.session_id, "job_id": status.job_id, "cancelled": True},
          f"job {status.job_id} of session {status.session_id} cancelled")
    return 0


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "list": cmd_list,
            "connect": cmd_connect, "cancel": cmd_cancel}
