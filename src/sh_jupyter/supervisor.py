"""The supervisor: runs inside the job (or `run --local`) for the session's whole life.

It starts JupyterLab in a rootless container, waits until it really answers, publishes the
connection file, follows the container, and on every way out (File > Shut Down, a signal, a
failure) removes the container and the session's scratch before exiting.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable

from . import container as ctr
from . import podman_args, ports, readiness
from .config import Config
from .errors import EXIT_SESSION_FAILED, SessionFailure
from .files import ensure_private_dir, ensure_user_dir, read_text, write_private
from .podman_service import PodmanService, podman_env
from .progress import say
from .session import (
    CONNECTION_FILE,
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
from .spec import HostMount, SessionFacts, create_kwargs, host_mounts
from .templates import TemplateContext


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
    job_env: Mapping[str, str] = field(default_factory=dict)
    on_timeout: Callable[[str], None] | None = None  # Slurm mode: the job cancels itself


def _cgroup_limits_possible() -> bool:
    """True when rootless Podman can apply CPU/memory limits (delegated cgroup v2).

    On cgroup v1 rootless limits are ignored; the Slurm job's cgroup, which contains the
    container, is what limits it then.
    """
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return False
    own = read_text("/proc/self/cgroup") or ""
    path = own.strip().rsplit(":", 1)[-1] if own.startswith("0::") else ""
    directory = f"/sys/fs/cgroup{path}"
    controllers = read_text(os.path.join(directory, "cgroup.controllers")) or ""
    return os.access(directory, os.W_OK) and "memory" in controllers.split()


def _job_ulimits() -> tuple[tuple[str, int, int], ...]:
    """The job's own open-files limit, handed to the container as it is.

    (nproc is left to Podman: runc cannot set it rootless, "error setting rlimit type 6".)
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return ()
    return (("nofile", hard if soft == resource.RLIM_INFINITY else soft, hard),)


class Supervisor:
    """One session from start to teardown."""

    def __init__(self, cfg: Config, req: RunRequest) -> None:
        self.cfg = cfg
        self.req = req
        self.name = container_name(cfg["session.container_prefix"], req.session_id)
        self.ctx = TemplateContext(req.user, req.home, req.uid, req.session_id, req.job_id)
        self.host = cfg["network.connect_host"] or socket.gethostname()
        self.wake = threading.Event()  # set by a signal or by the container's exit
        self.stop_signal: str = ""
        self.exit_code: int | None = None
        self.exited = False
        self.timed_out = False
        self.service_lock = threading.Lock()
        self.service: PodmanService | None = None
        self.client = None
        self.mounts: list[HostMount] = []
        self.present: set[str] = set()
        self.start_clock = 0.0  # when the container was started: the connection timeout's zero
        self.container_id = ""
        self.status = Status(session_id=req.session_id, job_id=req.job_id)

    def _base(self, port: int) -> str:
        return resolve_base_url(self.cfg["image.base_url"], self.host, port)

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
            container=self.name, cpus=self.req.cpus,
            memory_gib=self.req.memory_gib, walltime=self.req.walltime or prev.walltime,
            connection_timeout=self.cfg["session.connection_timeout"],
        )

    # -- signals -----------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:
        self.stop_signal = signal.Signals(signum).name
        self.wake.set()

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # -- main --------------------------------------------------------------------------
    def run(self) -> int:
        """Run the session; returns the process exit status."""
        ensure_private_dir(self.req.session_dir, self.req.uid)
        self._install_signals()
        self._save(self._initial_status())
        say(f"session {self.req.session_id} starting on {self.host} "
            f"(job {self.req.job_id}, container {self.name})")
        try:
            code = self._session()
        finally:
            removed = self._teardown()
        if not removed:
            self._save(self.status.fail(f"container {self.name} could not be removed"))
            code = EXIT_SESSION_FAILED
        if self.timed_out and self.req.on_timeout:
            say("cancelling the job: JupyterLab did not become available in time")
            self.req.on_timeout(self.status.reason)
        return code

    def _session(self) -> int:
        try:
            self._start()
            return self._supervise()
        except SessionFailure as failure:
            reason = str(failure)
            if self.stop_signal and not self.exited:
                reason = f"cancelled ({self.stop_signal}) before JupyterLab was ready"
            say(f"session failed: {reason}")
            self._save(self.status.fail(reason))
            self.timed_out = isinstance(failure, ctr.ConnectionTimeout)
            return EXIT_SESSION_FAILED

    def _start(self) -> None:
        cfg, req = self.cfg, self.req
        env = podman_env(req.uid, req.job_env)
        self.service = PodmanService(podman_args.service_socket(cfg, self.ctx),
                                     env, podman_args.for_user(cfg, self.ctx),
                                     cfg["podman.api_timeout"])
        self.service.start()  # starts in the background while mounts are prepared
        secret = new_secret()
        self.present = self._prepare_mounts()
        self.client = self.service.wait_ready()
        if not self.client.images.exists(cfg["image.name"]):
            raise SessionFailure(f"image {cfg['image.name']} is not in the image store "
                                 f"{cfg['image.store']} (it is never pulled; the site must "
                                 "publish it)")
        ctr.remove_leftover(self.client, self.name, req.session_id, req.user)
        container, port = self._launch(secret)
        self._save(replace(self.status, port=port, base_url=self._base(port)))
        url = lab_url(self.host, port, self._base(port))
        say(f"container started on port {port}; waiting for JupyterLab at {url}")
        self._connect(container, port, secret)

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
            apply_limits = _cgroup_limits_possible()
        tried = []
        for port in ports.candidates(cfg["network.port_min"], cfg["network.port_max"],
                                     cfg["network.port_attempts"]):
            if not ports.is_free(bind, port):
                tried.append(port)
                continue
            facts = SessionFacts(self.ctx, port, self.req.cpus, self.req.memory_gib, apply_limits,
                                 self._base(port), _job_ulimits())
            kwargs = create_kwargs(cfg, facts, secret, self.req.job_env, self.mounts,
                                   self.present)
            self.start_clock = time.monotonic()
            try:
                container = ctr.create_and_start(self.client, kwargs)
            except ctr.PortInUse:
                tried.append(port)
                say(f"port {port} was taken at start; trying another")
                continue
            self._watch(container.id)
            return container, port
        raise SessionFailure(f"no free port: tried {tried} in "
                             f"{cfg['network.port_min']}-{cfg['network.port_max']}")

    def _connect(self, container, port: int, secret: str) -> None:
        """Wait for readiness, retrying another port if JupyterLab itself could not bind."""
        cfg = self.cfg
        deadline = self.start_clock + cfg["session.connection_timeout"]
        try:
            ctr.wait_until_ready(container, cfg["network.bind_address"], port,
                                 self._base(port), secret, deadline, self.wake,
                                 lambda: self.exited)
        except ctr.PortInUse:
            with contextlib.suppress(Exception):  # best effort: it is being replaced
                container.remove(force=True)
            say(f"JupyterLab could not bind port {port}; trying another")
            container, port = self._launch(secret)
            self._save(replace(self.status, port=port, base_url=self._base(port)))
            ctr.wait_until_ready(container, cfg["network.bind_address"], port,
                                 self._base(port), secret, deadline, self.wake,
                                 lambda: self.exited)
        write_private(os.path.join(self.req.session_dir, CONNECTION_FILE),
                      connection_yaml(self.host, port, secret))
        took = time.monotonic() - self.start_clock
        message = running_message(self.name)
        self._save(self.status.advance("Running", ready_at=now_iso(), port=port,
                                       message=message))
        say(f"{message}; ready in {took:.1f} s")
        say(f"connect: {lab_url(self.host, port, self._base(port))} "
            f"(password in {CONNECTION_FILE})")

    def _watch(self, container_id: str) -> None:
        """Follow this container from its start: its exit wakes readiness and supervision."""
        self.container_id = container_id
        self.exited = False
        self.exit_code = None
        if not self.stop_signal:
            self.wake.clear()  # a replaced container's exit must not wake us
        ctr.watch_exit(self.service.blocking_client, container_id,
                       lambda code: self._on_exit(container_id, code), self._revive_service)

    def _on_exit(self, container_id: str, code: int | None) -> None:
        if container_id != self.container_id:
            return
        self.exit_code = code
        self.exited = True
        self.wake.set()

    def _supervise(self) -> int:
        """Sleep until the container exits or a signal comes; check health periodically."""
        host = ports.probe_address(self.cfg["network.bind_address"])
        interval = self.cfg["session.health_interval"]
        failures = 0
        while not self.wake.wait(interval):
            if readiness.api_answers(host, self.status.port, self.status.base_url):
                failures = 0
                continue
            failures += 1
            say(f"health check failed ({failures} in a row): JupyterLab's /api does not answer")
        if self.stop_signal and not self.exited:
            say(f"received {self.stop_signal}: stopping JupyterLab")
            self._save(self.status.advance("Completed", ended_at=now_iso(),
                                           reason=f"cancelled ({self.stop_signal})"))
            return 0
        code = self.exit_code
        if code == 0:
            say("JupyterLab was shut down (File > Shut Down or idle timeout); ending the session")
            self._save(self.status.advance("Completed", ended_at=now_iso()))
            return 0
        if code is None:
            raise SessionFailure("the container can no longer be followed (its Podman service "
                                 "or its image went away; was the image store rewritten?)")
        logs = ctr.last_log_lines(self.client.containers.get(self.container_id))
        why = "killed (out of memory?)" if code == 137 else f"exited with status {code}"
        raise SessionFailure(f"JupyterLab {why}: {logs or '(no output)'}")

    def _teardown(self) -> bool:
        """Remove the container and the session's ephemeral dirs; stop our service.

        Returns False when the container could not be removed (the epilog is the backstop).
        """
        removed = True
        if self.client is not None:
            removed = self._remove_container()
        for m in self.mounts:
            if m.ephemeral and os.path.lexists(m.source):
                self._remove_tree(m.source)
        if self.service is not None:
            self.service.stop()
        return removed

    def _revive_service(self) -> bool:
        """Start our Podman API service again if it died; True when it answers."""
        if self.service is None:
            return False
        with self.service_lock:  # the watcher thread and teardown may both get here
            if self.service.alive():
                return True
            say("the Podman API service died; starting it again")
            try:
                self.service.start()
                self.client = self.service.wait_ready()
            except SessionFailure as exc:
                say(f"could not restart the Podman API service: {exc}")
                return False
        return True

    def _remove_container(self) -> bool:
        """Stop and remove the container; if our API service died meanwhile, start it again
        once (in local mode there is no epilog to fall back on)."""
        for attempt in (1, 2):
            try:
                ctr.stop_and_remove(self.client, self.name, self.cfg["session.stop_timeout"])
                say(f"container {self.name} removed")
                return True
            except Exception as exc:  # noqa: BLE001 - report, maybe retry, keep tearing down
                say(f"could not remove container {self.name}: {exc}")
                if attempt == 2 or self.service is None or self.service.alive() \
                        or not self._revive_service():
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
