"""sh-jupyter's public Python API: what the `sh-jupyter` command does, for other launchers.

Stable: the names in `__all__`, their parameters, the fields of `Session`, `Card` and
`Connection`, and the CLI's JSON output change incompatibly only with a version bump
(docs/integrators.md, "Stability"). Everything else in the package is internal.

Two sides, as in Slurm itself:
  * submit side, run as the session's user on a host that shares the user's home directory
    with the compute nodes (a login node, a portal, a hub host): `submit`, `estimate`, `find`,
    `sessions`, `card`, `wait`, `connection`, `cancel`;
  * supervisor side, run as the user inside the Slurm job: `run`.

A launcher running as root or as a service account (a JupyterHub) calls the same operations as
the user through the CLI, which prints the same data as JSON, with the request and its secrets
on standard input and never in argv: `runuser -u USER -- sh-jupyter submit --stdin --json`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict, Union, cast

from sh_jupyter import config as config_mod
from sh_jupyter import launch as launch_mod
from sh_jupyter.config import Config
from sh_jupyter.errors import SchedulerUnavailable, SessionFailure, UsageError
from sh_jupyter.files import read_text
from sh_jupyter.session import LOCAL_JOB_ID, REQUEST_FILE, Status, is_session_id, lab_url
from sh_jupyter.slurm.jobs import JobInfo, JobView, Unknown
from sh_jupyter.slurm.scheduler import Scheduler, get_scheduler
from sh_jupyter.submitter import card as job_card
from sh_jupyter.submitter import estimate as estimate_mod
from sh_jupyter.submitter import request as request_mod
from sh_jupyter.submitter import submission, tracking
from sh_jupyter.submitter.submission import Submitted, sessions_root
from sh_jupyter.submitter.tracking import load_status, needs_scheduler
from sh_jupyter.supervisor.entry import run
from sh_jupyter.users import current_user, session_user

__all__ = [
    "REQUEST_KEYS",
    "Card",
    "Connection",
    "Session",
    "SessionFailure",
    "UsageError",
    "cancel",
    "card",
    "connection",
    "estimate",
    "find",
    "request_from_json",
    "run",
    "sessions",
    "submit",
    "wait",
]

# A submitted session: what a launcher keeps to find it again (e.g. a spawner's state).
Session = Submitted

ConfigArg = Union[str, Config, None]
SessionArg = Union[Submitted, str]


class Card(TypedDict, total=False):
    """The job card, as `sh-jupyter status --json` prints it.

    `status` is Queued, Starting, Running or Completed; `failed` and `reason` say why a session
    ended (or why it waits in the queue); `url` is JupyterLab's address without the login
    token (see `connection`). `time_remaining` (seconds) while the job runs, else
    `time_requested`. `job_state` is Slurm's view ("unknown" when squeue gave no answer, with
    the error in `scheduler_error`: the card then shows the session as last recorded).
    """

    session_id: str
    job_id: str
    status: str
    failed: bool
    reason: str
    created_at: str
    connection_timeout: int
    cpus: int
    memory_gib: int
    host: str
    message: str
    url: str
    time_remaining: int
    time_requested: int
    gpus: int
    job_state: str
    scheduler_error: str
    expected_start: str
    queue_reason: str
    image: str


class Estimate(TypedDict):
    """`estimate` (`sh-jupyter submit --test-only --json`): when Slurm would start the request
    and, if not now, the largest smaller requests that would (`alternatives`, each naming the
    field it `changed`: cpus, memory_gib or partition). `refused` is Slurm's reason when it
    would never run the request; `submitted` is always false."""

    cpus: int
    memory_gib: int
    walltime: int
    gpus: int
    partition: str
    start_at: str
    start_epoch: int
    starts_now: bool
    refused: str
    submitted: bool
    alternatives: list


@dataclass(frozen=True)
class Connection:
    """Where a running session's server answers, and its password (the user's secret)."""

    host: str
    port: int
    base_url: str
    password: str

    @property
    def server_url(self) -> str:
        """The server's root (what a proxy routes to): http://HOST:PORT/BASE/."""
        return f"http://{self.host}:{self.port}{self.base_url}"

    @property
    def login_url(self) -> str:
        """JupyterLab with the token: opening it logs in (keep it as secret as the password)."""
        return lab_url(self.host, self.port, self.base_url, self.password)


# The keys of a request as JSON (`sh-jupyter submit --stdin`): `submit`'s parameters.
REQUEST_KEYS = ("cpus", "memory_gib", "walltime", "partition", "cluster", "gpus", "nodelist",
                "image", "notify", "command", "base_url", "auth", "environment")


def _config(config: ConfigArg) -> Config:
    return config if isinstance(config, Config) else config_mod.load(config)


def request_from_json(text: str) -> dict:
    """A request read from JSON (a launcher's standard input) as `submit`'s keyword arguments.

    Error messages name keys, never values: the environment may hold secrets.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError("standard input", f"<{len(text)} bytes>",
                         f"must be one JSON object ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise UsageError("standard input", type(data).__name__, "must be a JSON object")
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise UsageError("standard input", unknown,
                         f"unknown keys; allowed: {', '.join(REQUEST_KEYS)}")
    env = data.get("environment")
    if env is not None and not isinstance(env, dict):
        raise UsageError("environment", type(env).__name__, "must be an object of strings")
    return data


# -- submit side -----------------------------------------------------------------------------

def submit(*, cpus: int | str | None = None, memory_gib: int | str | None = None,
           walltime: str | None = None, partition: str = "", cluster: str = "",
           gpus: int | str | None = None, nodelist: str = "", image: str | None = None,
           notify: bool = False, command: Sequence[str] = (), base_url: str = "",
           auth: str = "token", environment: Mapping[str, str] | None = None,
           config: ConfigArg = None, scheduler: Scheduler | None = None) -> Session:
    """Submit a session as the current user; returns once Slurm accepted the job.

    Every field is checked against the site config first (UsageError, nothing created).
    `nodelist` aims the session at particular nodes (sbatch --nodelist).
    `image` is the name of one of the site's images (`[[images]]`; default: the first).
    `notify`: one e-mail to the user when the server is ready to connect, one if the session
    fails, one before its walltime runs out (never holding the password).
    Launchers may replace the server `command` (sh-jupyter still appends --port, --ip and the
    --ServerApp options), its `base_url`, and `auth` ("token": sh-jupyter's secret logs in;
    "launcher": the command authenticates by itself). `environment` reaches the server's
    environment through a 0600 file the supervisor deletes on reading: never argv, the sbatch
    environment, the job script or a log. SessionFailure when sbatch refuses the job.
    """
    cfg = _config(config)
    req = request_mod.validate(cfg, cpus, memory_gib, walltime, partition, cluster, gpus,
                               nodelist=nodelist, image=image, notify=notify)
    options = launch_mod.validate(command, base_url, auth)
    env = launch_mod.check_env(environment or {})
    me = session_user()
    return submission.submit(cfg, req, scheduler or get_scheduler(req.cluster), me.pw_name,
                      me.pw_dir, me.pw_uid, launch=options, environment=env)


def estimate(*, cpus: int | str | None = None, memory_gib: int | str | None = None,
             walltime: str | None = None, partition: str = "", cluster: str = "",
             gpus: int | str | None = None, nodelist: str = "", image: str | None = None,
             config: ConfigArg = None, scheduler: Scheduler | None = None,
             **_launch: object) -> Estimate:
    """When Slurm would start this request, without submitting or creating anything; when not
    now, which smaller requests within the site's limits would start now.

    The request is checked as `submit` checks it (UsageError); a launcher's other request keys
    (command, auth, environment...) are accepted and ignored. SchedulerUnavailable when Slurm
    gives no answer.
    """
    cfg = _config(config)
    req = request_mod.validate(cfg, cpus, memory_gib, walltime, partition, cluster, gpus,
                               nodelist=nodelist, image=image)
    me = session_user()
    return cast(Estimate, estimate_mod.estimate(cfg, req, scheduler or get_scheduler(req.cluster),
                                                me.pw_dir))


def _session_dir(cfg: Config, ident: str) -> str:
    """A session of this user by id or unique id prefix."""
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


def _dir_of(session: SessionArg, config: ConfigArg) -> str:
    if isinstance(session, Submitted):
        return session.session_dir
    return _session_dir(_config(config), session)


def _scheduler_for(session_dir: str) -> Scheduler:
    """The scheduler of the cluster the session was submitted to (request.json)."""
    text = read_text(os.path.join(session_dir, REQUEST_FILE))
    try:
        cluster = json.loads(text).get("cluster", "") if text else ""
    except (ValueError, AttributeError):
        cluster = ""
    return get_scheduler(cluster if isinstance(cluster, str) else "")


def find(session: str, config: ConfigArg = None) -> Session:
    """A session of the current user by its id or a unique prefix of it."""
    session_dir = _session_dir(_config(config), session)
    status = load_status(session_dir)
    return Session(status.session_id, status.job_id, session_dir)


def card(session: SessionArg, config: ConfigArg = None,
         scheduler: Scheduler | None = None) -> Card:
    """The session's card now: its status file merged with the scheduler's view of the job."""
    session_dir = _dir_of(session, config)
    return cast(Card, tracking.current_card(session_dir, scheduler or _scheduler_for(session_dir)))


def _listed(status: Status, jobs: dict[str, JobInfo] | None, error: str) -> JobView:
    """The job's view from the user's one squeue (None for `jobs`: that squeue failed)."""
    if not needs_scheduler(status):
        return Unknown()
    if jobs is None:
        return Unknown(error)
    return jobs.get(status.job_id)  # not among the user's jobs: definitely gone


def sessions(config: ConfigArg = None, scheduler: Scheduler | None = None) -> list[Card]:
    """The current user's sessions, newest first (like My Interactive Sessions).

    One squeue for this user's jobs only, and none when every session has ended; when it fails
    the cards show what their status files say, with `job_state` "unknown".
    """
    cfg = _config(config)
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
    if any(needs_scheduler(s) for s in statuses):
        try:
            jobs = {j.job_id: j for j in (scheduler or get_scheduler()).jobs(str(me.pw_uid))}
        except SchedulerUnavailable as exc:
            jobs, error = None, str(exc)
    now = time.time()
    cards = [job_card.build(s, _listed(s, jobs, error), now) for s in statuses]
    cards.sort(key=lambda c: c["created_at"], reverse=True)
    return cast(list[Card], cards)


def _recorded(status) -> Card:
    """The card as the status file alone says, without asking the scheduler (a launcher that
    watches the job itself supplies the rest; see `wait(ask_scheduler=False)`)."""
    # A job in the state the supervisor's phase implies changes nothing on the card.
    if status.phase == "Queued":
        job = JobInfo(status.job_id, "", "", "PENDING")
    else:
        job = JobInfo(status.job_id, "", "", "RUNNING", node=status.host)
    return cast(Card, job_card.build(status, job, time.time()))


def wait(session: SessionArg, on_change: Callable[[Card], None] | None = None, *,
         ask_scheduler: bool = True, config: ConfigArg = None,
         scheduler: Scheduler | None = None, tick: float = 0.2) -> Card:
    """Follow the session until it runs or ends; returns the last card (Running or Completed).

    `on_change` gets each card whose status or reason changed (the progress events). With
    `ask_scheduler=False` only the session's status file is read, never Slurm: for a launcher
    that watches the job's state itself (a hub's one poller for all its jobs); a job that dies
    without its supervisor writing Completed is then that launcher's to notice.
    """
    session_dir = _dir_of(session, config)
    emit = on_change or (lambda _card: None)
    if ask_scheduler:
        sched = scheduler or _scheduler_for(session_dir)
        return cast(Card, tracking.follow(session_dir, sched, emit,
                                          user=str(current_user().pw_uid)))
    last: tuple = ()
    while True:
        now = _recorded(load_status(session_dir))
        shown = (now["status"], now["reason"])
        if shown != last:
            emit(now)
            last = shown
        if now["status"] in ("Running", "Completed"):
            return now
        time.sleep(tick)  # a small local file: re-read it, as `tail -f` would


def connection(session: SessionArg, config: ConfigArg = None) -> Connection:
    """Host, port, base URL and password of a running session (SessionFailure before it runs).

    The password is the session's secret (with auth "launcher" the server does not use it).
    """
    session_dir = _dir_of(session, config)
    conn = tracking.connection(session_dir)
    return Connection(str(conn["host"]), int(conn["port"]), load_status(session_dir).base_url,
                      str(conn["password"]))


def cancel(session: SessionArg, config: ConfigArg = None,
           scheduler: Scheduler | None = None) -> Session:
    """Cancel the session's job (scancel); a job that has already ended is not an error."""
    session_dir = _dir_of(session, config)
    status = load_status(session_dir)
    if not status.job_id or status.job_id == LOCAL_JOB_ID:
        raise UsageError("session", status.session_id, "has no Slurm job to cancel")
    sched = scheduler or _scheduler_for(session_dir)
    try:
        sched.cancel(status.job_id)
    except SessionFailure:
        job = sched.job(status.job_id)
        if job is not None and not job.finished:
            raise
    return Session(status.session_id, status.job_id, session_dir)


# -- supervisor side -------------------------------------------------------------------------

# `run` lives in supervisor/entry.py, light to import: it is on the path to Connect.
