"""The supervisor: runs inside the job (or `run --local`) for the session's whole life.

It starts JupyterLab in a rootless container, waits until it really answers, publishes the
connection file, follows the container, and on every way out (File > Shut Down, a signal, a
failure) removes the container and the session's scratch before exiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from .. import activity, exits, gpu, launch, oci_runtime, podman_args
from ..config import Config
from ..errors import EXIT_SESSION_FAILED, ConnectionTimeout, PortInUse, SessionFailure, UsageError
from ..files import ensure_private_dir, ensure_user_dir, read_text, write_private
from ..launch import LaunchOptions
from ..podman_args import pasta_installed
from ..progress import say
from ..session import (
    CONNECTION_FILE,
    REQUEST_FILE,
    STATUS_FILE,
    Status,
    connection_yaml,
    container_name,
    lab_url,
    new_secret,
    now_iso,
    resolve_base_url,
    running_message,
)
from ..spec import HostMount, SessionFacts, create_kwargs, host_mounts, network_mode
from ..templates import TemplateContext
from . import cgroups, follow, ports, readiness
from .podman_service import PodmanService, podman_env


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
    walltime_lookup: Callable[[], int] | None = None  # asked after Running when walltime is 0
    job_env: Mapping[str, str] = field(default_factory=dict)
    on_timeout: Callable[[str], None] | None = None  # Slurm mode: the job cancels itself
    # A launcher already inside the job (api.run) gives its options and secrets here, in
    # memory; None: they come from request.json and the launcher's env file, if any.
    launch: LaunchOptions | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)


def _job_ulimits() -> tuple[tuple[str, int, int], ...]:
    """The job's own open-files limit, handed to the container as it is.

    (nproc is left to Podman: runc cannot set it rootless, "error setting rlimit type 6".)
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return ()
    return (("nofile", hard if soft == resource.RLIM_INFINITY else soft, hard),)


def _podman():
    """The Podman shell (podman-py and requests take ~80 ms to import): loaded once the API
    service is already starting, so the two overlap on the way to Connect."""
    from . import container

    return container


def _api_error(exc: BaseException) -> bool:
    """True for podman-py's and the transport's errors (the API service went away mid-call)."""
    return f"{__package__}.container" in sys.modules \
        and isinstance(exc, _podman().API_ERRORS)


class Supervisor:
    """One session from start to teardown.

    The Podman API service runs only while the session starts and while it ends. Once
    JupyterLab answers, the supervisor stops it and sleeps on conmon's pidfd and a signal pipe,
    waking once per health interval; conmon keeps the container and records its exit.
    """

    def __init__(self, cfg: Config, req: RunRequest) -> None:
        self.cfg = cfg
        self.req = req
        self.name = container_name(cfg["session.container_prefix"], req.session_id)
        self.ctx = TemplateContext(req.user, req.home, req.uid, req.session_id, req.job_id)
        self.host = cfg["network.connect_host"] or socket.gethostname()
        self.signals: follow.SignalPipe | None = None
        self.watch: follow.ProcessWatch | None = None
        self.timed_out = False
        self.service: PodmanService | None = None
        self.client = None
        self.mounts: list[HostMount] = []
        self.present: set[str] = set()
        self.keep_groups = False
        self.secret = ""  # JupyterLab's token: health checks read its own activity report
        self.oom_baseline: int | None = None  # the job cgroup's OOM kills before the container
        self.launch = LaunchOptions()  # a launcher's command, base URL and auth (request.json)
        self.extra_env: dict[str, str] = {}  # a launcher's secrets: never written anywhere
        self.start_clock = 0.0  # when the container was started: the connection timeout's zero
        self.podman_version = ""  # the API service's; decides podman.network = "auto"
        self.have_pasta = False
        self.status = Status(session_id=req.session_id, job_id=req.job_id)

    def _base(self, port: int) -> str:
        return resolve_base_url(self.launch.base_url or self.cfg["image.base_url"], self.host,
                                port)

    @property
    def stop_signal(self) -> str:
        return self.signals.received if self.signals else ""

    # -- status file -------------------------------------------------------------------
    def _save(self, status: Status) -> None:
        self.status = status
        write_private(os.path.join(self.req.session_dir, STATUS_FILE), status.to_json())

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
            connection_timeout=self.cfg["session.connection_timeout"],
        )

    # -- main --------------------------------------------------------------------------
    def run(self) -> int:
        """Run the session; returns the process exit status."""
        ensure_private_dir(self.req.session_dir, self.req.uid)
        self.signals = follow.SignalPipe((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        early: SessionFailure | None = None
        try:  # first of all: the API service boots (~50 ms) while everything else gets ready
            choice = self._start_service()
        except SessionFailure as failure:
            early = failure
        self._save(self._initial_status())
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
        if not removed:
            self._save(self.status.fail(f"container {self.name} could not be removed"))
            code = EXIT_SESSION_FAILED
        if self.timed_out and self.req.on_timeout:
            say("cancelling the job: JupyterLab did not become available in time")
            self.req.on_timeout(self.status.reason)
        return code

    def _session(self, early: SessionFailure | None) -> int:
        try:
            try:
                if early is not None:
                    raise early
                self._start()
                return self._supervise()
            except SessionFailure:
                raise
            except Exception as exc:
                if not _api_error(exc):
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

    def _read_launch(self) -> None:
        """A launcher's options (request.json) and secrets (taken from their file at once), or
        those a launcher in the job handed over in memory."""
        self.extra_env = launch.take_env(self.req.session_dir)
        if self.req.launch is not None:
            self.launch = self.req.launch
            self.extra_env.update(self.req.extra_env)
        else:
            text = read_text(os.path.join(self.req.session_dir, REQUEST_FILE))
            try:
                data = json.loads(text) if text else {}
                self.launch = launch.from_dict(data.get("launch") if isinstance(data, dict)
                                               else {})
            except (ValueError, UsageError) as exc:
                raise SessionFailure(f"{REQUEST_FILE}: {exc}") from None
        if self.launch.command:
            say(f"launcher command: {' '.join(self.launch.command)} (auth: {self.launch.auth})")

    def _start_service(self) -> oci_runtime.Choice:
        """Choose the OCI runtime and start this session's Podman API service (not waiting)."""
        cfg, req = self.cfg, self.req
        env = podman_env(req.uid, req.job_env)
        choice = oci_runtime.choose(cfg["podman.runtime"], cfg["podman.keep_groups"],
                                    oci_runtime.node_facts(env["PATH"]))
        self.keep_groups = choice.keep_groups
        self.service = PodmanService(podman_args.service_socket(cfg, self.ctx), env,
                                     [*podman_args.for_user(cfg, self.ctx),
                                      "--runtime", choice.runtime],
                                     cfg["podman.api_timeout"])
        self.service.start()
        return choice

    def _start(self) -> None:
        self._read_launch()
        secret = self.secret = new_secret()
        self.present = self._prepare_mounts()
        _podman()
        self.client = self.service.wait_ready()
        self.podman_version = self.service.version
        self.have_pasta = pasta_installed(self.service.env)
        say(f"podman {self.podman_version or '(version unknown)'}, network "
            f"{network_mode(self.cfg['podman.network'], self.podman_version, self.have_pasta)}")
        container, port = self._launch(secret)
        self._save(replace(self.status, port=port, base_url=self._base(port)))
        url = lab_url(self.host, port, self._base(port))
        say(f"container started on port {port}; waiting for JupyterLab at {url}")
        self._connect(container, port, secret)
        self._release_service()

    def _prepare_mounts(self) -> set[str]:
        """Create what may be created; fail on a missing required source; list what exists."""
        try:
            self.mounts = host_mounts(self.cfg.mounts, self.ctx)
        except ValueError as exc:
            raise SessionFailure(f"bad mount path: {exc}") from None
        present = set()
        for m in self.mounts:
            if m.create and ensure_user_dir(m.source):
                say(f"created {m.source} for {m.target}")
            if os.path.isdir(m.source):
                present.add(m.source)
            elif m.required:
                raise SessionFailure(f"required mount source {m.source} (for {m.target}) "
                                     "does not exist")
            else:
                say(f"skipping optional mount {m.target}: {m.source} does not exist")
        return present

    def _launch(self, secret: str):
        cfg = self.cfg
        bind = cfg["network.bind_address"]
        apply_limits = {"always": True, "never": False}.get(cfg["podman.limits"])
        if apply_limits is None:
            apply_limits = cgroups.limits_possible()
        gpus = gpu.for_job(cfg, self.req.job_env)  # exactly the job's GPUs, or SessionFailure
        tried = []
        for port in ports.candidates(cfg["network.port_min"], cfg["network.port_max"],
                                     cfg["network.port_attempts"]):
            if not ports.is_free(bind, port):
                tried.append(port)
                continue
            facts = SessionFacts(self.ctx, port, self.req.cpus, self.req.memory_gib, apply_limits,
                                 self._base(port), _job_ulimits(), self.keep_groups,
                                 self.launch.command, self.extra_env, self.podman_version,
                                 self.have_pasta)
            kwargs = create_kwargs(cfg, facts, secret, self.req.job_env, self.mounts,
                                   self.present, gpus)
            self.start_clock = time.monotonic()
            self.oom_baseline = cgroups.oom_kills()
            ctr = _podman()
            try:
                container = ctr.create_and_start(self.client, kwargs, cfg["image.store"],
                                                 self.req.session_id, self.req.user)
            except PortInUse:
                tried.append(port)
                say(f"port {port} was taken at start; trying another")
                continue
            try:
                self._follow(ctr.conmon_pid(container))  # it may have ended already
            except PortInUse:  # JupyterLab itself could not bind, and has exited
                self._discard_unbound(container, port)
                tried.append(port)
                continue
            except ctr.ExitedEarly as early:
                raise SessionFailure(self._early_reason(early)) from None
            return container, port
        raise SessionFailure(f"no free port: tried {tried} in "
                             f"{cfg['network.port_min']}-{cfg['network.port_max']}")

    @staticmethod
    def _discard_unbound(container, port: int) -> None:
        """JupyterLab itself could not bind `port`: remove its container to try another."""
        with contextlib.suppress(Exception):  # best effort: it is being replaced
            container.remove(force=True)
        say(f"JupyterLab could not bind port {port}; trying another")

    def _follow(self, pid: int) -> None:
        """Follow the container through this process (conmon, or its init if conmon died)."""
        if self.watch is not None:
            self.watch.close()
        self.watch = follow.ProcessWatch(pid)

    def _ready(self, container, port: int, secret: str) -> None:
        ctr = _podman()
        try:
            ctr.wait_until_ready(container, self.cfg["network.bind_address"], port,
                                 self._base(port),
                                 secret if self.launch.auth == "token" else "",
                                 self.start_clock + self.cfg["session.connection_timeout"],
                                 self.watch, self.signals)
        except ctr.ExitedEarly as early:
            raise SessionFailure(self._early_reason(early)) from None

    def _early_reason(self, early) -> str:
        """Why JupyterLab ended before it answered: its exit, OOM and last output."""
        return exits.reason(self._with_oom(early.facts), self.req.memory_gib, starting=True,
                            last_lines=early.last_lines)

    def _with_oom(self, facts: exits.ExitFacts) -> exits.ExitFacts:
        """Podman's OOM record, or the job cgroup's when Podman cannot see one (cgroup v1)."""
        if facts.oom_killed:
            return facts
        now = cgroups.oom_kills()
        if now is None or self.oom_baseline is None:
            return replace(facts, oom_killed=None)  # no record either way: say nothing
        return replace(facts, oom_killed=now > self.oom_baseline)

    def _connect(self, container, port: int, secret: str) -> None:
        """Wait for readiness, retrying another port if JupyterLab itself could not bind."""
        try:
            self._ready(container, port, secret)
        except PortInUse:
            self._discard_unbound(container, port)
            container, port = self._launch(secret)
            self._save(replace(self.status, port=port, base_url=self._base(port)))
            self._ready(container, port, secret)
        write_private(os.path.join(self.req.session_dir, CONNECTION_FILE),
                      connection_yaml(self.host, port, secret))
        took = time.monotonic() - self.start_clock
        message = running_message(self.name)
        self._save(self.status.advance("Running", ready_at=now_iso(), port=port,
                                       message=message))
        say(f"{message}; ready in {took:.1f} s")
        say(f"connect: {lab_url(self.host, port, self._base(port))} "
            f"(password in {CONNECTION_FILE})")
        if not self.status.walltime and self.req.walltime_lookup:
            with contextlib.suppress(SessionFailure):  # the card only lacks Time Requested
                self._save(replace(self.status, walltime=self.req.walltime_lookup()))

    # -- while it runs -----------------------------------------------------------------
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
            self.service.stop()  # whatever is left of a dead one: socket and log
            self.service.start()
            self.client = self.service.wait_ready()
        except SessionFailure as exc:
            say(f"could not start the Podman API service: {exc}")
            self.client = None
            return False
        return True

    def _supervise(self) -> int:
        """Sleep until conmon exits or a signal comes; check JupyterLab's health meanwhile,
        and end the session when it has been idle for session.idle_timeout."""
        host = ports.probe_address(self.cfg["network.bind_address"])
        interval = self.cfg["session.health_interval"]
        failures = 0
        while True:
            next_check = time.monotonic() + interval
            while not (self.stop_signal or self.watch.gone()) \
                    and time.monotonic() < next_check:
                follow.wait(self.watch, self.signals, next_check - time.monotonic())
            if self.stop_signal or self.watch.gone():
                code = self._ended()
                if code is not None:
                    return code
                continue
            port, base = self.status.port, self.status.base_url
            # With the launcher's own auth (JupyterHub) our token opens nothing: only the
            # unauthenticated /api answers, and there is no activity report to judge idling.
            report = readiness.server_status(host, port, base, self.secret) \
                if self.launch.auth == "token" else None
            if report is None and not readiness.api_answers(host, port, base):
                failures += 1
                say(f"health check failed ({failures} in a row): JupyterLab does not answer")
                continue
            failures = 0
            self._save(replace(self.status, checked_at=now_iso()))
            idle = self._idle_for(host, report) if report is not None else None
            if idle is not None:
                reason = (f"ended after {idle:.0f} s without activity "
                          f"(session.idle_timeout = {self.cfg['session.idle_timeout']} s)")
                say(f"JupyterLab is idle: {reason}")
                self._save(self.status.advance("Completed", ended_at=now_iso(), reason=reason))
                return 0

    def _idle_for(self, host: str, report: dict) -> float | None:
        """Seconds idle when that reaches session.idle_timeout, else None."""
        limit = self.cfg["session.idle_timeout"]
        if not limit or report.get("kernels"):
            return None
        now = datetime.now(timezone.utc)
        if activity.idle_seconds(report, 0, now) < limit:
            return None  # ask for terminals only when it may be idle
        terminals = readiness.terminal_count(host, self.status.port, self.status.base_url,
                                             self.secret)
        idle = activity.idle_seconds(report, terminals, now)
        return idle if idle is not None and idle >= limit else None

    def _ended(self) -> int | None:
        """The session is ending: say why. None when it was only conmon that went away."""
        if not self._ensure_service():
            raise SessionFailure("the session ended but Podman's API service could not be "
                                 "started to stop the container")
        facts = _podman().exit_facts(self.client, self.name)
        if facts is None:
            raise SessionFailure(f"container {self.name} disappeared (removed by someone "
                                 "else?)")
        if self.stop_signal:
            say(f"received {self.stop_signal}: stopping JupyterLab")
            self._save(self.status.advance("Completed", ended_at=now_iso(),
                                           reason=f"cancelled ({self.stop_signal})"))
            return 0
        if facts.status == "running" and facts.pid > 0:
            say("conmon exited but the container runs on; following its init process")
            self._follow(facts.pid)
            self._release_service()
            return None
        if facts.exit_code == 0:
            say("JupyterLab was shut down (File > Shut Down); ending the session")
            self._save(self.status.advance("Completed", ended_at=now_iso()))
            return 0
        facts = self._with_oom(facts)
        logs = _podman().last_log_lines(self.client.containers.get(self.name))
        oom = {True: "yes", False: "no", None: "unknown"}[facts.oom_killed]
        say(f"JupyterLab ended: status {facts.exit_code}, out-of-memory kill: {oom}; "
            f"its last output: {logs or '(none)'}")
        raise SessionFailure(exits.reason(facts, self.req.memory_gib))

    # -- teardown ----------------------------------------------------------------------
    def _teardown(self) -> bool:
        """Remove the container and the session's ephemeral dirs; stop our service.

        Returns False when the container could not be removed (the epilog is the backstop).
        """
        removed = True
        if self.service is not None and self.container_created():
            removed = self._remove_container()
        for m in self.mounts:
            if m.ephemeral and os.path.lexists(m.source):
                self._remove_tree(m.source)
        if self.service is not None:
            self.service.stop()
        if self.watch is not None:
            self.watch.close()
        return removed

    def container_created(self) -> bool:
        """True once a container may exist (the API service was started for this session)."""
        return self.client is not None or self.watch is not None

    def _remove_container(self) -> bool:
        """Stop and remove the container, starting the API service again if it is down."""
        for attempt in (1, 2):
            if not self._ensure_service():
                return False
            try:
                _podman().stop_and_remove(self.client, self.name,
                                          self.cfg["session.stop_timeout"])
                say(f"container {self.name} removed")
                return True
            except Exception as exc:  # noqa: BLE001 - report, maybe retry, keep tearing down
                say(f"could not remove container {self.name}: {exc}")
                if attempt == 2 or self.service.alive():
                    return False
        return False

    def _remove_tree(self, path: str) -> None:
        """Delete a session scratch dir; files owned by sub-ids need `podman unshare`."""
        try:
            shutil.rmtree(path)
        except OSError:
            env = self.service.env if self.service else podman_env(self.req.uid, self.req.job_env)
            subprocess.run(["podman", "unshare", "rm", "-rf", "--", path], env=env,
                           check=False, timeout=60)
        if os.path.lexists(path):
            say(f"could not remove scratch {path}")
        else:
            say(f"scratch {path} removed")
