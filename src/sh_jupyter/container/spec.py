"""The container spec of a session, built from config and session facts (pure: no I/O).

The result is the keyword arguments of podman-py's `containers.create`, so it can be checked in
unit tests field by field, and the Podman shell only passes it on.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from sh_jupyter._version import __version__
from sh_jupyter.config import Config, Mount, normalize
from sh_jupyter.container import guard
from sh_jupyter.container.gpus import Assignment, container_environment
from sh_jupyter.container.oci_runtime import KEEP_GROUPS_ANNOTATION
from sh_jupyter.container.podman_args import parse_version
from sh_jupyter.paths import TemplateContext, expand_path
from sh_jupyter.session import LOCAL_JOB_ID, container_name

LABEL_SESSION = "sh-jupyter.session-id"
LABEL_JOB = "sh-jupyter.job-id"
LABEL_USER = "sh-jupyter.user"
LABEL_VERSION = "sh-jupyter.version"
JOB_END_ENV = "SH_JUPYTER_JOB_END"
LABEL_IMAGE = "sh-jupyter.image"  # the site image's name (config [[images]])
PERSIST_TARGET = "/mnt/jupyter_host"
TMPFS = (("/root", "0700"), ("/run", "0755"), ("/tmp", "1777"), ("/var/tmp", "1777"))
# The token reaches JupyterLab as a jupyter_server config file in a directory of the node's
# runtime dir, mounted read-only here and named by JUPYTER_CONFIG_PATH. Not the environment:
# PID 1 and the server would keep it in /proc/PID/environ for the session's life (user code
# inside reads /proc/1/environ). The supervisor deletes the file once JupyterLab answers.
AUTH_TARGET = "/run/sh-jupyter-auth"
AUTH_FILE = "jupyter_server_config.json"


def server_auth_config(secret: str) -> str:
    """The auth config file's text: the session's token (jupyter_server 2's IdentityProvider;
    with it the same secret is the login page's password)."""
    return json.dumps({"IdentityProvider": {"token": secret}})


@dataclass(frozen=True)
class HostMount:
    """A mount with its source expanded for this session."""

    source: str
    target: str
    read_only: bool
    create: bool
    required: bool
    ephemeral: bool


@dataclass(frozen=True)
class SessionFacts:
    """Everything about this session the spec depends on that is not site config."""

    ctx: TemplateContext
    port: int
    cpus: int = 0
    memory_gib: int = 0
    apply_limits: bool = False
    base_url: str = "/"
    # (name, soft, hard) of the job's own limits: containers.conf defaults above a job's hard
    # limit (Slurm propagates the submit host's) would make the container fail to start.
    ulimits: tuple[tuple[str, int, int], ...] = ()
    # crun keeps the user's supplementary groups (group-shared project data stays readable).
    keep_groups: bool = False
    # A launcher's command (replacing image.command) and its extra environment (its secrets
    # among them: they travel in the API request, never in argv).
    command: tuple[str, ...] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # The Podman serving this session (its API's version) and whether pasta is installed:
    # what podman.network = "auto" resolves with.
    podman_version: str = ""
    have_pasta: bool = False
    # The node directory holding AUTH_FILE (the token), mounted at AUTH_TARGET; "" for a
    # launcher that authenticates by itself.
    auth_dir: str = ""
    # The node's cgroups are v2 (unified): what podman.cgroups = "auto" resolves with.
    cgroup_v2: bool = False
    # The site image chosen for the session: its reference in the store and its name ("":
    # image.name).
    image: str = ""
    image_name: str = ""
    # The job's end (epoch seconds, 0: unknown), and the session's directory holding the
    # walltime guard's page config ("": no guard; see guard.py).
    job_end: int = 0
    guard_config: str = ""


def podman_major(version: str) -> int:
    """The major number of a Podman version string ("5.4.2" -> 5; unknown -> 0)."""
    return (parse_version(version) or (0,))[0]


def network_mode(setting: str, podman_version: str, have_pasta: bool) -> str:
    """The container's network mode. "auto" follows Podman's own rootless default: pasta from
    Podman 5, where slirp4netns is deprecated, and slirp4netns before (Podman 4.3 has no
    pasta) or where pasta is not installed (Debian's Podman 5 only recommends it)."""
    if setting != "auto":
        return setting
    return "pasta" if podman_major(podman_version) >= 5 and have_pasta else "slirp4netns"


def in_job(ctx: TemplateContext) -> bool:
    """Does the session run in a Slurm job (not `run --local`)?"""
    return bool(ctx.job_id) and ctx.job_id != LOCAL_JOB_ID


def cgroups_mode(setting: str, job: bool, cgroup_v2: bool) -> str:
    """Podman's --cgroups for the container. On cgroup v2 Podman's default ("enabled") asks
    the user's systemd for a scope under user@UID.service: outside the Slurm job, its memory
    and CPU limits and what scancel ends. "disabled" leaves the container's processes in the
    cgroup of the process that starts them, the job's. On cgroup v1 rootless Podman makes no
    cgroup at all, so the container already stays in the job's cgroups: nothing to change
    there. Outside a job Podman's default stays."""
    if setting != "auto":
        return setting
    return "disabled" if job and cgroup_v2 else "enabled"


def host_mounts(mounts: tuple[Mount, ...], ctx: TemplateContext) -> list[HostMount]:
    """Expand every mount's source for this session (ValueError if a value is unsafe)."""
    return [HostMount(expand_path(m.source, ctx), normalize(m.target), m.read_only,
                      m.create, m.required, m.ephemeral) for m in mounts]


def jupyter_command(cfg: Config, port: int, base_url: str = "/",
                    command: tuple[str, ...] = ()) -> list[str]:
    """JupyterLab's command line; it carries no secret (the token travels in the environment)."""
    root, preferred = cfg["image.root_dir"], cfg["image.preferred_dir"]
    cmd = [
        # Inside the container's own network namespace: the published port decides who
        # reaches it (host networking is refused by the config).
        *(command or cfg["image.command"]), "--allow-root", "--no-browser", "--ip=0.0.0.0",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root}",
    ]
    rel = posixpath.relpath(preferred, root)
    if not rel.startswith(".."):
        cmd.append(f"--FileContentsManager.preferred_dir={'' if rel == '.' else rel}")
    idle = cfg["session.idle_timeout"]
    if idle:
        # The session's end on idle is the supervisor's (see activity.py). JupyterLab culls
        # idle kernels no notebook is connected to, which lets a forgotten session become
        # idle; terminals are never culled (a silent long command in one is the user's work),
        # so an open terminal keeps the session.
        cmd += [f"--MappingKernelManager.cull_idle_timeout={idle}",
                "--MappingKernelManager.cull_interval=60"]
    return cmd


def environment(cfg: Config, facts: SessionFacts, job_env: Mapping[str, str],
                mounts: list[HostMount]) -> dict[str, str]:
    """The container's environment: where the token's config is, the proxies, and where user
    state persists. It holds no secret of sh-jupyter's (a launcher's own may be in extra_env).

    With the root filesystem read-only, pip falls back to a user install, so PYTHONUSERBASE on
    the persistent mount makes `pip install` survive into the next session (the app tells
    users to install there).
    """
    env = {
        **facts.extra_env,
        "HOME": "/root",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "SH_JUPYTER_SESSION_ID": facts.ctx.session_id,
    }
    if in_job(facts.ctx):
        env["SLURM_JOB_ID"] = facts.ctx.job_id
    # Jupyter's config search path: the token's config file, and the walltime guard's page
    # config (both only add directories: the image's own config is kept).
    config_path = [AUTH_TARGET] if facts.auth_dir else []
    if any(m.target == PERSIST_TARGET for m in mounts):
        env.update({
            "PYTHONUSERBASE": f"{PERSIST_TARGET}/.local",
            "JUPYTER_DATA_DIR": f"{PERSIST_TARGET}/.local/share/jupyter",
            "JUPYTERLAB_SETTINGS_DIR": f"{PERSIST_TARGET}/.jupyter/lab/user-settings",
            "JUPYTERLAB_WORKSPACES_DIR": f"{PERSIST_TARGET}/.jupyter/lab/workspaces",
        })
    if facts.job_end:
        # For the user's own code ("how long have I got?"); JupyterLab's guard reads the same
        # end from its page config (guard.py).
        env[JOB_END_ENV] = str(facts.job_end)
    if facts.guard_config:
        env["JUPYTER_PATH"] = guard.DATA_TARGET
        config_path.append(guard.CONFIG_TARGET)
    if config_path:
        env["JUPYTER_CONFIG_PATH"] = ":".join(config_path)
    for name in cfg["proxy.variables"]:
        if name in job_env:
            env[name] = job_env[name]
    return env


def labels(facts: SessionFacts) -> dict[str, str]:
    """Labels that let cleanup find exactly this session's and this job's containers."""
    out = {
        LABEL_SESSION: facts.ctx.session_id,
        LABEL_JOB: facts.ctx.job_id,
        LABEL_USER: facts.ctx.user,
        LABEL_VERSION: __version__,
    }
    if facts.image_name:
        out[LABEL_IMAGE] = facts.image_name
    return out


def create_kwargs(cfg: Config, facts: SessionFacts,
                  job_env: Mapping[str, str], mounts: list[HostMount],
                  present: set[str], gpus: Assignment | None = None) -> dict:
    """podman-py `containers.create` arguments for this session (no secret of its own in
    them: the token is in the file under `facts.auth_dir`).

    `present` is the set of mount sources that exist; optional mounts outside it are left out.
    `gpus` are the job's GPUs (`gpu.for_job`): CDI device names, which Podman's API resolves
    in `devices`, and the container's own GPU numbering; no other GPU reaches the container.
    """
    port = facts.port
    gpus = gpus or Assignment((), container_environment(0, cfg["gpu.visible_variables"]))
    env = environment(cfg, facts, job_env, [m for m in mounts if m.source in present])
    env.update(gpus.environment)
    kwargs: dict = {
        "image": facts.image or cfg["image.name"],
        "name": container_name(cfg["session.container_prefix"], facts.ctx.session_id),
        "command": jupyter_command(cfg, port, facts.base_url, facts.command),
        "environment": env,
        "labels": labels(facts),
        "mounts": [{"type": "bind", "source": m.source, "target": m.target,
                    "read_only": m.read_only}
                   for m in mounts if m.source in present]
        # Read-only root (needed for images in the shared store): writable tmpfs where
        # JupyterLab and runc write. The API does not add --read-only-tmpfs mounts itself.
        + [{"type": "tmpfs", "source": "tmpfs", "target": t, "mode": mode}
           for t, mode in TMPFS]
        + ([{"type": "bind", "source": facts.auth_dir, "target": AUTH_TARGET,
             "read_only": True}] if facts.auth_dir else [])
        + (guard.mounts(facts.guard_config) if facts.guard_config else []),
        "read_only": True,
        "working_dir": "/root",
        # Hardening: nothing JupyterLab needs requires a capability; root inside is the user.
        "cap_drop": ["ALL"],
        "cap_add": [c.upper().removeprefix("CAP_") for c in cfg["podman.cap_add"]],
        "no_new_privileges": True,
        "shm_size": cfg["podman.shm_size"],
        "stop_signal": 15,  # podman-py needs an int here
        "stop_timeout": cfg["session.stop_timeout"],
        "devices": [*cfg["podman.devices"], *gpus.names],
        "ulimits": [{"Name": n, "Soft": s, "Hard": h} for n, s, h in facts.ulimits],
    }
    if facts.keep_groups:
        kwargs["annotations"] = {KEEP_GROUPS_ANNOTATION: "1"}
    network = network_mode(cfg["podman.network"], facts.podman_version, facts.have_pasta)
    kwargs["network_mode"] = network
    # The port is published by the session's own network helper (slirp4netns or pasta), bound
    # before JupyterLab starts: no other user can take it between the choice and readiness.
    kwargs["ports"] = {f"{port}/tcp": (cfg["network.bind_address"], port)}
    if network == "slirp4netns":
        # slirp4netns forwards the port itself: no rootlessport helper process (13 MB) per
        # session, and the published port is still refused when taken.
        kwargs["network_options"] = {"slirp4netns": ["port_handler=slirp4netns"]}
    if cgroups_mode(cfg["podman.cgroups"], in_job(facts.ctx), facts.cgroup_v2) == "disabled":
        # No cgroup of its own, so no limit of its own either: the job's cgroup holds it.
        kwargs["cgroups_mode"] = "disabled"
        return kwargs
    kwargs["pids_limit"] = cfg["podman.pids_limit"]
    if facts.apply_limits:
        if facts.cpus:
            kwargs["cpu_period"] = 100000
            kwargs["cpu_quota"] = 100000 * facts.cpus
        if facts.memory_gib:
            kwargs["mem_limit"] = f"{facts.memory_gib}g"
    return kwargs
