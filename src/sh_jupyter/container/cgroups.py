"""cgroup shell: what the supervisor learns from its own (the job's) cgroup.

On cgroup v1 rootless Podman cannot give a container a memory cgroup of its own, so it cannot
tell whether the kernel's out-of-memory killer struck; the job step's memory cgroup, which holds
the container, counts every such kill. Reading that counter before and after is a record, not a
guess, of whether the container's end was an out-of-memory kill.
"""

from __future__ import annotations

import os

from sh_jupyter.files import read_kernel_file as _read

ROOT = "/sys/fs/cgroup"


def own_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller -> path from /proc/self/cgroup text ("" is the cgroup v2 entry)."""
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def oom_kill_count(proc_cgroup: str, read=_read) -> int | None:
    """The out-of-memory kills counted in our memory cgroup (None when it cannot be read)."""
    paths = own_paths(proc_cgroup)
    if "memory" in paths:  # v1: memory.oom_control has "oom_kill N" (kernel >= 4.13)
        text = read(f"{ROOT}/memory{paths['memory']}/memory.oom_control")
    elif "" in paths:  # v2: memory.events, hierarchical; the nearest cgroup that has one
        text, path = None, paths[""].rstrip("/")
        while text is None and path:
            text = read(f"{ROOT}{path}/memory.events")
            path = path.rpartition("/")[0]
    else:
        return None
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def oom_kills() -> int | None:
    return oom_kill_count(_read("/proc/self/cgroup") or "")


def limits_possible() -> bool:
    """True when rootless Podman can apply CPU/memory limits (delegated cgroup v2).

    On cgroup v1 rootless limits are ignored; the Slurm job's cgroup, which contains the
    container, is what limits it then.
    """
    if not os.path.exists(f"{ROOT}/cgroup.controllers"):
        return False
    path = own_paths(_read("/proc/self/cgroup") or "").get("", "")
    directory = f"{ROOT}{path}"
    controllers = _read(os.path.join(directory, "cgroup.controllers")) or ""
    return os.access(directory, os.W_OK) and "memory" in controllers.split()
