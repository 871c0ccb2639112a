"""`sh-jupyter doctor`'s GPU checks: the node's CDI specs (readable by users, parsed, a version
this Podman reads, holding the configured kind) and Slurm confining jobs to their GPUs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from sh_jupyter.doctor.report import ERROR, OK, WARN
from sh_jupyter.gpu import cdi, host

if TYPE_CHECKING:  # pragma: no cover
    from sh_jupyter.config import Config

Add = Callable[..., None]  # Doctor.add(check, status, message, fix="")


def check(cfg: Config, add: Add, slurm_conf: dict[str, str] | None) -> None:
    """CDI specs: readable by users, understood by this Podman, holding the GPUs' kind;
    and a Slurm that confines each job to its own GPU device files."""
    if cfg["limits.max_gpus"] == 0:
        add("gpu", OK, "GPU sessions are off (limits.max_gpus = 0)")
        return
    kind, dirs = cfg["gpu.cdi_kind"], host.spec_dirs(cfg)
    version = host.podman_version()
    shown = ".".join(map(str, version or ()))
    extra = cfg["gpu.cdi_spec_dirs"]
    if version and extra and not cdi.podman_reads_extra_dirs(version):
        add("cdi-dirs", ERROR, f"gpu.cdi_spec_dirs lists {', '.join(extra)}, but "
            f"Podman {shown} reads CDI specs only from "
            f"{' and '.join(cdi.DEFAULT_DIRS)}",
            "put the specs in /etc/cdi (static) or /var/run/cdi (generated at boot) "
            "and empty gpu.cdi_spec_dirs")
    unreadable = [p for p in _spec_paths(dirs) if not world_readable(p)]
    if unreadable:
        add("cdi-access", ERROR, f"not readable by every user: {', '.join(unreadable)} "
            "(sessions run as the user and read the specs)",
            f"chmod a+r {' '.join(unreadable)} (and a+rx on their directories)")
    try:
        devices = host.node_devices(cfg, dirs)
    except cdi.CdiError as exc:
        add("cdi", ERROR, str(exc), "fix or regenerate the spec: nvidia-ctk cdi "
            "generate --output=/etc/cdi/nvidia.yaml (then chmod 0644)")
        return
    if not devices:
        add("cdi", ERROR, f"no CDI device of kind {kind} in {' and '.join(dirs)}",
            "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml, or set "
            "gpu.cdi_kind to the kind your specs declare")
    else:
        newest = cdi.max_spec_version(version) if version else None
        names = ", ".join(d.name for d in devices[:8]) + (" ..." if len(devices) > 8 else "")
        add("cdi", OK, f"{len(devices)} CDI devices of kind {kind} ({names}); "
            f"Podman {shown or '?'} reads spec versions up to {newest or '?'}")
    for d in devices:
        if d.problem() and d.name != "all":
            add("cdi-device", WARN, f"{d.qualified} cannot be given to a session: "
                f"{d.problem()}", "regenerate the spec on this node")
    _constrain_devices(add, slurm_conf)


def _constrain_devices(add: Add, conf: dict[str, str] | None) -> None:
    if conf is None:
        return  # doctor's slurm check says why
    if conf.get("ConstrainDevices", "").lower() != "yes":
        add("gpu-cgroup", WARN, "cgroup.conf lacks ConstrainDevices=yes: a job "
            "may open every GPU of its node, so a session on a node shared by GPU "
            "jobs fails (sh-jupyter does not guess which GPUs are the job's)",
            "ConstrainDevices=yes in cgroup.conf (and File= for each GPU in gres.conf)")
    else:
        add("gpu-cgroup", OK, "ConstrainDevices=yes: jobs open only their GPUs")


def _spec_paths(dirs: list[str]) -> list[str]:
    paths = []
    for d in dirs:
        try:
            paths += cdi.spec_files(d)
        except cdi.CdiError:
            paths.append(d)
    return paths


def world_readable(path: str) -> bool:
    """Can every user read the file (its mode, and every directory above it)?"""
    try:
        if not os.stat(path).st_mode & 0o004:
            return False
    except OSError:
        return False
    parent = os.path.dirname(path)
    return all(_traversable(d) for d in _ancestors(parent))


def _ancestors(path: str) -> list[str]:
    out = [path]
    while path not in ("/", ""):
        path = os.path.dirname(path)
        out.append(path)
    return out


def _traversable(directory: str) -> bool:
    try:
        return bool(os.stat(directory).st_mode & 0o001)
    except OSError:
        return False
