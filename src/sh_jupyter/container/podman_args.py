"""Podman global options shared by every context that runs podman for a user (supervisor,
prolog/epilog, doctor). Kept free of heavy imports: the prolog runs for every job."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sh_jupyter.paths import TemplateContext, expand_path
from sh_jupyter.runner import run

if TYPE_CHECKING:
    from sh_jupyter.config import Config


def global_args(graphroot: str, runroot: str, image_store: str) -> list[str]:
    """podman global options: storage on node-local disk when the site asks, and the shared
    image store. Rootless Podman ignores `additionalimagestores` in /etc/containers/storage.conf
    (containers/storage#1591), so the store is passed explicitly on every invocation."""
    args = ["--storage-opt", f"additionalimagestore={image_store}"] if image_store else []
    if graphroot:
        args += ["--root", graphroot]
    if runroot:
        args += ["--runroot", runroot]
    return args


def cgroup_manager_args(cgroups: str) -> list[str]:
    """Podman's own global option for a container whose cgroups are disabled: Podman must ask
    systemd for no cgroup either (see stay_in_cgroup_env)."""
    return ["--cgroup-manager", "cgroupfs"] if cgroups == "disabled" else []


def stay_in_cgroup_env(cgroups: str) -> dict[str, str]:
    """Environment that keeps a rootless Podman process, and the conmon and container it
    starts, in the cgroup it was started in when the container's cgroups are disabled.

    On cgroup v2 with systemd as init, rootless Podman that does not own its cgroup (a Slurm
    job's is root's) moves itself into a scope of its own under user@UID.service
    (podman-PID.scope), whatever its cgroup manager; only `podman run --cgroups=disabled`
    skips that, and `podman system service` has no such option. It asks the user's systemd
    over the session bus, so without a usable bus the move fails (Podman logs it at debug
    level) and it stays in the job. Nothing else needs that bus here: the cgroupfs manager,
    and the pause process (started by the prolog, outside the job) already exists."""
    return {"DBUS_SESSION_BUS_ADDRESS": "disabled:"} if cgroups == "disabled" else {}


def service_socket(cfg: Config, ctx: TemplateContext) -> str:
    """The session's own Podman API socket (short: unix socket paths are limited to 107
    bytes). The epilog finds an orphaned service by it."""
    return f"{expand_path(cfg['podman.socket_dir'], ctx)}/{ctx.session_id[:8]}.sock"


def auth_dir(cfg: Config, ctx: TemplateContext) -> str:
    """Where the session's token waits for JupyterLab to read it: beside the API socket, in
    the user's private runtime dir on the node (a tmpfs; never the possibly shared home)."""
    return f"{expand_path(cfg['podman.socket_dir'], ctx)}/{ctx.session_id[:8]}.auth"


def for_user(cfg: Config, ctx: TemplateContext) -> list[str]:
    """The global options for this user's podman, from the site config."""
    def path(key: str) -> str:
        return expand_path(cfg[key], ctx) if cfg[key] else ""
    return global_args(path("podman.graphroot"), path("podman.runroot"), cfg["image.store"])


# Where Podman looks for helper programs such as pasta besides PATH (containers.conf's
# helper_binaries_dir default).
HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman",
               "/usr/lib/podman")


def pasta_installed(env: Mapping[str, str]) -> bool:
    """True when Podman can find pasta (package passt), its rootless network from Podman 5."""
    path = os.pathsep.join([env.get("PATH", ""), *HELPER_DIRS])
    return shutil.which("pasta", path=path) is not None


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, ...]:
    """A Podman version as numbers: "podman version 5.4.2", "5.4.2" or an API version header
    give (5, 4, 2); anything else () (unknown)."""
    match = _VERSION.search(text or "")
    return tuple(int(part) for part in match.groups() if part is not None) if match else ()


def installed_version(env: Mapping[str, str] | None = None) -> tuple[tuple[int, ...], str]:
    """The installed Podman's version (() when it cannot tell) and what `podman --version`
    printed (or why it could not run)."""
    out = run(["podman", "--version"], timeout=30, env=env)
    return (parse_version(out.stdout) if out.ok else ()), (out.stdout.strip() or out.why)
