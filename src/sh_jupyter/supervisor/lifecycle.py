"""The supervisor: runs inside the job (or `run --local`) for the session's whole life.

It starts JupyterLab in a rootless container, waits until it really answers, publishes the
connection file, follows the container, and on every way out (File > Shut Down, a signal, a
failure) removes the container and the session's scratch before exiting. The phases live in
`start`, `watch` and `teardown`; this module holds the session's run from one to the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
from dataclasses import replace

from sh_jupyter import gpu
from sh_jupyter.config import Config
from sh_jupyter.container.spec import HostMount
from sh_jupyter.errors import EXIT_SESSION_FAILED, ConnectionTimeout, SessionFailure
from sh_jupyter.files import ensure_private_dir, read_text
from sh_jupyter.launch import LaunchOptions
from sh_jupyter.paths import TemplateContext
from sh_jupyter.progress import say
from sh_jupyter.session import STATUS_FILE, Status, connect_host, container_name, now_iso
from sh_jupyter.supervisor import follow, handoff
from sh_jupyter.supervisor.jobclock import JobClock
from sh_jupyter.supervisor.phase import RunRequest, api_error, job_callbacks
from sh_jupyter.supervisor.podman_service import PodmanService
from sh_jupyter.supervisor.start import Starting
from sh_jupyter.supervisor.teardown import TearingDown
from sh_jupyter.supervisor.watch import Watching

__all__ = ["RunRequest", "Supervisor"]

# What a frozen supervisor leaves out (`_freeze`): made again when it is taken back.
_TRANSIENT = frozenset({"signals", "watch", "service", "client", "clock", "removal"})


class Supervisor(Starting, Watching, TearingDown):
    """One session from start to teardown.

    The Podman API service runs only while the session starts and while it ends. Once
    JupyterLab answers, the supervisor stops it and sleeps on conmon's pidfd and a signal pipe,
    waking once per health interval; conmon keeps the container and records its exit. As
    `sh-jupyter run`, it does that sleep as a smaller program (`idle`) in its own process, and
    comes back (`resumed`) when the session needs it.
    """

    def __init__(self, cfg: Config, req: RunRequest) -> None:
        self.cfg = cfg
        self.req = req
        self.name = container_name(cfg["session.container_prefix"], req.session_id)
        self.ctx = TemplateContext(req.user, req.home, req.uid, req.session_id, req.job_id)
        # SLURMD_NODENAME: the job's node as Slurm names it (absent with --local).
        self.host = connect_host(cfg["network.connect_host"],
                                 req.job_env.get("SLURMD_NODENAME", ""), socket.gethostname())
        self.signals: follow.SignalPipe | None = None
        self.watch: follow.ProcessWatch | None = None
        self.timed_out = False
        self.service: PodmanService | None = None
        self.client = None
        self.mounts: list[HostMount] = []
        self.present: set[str] = set()
        self.keep_groups = False
        self.cgroup_v2 = False  # the node's cgroups: decides podman.cgroups = "auto"
        self.secret = ""  # JupyterLab's token: health checks read its own activity report
        self.auth_dir = ""  # where the token waits for JupyterLab until it answers
        self.oom_baseline: int | None = None  # the job cgroup's OOM kills before the container
        self.launch = LaunchOptions()  # a launcher's command, base URL and auth (request.json)
        self.extra_env: dict[str, str] = {}  # a launcher's secrets: never written anywhere
        self.start_clock = 0.0  # when the container was started: the connection timeout's zero
        self.podman_version = ""  # the API service's; decides podman.network = "auto"
        self.have_pasta = False
        self.site_image = cfg.images[0]  # until request.json names the session's
        self.clock = JobClock(None)  # run() asks Slurm in the background
        self.notices = req.notify
        self.status = Status(session_id=req.session_id, job_id=req.job_id)
        self.save_error = ""
        self.conmon_lost = False
        self.init_pid = 0
        self.launched_at = 0.0
        self.removal: follow.Child | None = None

    # -- the idle wait's handoff --------------------------------------------------------
    def _freeze(self) -> bytes:
        """Everything but what cannot cross an exec: the signal pipe, the pidfd, the API
        service's process and client, the Slurm callbacks (made again from the job id) and
        a launcher's secrets (used only to create the container)."""
        state = {k: v for k, v in vars(self).items() if k not in _TRANSIENT}
        state["req"] = replace(self.req, job_lookup=None, on_timeout=None, extra_env={})
        state["extra_env"] = {}
        state["job_info"] = self.clock.info(timeout=5.0)
        service = self.service
        state["service_args"] = None if service is None else (
            service.socket_path, service.env, service.global_args, service.api_timeout)
        return pickle.dumps(state)

    @classmethod
    def resumed(cls, frozen: bytes, plan: dict) -> Supervisor:
        """The supervisor a `_freeze` left, with what the idle wait saw since (the plan)."""
        state = pickle.loads(frozen)  # our own bytes, from a memfd of this very process
        service_args, job_info = state.pop("service_args"), state.pop("job_info")
        self = cls.__new__(cls)
        vars(self).update(state)
        self.signals = follow.SignalPipe(handoff.SIGNALS)
        handoff.unblock_signals()
        self.signals.received = self.signals.received or plan["event"].get("signal", "")
        self.watch = follow.ProcessWatch.adopt(plan["pid"], plan["pidfd"])
        self.service = PodmanService(*service_args) if service_args else None
        if self.service is not None and plan.get("service_pid"):
            self.service.adopt(plan["service_pid"])  # the idle wait started it at the end
        self.removal = follow.Child(plan["removal_pid"]) if plan.get("removal_pid") else None
        self.client = None
        self.clock = JobClock.fixed(job_info)
        self.status = Status.from_json(json.dumps(plan["status"]))
        if self.req.job_id != "local":
            lookup, on_timeout = job_callbacks(self.req.job_id)
            self.req = replace(self.req, job_lookup=lookup, on_timeout=on_timeout)
        return self

    def _initial_status(self) -> Status:
        text = read_text(os.path.join(self.req.session_dir, STATUS_FILE))
        prev = Status(session_id=self.req.session_id)
        if text:
            with contextlib.suppress(ValueError, TypeError):
                prev = Status.from_json(text)
        return Status(
            session_id=self.req.session_id, job_id=self.req.job_id, phase="Starting",
            created_at=prev.created_at or now_iso(), started_at=now_iso(), host=self.host,
            container=self.name, cpus=self.req.cpus, gpus=gpu.allocated_count(self.req.job_env),
            memory_gib=self.req.memory_gib, walltime=self.req.walltime or prev.walltime,
            image=prev.image,
            connection_timeout=self.cfg["session.connection_timeout"],
        )

    # -- main --------------------------------------------------------------------------
    def run(self) -> int:
        """Run the session; returns the process exit status."""
        ensure_private_dir(self.req.session_dir, self.req.uid)
        self.signals = follow.SignalPipe(handoff.SIGNALS)
        self.clock = JobClock(self.req.job_lookup)  # squeue in a thread, beside the service
        early: SessionFailure | None = None
        try:  # first of all: the API service boots (~50 ms) while everything else gets ready
            choice = self._start_service()
        except SessionFailure as failure:
            early = failure
        try:  # a full home: end here, before anything is made that could be left
            self._save(self._initial_status(), must=True)
        except SessionFailure as failure:
            early = early or failure
        say(f"session {self.req.session_id} starting on {self.host} "
            f"(job {self.req.job_id}, container {self.name})")
        if early is None:
            say(f"OCI runtime: {choice.why}")
            if choice.warning:
                say(f"warning: {choice.warning}")
        try:
            code = self._session(early)
        finally:
            removed = self._teardown()
        return self._finish(code, removed)

    def resume(self, event: dict) -> int:
        """Take the session back from the idle wait, which saw `event`; as `run` from there."""
        try:
            code = self._session(None, event)
        finally:
            removed = self._teardown()
        return self._finish(code, removed)

    def _finish(self, code: int, removed: bool) -> int:
        """After the teardown: the last word on the card, the failure notice, the timeout's
        cancel; the exit status."""
        if not removed:
            self._save(self.status.fail(f"container {self.name} could not be removed"))
            code = EXIT_SESSION_FAILED
        if self.status.failed and not self.stop_signal:
            # After the teardown: a slow mail system must not hold the container up. A cancel
            # or the walltime's end (a signal) is no failure.
            self._notify("failed", self.status.reason)
        if self.timed_out and self.req.on_timeout:
            say("cancelling the job: JupyterLab did not become available in time")
            self.req.on_timeout(self.status.reason)
        return code

    def _session(self, early: SessionFailure | None, event: dict | None = None) -> int:
        try:
            try:
                if early is not None:
                    raise early
                if event is None:
                    self._start()
                return self._supervise(event)
            except SessionFailure:
                raise
            except Exception as exc:
                if not api_error(exc):
                    raise
                raise SessionFailure(f"Podman API call failed: {exc}") from None
        except SessionFailure as failure:
            reason = str(failure)
            if self.stop_signal and not isinstance(failure, ConnectionTimeout):
                reason = f"cancelled ({self.stop_signal})" + (
                    " before JupyterLab was ready" if self.status.phase == "Starting" else "")
            say(f"session failed: {reason}")
            self._save(self.status.fail(reason))
            self.timed_out = isinstance(failure, ConnectionTimeout)
            return EXIT_SESSION_FAILED
