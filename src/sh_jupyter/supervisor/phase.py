"""What the supervisor's phases share: the session's state, its status file, the Podman shell.

The supervisor (`lifecycle.Supervisor`) is one object over three phases, each a class of its own
module: `start` (API service, mounts, container, readiness, connection file), `watch` (conmon,
signals, health and idle checks while it runs) and `teardown` (container and scratch removed).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable

from sh_jupyter.config import Config, SiteImage
from sh_jupyter.container.spec import AUTH_FILE, HostMount
from sh_jupyter.errors import SessionFailure
from sh_jupyter.files import write_private
from sh_jupyter.launch import LaunchOptions
from sh_jupyter.paths import TemplateContext
from sh_jupyter.progress import say
from sh_jupyter.session import STATUS_FILE, Status, resolve_base_url
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.supervisor import follow, notify
from sh_jupyter.supervisor.jobclock import JobClock
from sh_jupyter.supervisor.podman_service import PodmanService


def podman_shell():
    """The Podman shell (podman-py and requests take ~80 ms to import): loaded once the API
    service is already starting, so the two overlap on the way to Connect."""
    from sh_jupyter.supervisor import container

    return container


def api_error(exc: BaseException) -> bool:
    """True for podman-py's and the transport's errors (the API service went away mid-call)."""
    return "sh_jupyter.supervisor.container" in sys.modules \
        and isinstance(exc, podman_shell().API_ERRORS)


@dataclass
class RunRequest:
    """Who and what this session is; the CLI fills it from Slurm's environment or flags."""

    session_id: str
    session_dir: str
    user: str
    uid: int
    home: str
    job_id: str = "local"
    cpus: int = 0
    memory_gib: int = 0
    walltime: int = 0
    # The job as Slurm sees it (its time limit and start, so its end), asked in a thread at
    # the start; None without a Slurm job.
    job_lookup: Callable[[], JobInfo | None] | None = None
    job_env: Mapping[str, str] = field(default_factory=dict)
    on_timeout: Callable[[str], None] | None = None  # Slurm mode: the job cancels itself
    # A launcher already inside the job (api.run) gives its options and secrets here, in
    # memory; None: they come from request.json and the launcher's env file, if any.
    launch: LaunchOptions | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    image: str = ""  # a site image's name; "": request.json's, else the site's default
    notify: bool = False  # mail notices (also when request.json or the portal asks for them)
    # The process is the CLI's own: the long wait may replace it with a smaller one (handoff).
    handoff: bool = False




def job_callbacks(job_id: str) -> tuple[Callable[[], JobInfo | None], Callable[[str], None]]:
    """The Slurm job's lookup and its self-cancel, for a RunRequest of a job."""
    from sh_jupyter.slurm.scheduler import get_scheduler

    def job_lookup() -> JobInfo | None:
        """The job's start and time limit: its end for the walltime notices, and the card's
        "Time Requested" for sessions a portal submitted (Slurm 22.05 gives the job no
        SLURM_JOB_END_TIME)."""
        return get_scheduler().job(job_id)

    def on_timeout(_reason: str) -> None:  # the app's promise: the job cancels itself
        get_scheduler().cancel(job_id)
    return job_lookup, on_timeout


class Phase:
    """The session's state, as every phase reads and writes it."""

    cfg: Config
    req: RunRequest
    name: str
    ctx: TemplateContext
    host: str
    signals: follow.SignalPipe | None
    watch: follow.ProcessWatch | None
    timed_out: bool
    service: PodmanService | None
    client: object
    mounts: list[HostMount]
    present: set[str]
    keep_groups: bool
    cgroup_v2: bool
    secret: str
    auth_dir: str
    oom_baseline: int | None
    launch: LaunchOptions
    extra_env: dict[str, str]
    start_clock: float
    podman_version: str
    have_pasta: bool
    site_image: SiteImage
    clock: JobClock
    notices: bool  # the user asked for e-mail notices
    status: Status
    save_error: str  # why status.json could not be written last time ("" when it could)
    conmon_lost: bool  # conmon died and the container's init is followed instead
    init_pid: int  # the container's init process, as Podman reported it at start
    launched_at: float  # wall clock just after the container started (init is older)
    removal: follow.Child | None  # a `podman rm` the idle wait started at the session's end

    def _freeze(self) -> bytes:
        """The session's state, for the supervisor that takes it back after the idle wait."""
        raise NotImplementedError

    def _drop_auth(self) -> None:
        """Delete the token's config file and its directory (the container's read-only
        mount of it then shows an empty directory)."""
        if not self.auth_dir:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.auth_dir, AUTH_FILE))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.auth_dir)

    def _base(self, port: int) -> str:
        return resolve_base_url(self.launch.base_url or self.cfg["image.base_url"], self.host,
                                port)

    def _notify(self, event: str, detail: str = "") -> None:
        """One opted-in notice (ready, failed, walltime); never more than one of each."""
        sent = self.status.extra.get("notices", [])
        if not self.notices or event in sent:
            return
        notify.send(self.cfg, self.req.user, self.status, event, detail)
        self._save(replace(self.status, extra={**self.status.extra,
                                               "notices": [*sent, event]}))

    @property
    def stop_signal(self) -> str:
        return self.signals.received if self.signals else ""

    def _save(self, status: Status, must: bool = False) -> None:
        """Record the card's state. On the way to Running a state that cannot be written ends
        the session (`must`: nobody could see it run); afterwards a full home or quota must
        not kill a working session, so the write is retried at the next change."""
        self.status = status
        try:
            write_private(os.path.join(self.req.session_dir, STATUS_FILE), status.to_json())
        except OSError as exc:
            why = f"could not write {STATUS_FILE} in {self.req.session_dir}: " \
                  f"{exc.strerror or exc}"
            if must:
                raise SessionFailure(why) from None
            if why != self.save_error:
                say(f"warning: {why}; the session goes on, its card is not updated")
            self.save_error = why
            return
        if self.save_error:
            say(f"{STATUS_FILE} written again")
            self.save_error = ""

    def _release_service(self) -> None:
        """Stop the API service while the session runs: conmon keeps the container."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.service is not None:
            self.service.stop()

    def _ensure_service(self) -> bool:
        """Bring the API service (back) for the session's end; False if it cannot start."""
        if self.service is None:
            return False
        if self.client is not None and self.service.alive():
            return True
        if self.client is not None:
            say("the Podman API service died; starting it again")
        try:
            if self.client is not None or not self.service.alive():
                self.service.stop()  # whatever is left of a dead one: socket and log
                self.service.start()
            # else: started already (taking a session back), and not yet waited for
            self.client = self.service.wait_ready()
        except SessionFailure as exc:
            say(f"could not start the Podman API service: {exc}")
            self.client = None
            return False
        return True
