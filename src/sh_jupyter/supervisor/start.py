"""The supervisor's start: API service, mounts, container, port, readiness, connection file."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import replace

from sh_jupyter import gpu, launch
from sh_jupyter.config import choose_image
from sh_jupyter.container import cgroups, exits, guard, oci_runtime, podman_args
from sh_jupyter.container.podman_args import pasta_installed
from sh_jupyter.container.spec import (
    AUTH_FILE,
    SessionFacts,
    cgroups_mode,
    create_kwargs,
    host_mounts,
    in_job,
    network_mode,
    server_auth_config,
)
from sh_jupyter.errors import PortInUse, SessionFailure, UsageError
from sh_jupyter.files import ensure_private_dir, ensure_user_dir, read_text, write_private
from sh_jupyter.paths import expand_path
from sh_jupyter.progress import say
from sh_jupyter.session import (
    CONNECTION_FILE,
    REQUEST_FILE,
    connection_yaml,
    lab_url,
    new_secret,
    now_iso,
    running_message,
)
from sh_jupyter.supervisor import follow, ports
from sh_jupyter.supervisor.netns import NETWORK_HELPERS, helper_alive, helper_gone
from sh_jupyter.supervisor.phase import Phase, podman_shell
from sh_jupyter.supervisor.podman_service import PodmanService, podman_env

# How a portal's job names the site image and asks for notices (the OOD app's script
# exports them).
IMAGE_ENV = "SH_JUPYTER_SESSION_IMAGE"
NOTIFY_ENV = "SH_JUPYTER_SESSION_NOTIFY"


def job_ulimits() -> tuple[tuple[str, int, int], ...]:
    """The job's own open-files limit, handed to the container as it is.

    (nproc is left to Podman: runc cannot set it rootless, "error setting rlimit type 6".)
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return ()
    return (("nofile", hard if soft == resource.RLIM_INFINITY else soft, hard),)



class Starting(Phase):
    """From the job's start to Running: JupyterLab answers and the connection file is written."""

    def _read_launch(self) -> None:
        """A launcher's options (request.json) and secrets (taken from their file at once), or
        those a launcher in the job handed over in memory."""
        self.extra_env = launch.take_env(self.req.session_dir)
        if self.req.launch is not None:
            self.launch = self.req.launch
            self.extra_env.update(self.req.extra_env)
        text = read_text(os.path.join(self.req.session_dir, REQUEST_FILE))
        try:
            data = json.loads(text) if text else {}
            data = data if isinstance(data, dict) else {}
            if self.req.launch is None:
                self.launch = launch.from_dict(data.get("launch"))
        except (ValueError, UsageError) as exc:
            raise SessionFailure(f"{REQUEST_FILE}: {exc}") from None
        self._choose_image(self.req.image or data.get("image")
                           or self.req.job_env.get(IMAGE_ENV, ""))
        self.notices = self.req.notify or data.get("notify") is True \
            or self.req.job_env.get(NOTIFY_ENV) == "1"
        if self.launch.command:
            say(f"launcher command: {' '.join(self.launch.command)} (auth: {self.launch.auth})")

    def _guard_config(self, job_end: int) -> str:
        """The walltime guard's page config for this job's end, in the session directory
        ("": no known end, or no guard installed with this sh-jupyter)."""
        if not job_end or not os.path.isdir(guard.LABEXTENSION_DIR):
            return ""
        path = os.path.join(self.req.session_dir, guard.CONFIG_DIR)
        try:
            ensure_user_dir(os.path.dirname(os.path.join(path, guard.PAGE_CONFIG)))
            write_private(os.path.join(path, guard.PAGE_CONFIG),
                          guard.page_config(self.cfg, job_end))
        except OSError as exc:  # a full home or quota: the session runs without the guard
            say(f"warning: no walltime guard (could not write its page config in {path}: "
                f"{exc.strerror or exc})")
            return ""
        return path

    def _choose_image(self, name: object) -> None:
        """The site image by name, checked again here: request.json is the user's file, and
        only the site's list may name what runs."""
        try:
            self.site_image = choose_image(self.cfg, name,
                                           gpu.allocated_count(self.req.job_env))
        except UsageError as exc:
            raise SessionFailure(f"image {name!r}: {exc.allowed}") from None
        self._save(replace(self.status, image=self.site_image.name))
        say(f"image: {self.site_image.name} ({self.site_image.reference})")

    def _start_service(self) -> oci_runtime.Choice:
        """Choose the OCI runtime and start this session's Podman API service (not waiting)."""
        cfg, req = self.cfg, self.req
        self._check_storage()
        env = podman_env(req.uid, req.job_env)
        facts = oci_runtime.node_facts(env["PATH"])
        choice = oci_runtime.choose(cfg["podman.runtime"], cfg["podman.keep_groups"], facts)
        self.keep_groups = choice.keep_groups
        self.cgroup_v2 = facts.cgroup == "v2"
        cgroups = cgroups_mode(cfg["podman.cgroups"], in_job(self.ctx), self.cgroup_v2)
        env.update(podman_args.stay_in_cgroup_env(cgroups))
        self.service = PodmanService(podman_args.service_socket(cfg, self.ctx), env,
                                     [*podman_args.for_user(cfg, self.ctx),
                                      "--runtime", choice.runtime,
                                      *podman_args.cgroup_manager_args(cgroups)],
                                     cfg["podman.api_timeout"])
        self.service.start()
        return choice

    def _check_storage(self) -> None:
        """The user's container storage must be the user's own: a node-local graphroot in a
        shared place such as /var/tmp, made first by another user, would let them swap image
        layers or read the container's files. Podman creates the rest itself."""
        for key in ("podman.graphroot", "podman.runroot"):
            if self.cfg[key]:
                path = expand_path(self.cfg[key], self.ctx)
                try:
                    ensure_user_dir(path)
                except SessionFailure as exc:
                    raise SessionFailure(f"container storage ({key}): {exc}") from None

    def _start(self) -> None:
        self._read_launch()
        secret = self.secret = new_secret()
        self._write_auth(secret)
        self.present = self._prepare_mounts()
        podman_shell()
        self.client = self.service.wait_ready()
        self.podman_version = self.service.version
        self.have_pasta = pasta_installed(self.service.env)
        say(f"podman {self.podman_version or '(version unknown)'}, network "
            f"{network_mode(self.cfg['podman.network'], self.podman_version, self.have_pasta)}")
        container, port = self._launch(secret)
        self._save(replace(self.status, port=port, base_url=self._base(port)), must=True)
        url = lab_url(self.host, port, self._base(port))
        say(f"container started on port {port}; waiting for JupyterLab at {url}")
        self._connect(container, port, secret)
        self._release_service()

    def _write_auth(self, secret: str) -> None:
        """Put the token where JupyterLab reads it at start (a 0600 file in a 0700 directory
        of the user's runtime dir, mounted read-only): never in the container's environment,
        where PID 1 and the server would keep it for the session's life."""
        if self.launch.auth != "token":
            return  # the launcher's command authenticates by itself
        path = podman_args.auth_dir(self.cfg, self.ctx)
        ensure_private_dir(os.path.dirname(path), self.req.uid)
        self.auth_dir = path
        self._drop_auth()  # a leftover of a killed run of this session
        os.mkdir(path, 0o700)
        write_private(os.path.join(path, AUTH_FILE), server_auth_config(secret))

    def _prepare_mounts(self) -> set[str]:
        """Create what may be created; fail on a missing required source; list what exists."""
        try:
            self.mounts = host_mounts(self.cfg.mounts, self.ctx)
        except ValueError as exc:
            raise SessionFailure(f"bad mount path: {exc}") from None
        present = set()
        for m in self.mounts:
            try:
                if m.create and ensure_user_dir(m.source):
                    say(f"created {m.source} for {m.target}")
            except OSError as exc:  # a full filesystem (or its inodes), a quota
                raise SessionFailure(f"could not create {m.source} (for {m.target}): "
                                     f"{exc.strerror or exc}") from None
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
        if cgroups_mode(cfg["podman.cgroups"], in_job(self.ctx), self.cgroup_v2) == "disabled":
            say("container cgroups: disabled (it stays in this job's cgroup, under the job's "
                "limits)" + ("; podman.limits = \"always\" has no cgroup to apply to"
                             if cfg["podman.limits"] == "always" else ""))
        gpus = gpu.for_job(cfg, self.req.job_env)  # exactly the job's GPUs, or SessionFailure
        job_end = self.clock.end()
        guard_config = self._guard_config(job_end)
        tried = []
        for port in ports.candidates(cfg["network.port_min"], cfg["network.port_max"],
                                     cfg["network.port_attempts"]):
            if not ports.is_free(bind, port):
                tried.append(port)
                continue
            facts = SessionFacts(self.ctx, port, self.req.cpus, self.req.memory_gib, apply_limits,
                                 self._base(port), job_ulimits(), self.keep_groups,
                                 self.launch.command, self.extra_env, self.podman_version,
                                 self.have_pasta, auth_dir=self.auth_dir,
                                 cgroup_v2=self.cgroup_v2, image=self.site_image.reference,
                                 image_name=self.site_image.name, job_end=job_end,
                                 guard_config=guard_config)
            kwargs = create_kwargs(cfg, facts, self.req.job_env, self.mounts, self.present,
                                   gpus)
            self.start_clock = time.monotonic()
            self.oom_baseline = cgroups.oom_kills()
            ctr = podman_shell()
            try:
                container = ctr.create_and_start(self.client, kwargs, cfg["image.store"],
                                                 self.req.session_id, self.req.user)
            except PortInUse:
                tried.append(port)
                say(f"port {port} was taken at start; trying another")
                continue
            try:
                self._follow(ctr.conmon_pid(container))  # it may have ended already
                self.init_pid = int(container.attrs.get("State", {}).get("Pid") or 0)
                self.launched_at = time.time()
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
        ctr = podman_shell()
        unreachable = self._helper_check(container)
        while True:
            try:
                ctr.wait_until_ready(container, self.cfg["network.bind_address"], port,
                                     self._base(port),
                                     secret if self.launch.auth == "token" else "",
                                     self.start_clock + self.cfg["session.connection_timeout"],
                                     self.watch, self.signals, unreachable=unreachable)
                return
            except ctr.ConmonGone as gone:  # the container runs on: keep waiting for it
                say(f"conmon exited while JupyterLab was starting; following the container's "
                    f"init process ({gone.pid})")
                self._follow(gone.pid)
                self.conmon_lost = True
            except ctr.ExitedEarly as early:
                raise SessionFailure(self._early_reason(early)) from None

    def _helper_check(self, container) -> Callable[[], str] | None:
        """What tells, while JupyterLab boots, that its network helper died (then it can
        never answer: end now, not at the connection timeout); None without a helper."""
        netns = str((container.attrs.get("NetworkSettings") or {}).get("SandboxKey") or "")
        mode = network_mode(self.cfg["podman.network"], self.podman_version, self.have_pasta)
        if not netns or mode not in NETWORK_HELPERS:
            return None
        uid = self.req.uid
        return lambda: helper_gone(mode, self.conmon_lost) \
            if helper_alive(mode, netns, uid) is False else ""

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
            self._save(replace(self.status, port=port, base_url=self._base(port)), must=True)
            self._ready(container, port, secret)
        self._drop_auth()  # JupyterLab has read it (the token just worked)
        conn_file = os.path.join(self.req.session_dir, CONNECTION_FILE)
        try:
            write_private(conn_file, connection_yaml(self.host, port, secret))
        except OSError as exc:
            raise SessionFailure(f"could not write {CONNECTION_FILE} in "
                                 f"{self.req.session_dir}: {exc.strerror or exc}") from None
        took = time.monotonic() - self.start_clock
        message = running_message(self.name)
        try:
            self._save(self.status.advance("Running", ready_at=now_iso(), port=port,
                                           message=message), must=True)
        except SessionFailure:  # never a Connect (connection.yml) without a Running card
            with contextlib.suppress(FileNotFoundError):
                os.unlink(conn_file)
            raise
        say(f"{message}; ready in {took:.1f} s")
        say(f"connect: {lab_url(self.host, port, self._base(port))} "
            f"(password in {CONNECTION_FILE})")
        info = self.clock.info()
        if not self.status.walltime and info is not None and info.time_limit:
            self._save(replace(self.status, walltime=info.time_limit))
        self._notify("ready")
