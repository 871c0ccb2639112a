"""The thin shell of GPU mapping: gathers what Slurm and this node say about the job's GPUs,
then lets the pure mapping decide.

It runs in the supervisor, as the user, inside the job, so the device cgroup it meets is the
job's own: Slurm's ConstrainDevices lets the job open only its allocated GRES device files,
and an open() of any other fails with EPERM. That probe, the job's devices.list where cgroup v1
lists allowed devices (Slurm's default-allow hierarchy shows only "a *:* rwm" there), and the
GPUs' UUIDs from nvidia-smi where NVIDIA's tools are present are the evidence.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from sh_jupyter.container.cgroups import own_paths
from sh_jupyter.container.podman_args import installed_version
from sh_jupyter.files import read_kernel_file
from sh_jupyter.gpu import cdi
from sh_jupyter.gpu.mapping import (
    Assignment,
    Device,
    GpuMismatch,
    Job,
    Node,
    NodeId,
    NvmlGpu,
    choose,
    container_environment,
    parse_job_gpus,
)
from sh_jupyter.progress import say
from sh_jupyter.runner import run

if TYPE_CHECKING:  # pragma: no cover
    from sh_jupyter.config import Config

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def allocated_count(job_env: Mapping[str, str]) -> int:
    """How many GPUs Slurm gave the job (for the card; 0 when it says nothing usable)."""
    try:
        return len(job_gpus(job_env))
    except GpuMismatch:
        return 0


def job_gpus(job_env: Mapping[str, str]) -> tuple[str, ...]:
    """The GPU ids Slurm gave the job: SLURM_JOB_GPUS in a batch job (sessions), else
    SLURM_STEP_GPUS (a supervisor started by srun, whose steps lack SLURM_JOB_GPUS)."""
    return parse_job_gpus(job_env.get("SLURM_JOB_GPUS") or job_env.get("SLURM_STEP_GPUS"))


def spec_dirs(cfg: Config) -> list[str]:
    """Podman's directories first, then the configured ones (later ones win a name)."""
    dirs: list[str] = []
    for d in (*cdi.DEFAULT_DIRS, *cfg["gpu.cdi_spec_dirs"]):
        if os.path.normpath(d) not in dirs:
            dirs.append(os.path.normpath(d))
    return dirs


def node_identity(path: str) -> NodeId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        return NodeId("c", os.major(st.st_rdev), os.minor(st.st_rdev))
    if stat.S_ISBLK(st.st_mode):
        return NodeId("b", os.major(st.st_rdev), os.minor(st.st_rdev))
    return None


def host_node(spec: cdi.SpecNode) -> Node:
    """The node as this host has it at the path rootless runtimes bind it from."""
    ident = node_identity(spec.path)
    if ident is None:
        return Node(spec.path, None, "no device node at this path on the node")
    if spec.host_path and os.path.normpath(spec.host_path) != os.path.normpath(spec.path) \
            and node_identity(spec.host_path) != ident:
        return Node(spec.path, ident, f"hostPath {spec.host_path} is another node, but rootless "
                    f"Podman bind-mounts the host's {spec.path} (write specs with hostPath equal "
                    "to path)")
    said = (spec.type or ident.kind, ident.major if spec.major is None else spec.major,
            ident.minor if spec.minor is None else spec.minor)
    if said != (ident.kind, ident.major, ident.minor):
        return Node(spec.path, ident, f"the spec says {said[0]} {said[1]}:{said[2]} but the "
                    f"node is {ident}")
    return Node(spec.path, ident)


def _devices_cgroup() -> str | None:
    """This process's cgroup v1 devices path (None on cgroup v2, or when unreadable)."""
    return own_paths(read_kernel_file("/proc/self/cgroup") or "").get("devices")


def device_rules() -> tuple[str, ...] | None:
    """The job's cgroup v1 devices.list when it lists what is allowed (deny by default)."""
    path = _devices_cgroup()
    if path is None:
        return None
    text = read_kernel_file(f"/sys/fs/cgroup/devices{path}/devices.list")
    if text is None:
        return None
    rules = tuple(r.strip() for r in text.splitlines() if r.strip())
    return None if rules == ("a *:* rwm",) else rules


def confined() -> bool | None:
    """Is this process in a Slurm job's own devices cgroup (cgroup v1, ConstrainDevices=yes)?
    None on cgroup v2, where a job's cgroup exists whether or not devices are constrained."""
    path = _devices_cgroup()
    return None if path is None else "/job_" in path


def denied(paths: Mapping[NodeId, str]) -> frozenset[NodeId]:
    """The nodes this process may not open: EPERM from the device cgroup, EACCES from the
    node's mode. Other errors (ENXIO: no driver behind it) mean the cgroup let it through."""
    out = set()
    for ident, path in paths.items():
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                out.add(ident)
            continue
        os.close(fd)
    return frozenset(out)


def nvml(kind: str) -> tuple[NvmlGpu, ...] | None:
    """The GPUs nvidia-smi shows this job, with the identity of their /dev/nvidiaN node."""
    if not kind.startswith("nvidia.com/") or not shutil.which("nvidia-smi"):
        return None
    out = run(["nvidia-smi", "--query-gpu=uuid,minor_number", "--format=csv,noheader"],
              timeout=60)
    if not out.ran:
        raise GpuMismatch(f"nvidia-smi did not answer ({out.why})")
    if out.returncode != 0:
        raise GpuMismatch(f"nvidia-smi failed (status {out.returncode}): "
                          f"{(out.stderr or out.stdout).strip()[:300]}")
    gpus = []
    for line in out.stdout.splitlines():
        uuid, _, minor = (p.strip() for p in line.partition(","))
        if uuid:
            ident = node_identity(f"/dev/nvidia{minor}") if minor.isdigit() else None
            gpus.append(NvmlGpu(uuid, ident))
    return tuple(gpus)


def podman_version() -> tuple[int, ...] | None:
    """The installed Podman's version (None when it cannot tell): it decides which CDI spec
    versions and directories Podman reads."""
    return installed_version()[0] or None


def node_devices(cfg: Config, dirs: list[str]) -> list[Device]:
    """The CDI devices of the configured kind as Podman would resolve them, with their nodes
    as this host has them; CdiError when a spec cannot be trusted."""
    kind = cfg["gpu.cdi_kind"]
    specs = cdi.read_specs(dirs)
    ours = [s for s in specs if s.kind == kind]
    version = podman_version()
    shown = ".".join(map(str, version or ()))
    newest = cdi.max_spec_version(version) if version else None
    for s in ours:
        if newest and cdi.version_tuple(s.version) > cdi.version_tuple(newest):
            raise cdi.CdiError(f"CDI spec {s.path} is version {s.version}, but Podman {shown} "
                               f"reads CDI specs up to {newest} only")
    unseen = "" if not version or cdi.podman_reads_extra_dirs(version) else \
        f"Podman {shown} reads CDI specs only from {' and '.join(cdi.DEFAULT_DIRS)}"
    devices = []
    for d in cdi.resolve(specs, kind):
        nodes = tuple(host_node(n) for n in d.nodes)
        if unseen and d.priority >= len(cdi.DEFAULT_DIRS):  # Podman would not find it
            nodes = tuple(replace(n, problem=f"in {d.spec}, but {unseen}") for n in nodes)
        devices.append(Device(kind, d.name, nodes, d.spec))
    own = {n.identity for d in devices for n in d.nodes if n.identity is not None}
    for s in ours:
        for node in s.common_nodes:
            if node_identity(node.path) in own:
                raise cdi.CdiError(f"CDI spec {s.path} mounts {node.path} with every device "
                                   "(spec-level containerEdits), but it is one device's own "
                                   "node: every GPU session would get it")
    return devices


def for_job(cfg: Config, job_env: Mapping[str, str]) -> Assignment:
    """The job's GPUs as CDI device names, and the container's GPU variables.

    GpuMismatch or CdiError (both SessionFailure: the reason goes on the card) when anything
    does not provably agree. A job without GPUs costs nothing here.
    """
    kind, variables = cfg["gpu.cdi_kind"], cfg["gpu.visible_variables"]
    ids = job_gpus(job_env)
    if not ids:
        return Assignment((), container_environment(0, variables), "no GPUs")
    if len(ids) > cfg["limits.max_gpus"]:
        raise GpuMismatch(f"the job holds {len(ids)} GPU(s) (SLURM_JOB_GPUS="
                          f"{','.join(ids)}) but sessions may have at most "
                          f"{cfg['limits.max_gpus']} (limits.max_gpus)")
    dirs = spec_dirs(cfg)
    devices = node_devices(cfg, dirs)
    paths = {n.identity: n.path for d in devices for n in d.nodes
             if n.identity is not None and not n.problem}
    gpus = nvml(kind)
    for g in gpus or ():
        if g.identity is not None:
            paths.setdefault(g.identity, f"/dev/nvidia{g.identity.minor}")
    job = Job(ids, job_env.get("CUDA_VISIBLE_DEVICES"), device_rules(), denied(paths), gpus,
              confined())
    assignment = choose(job, devices, kind, variables, searched=" and ".join(dirs))
    say(f"GPUs: {assignment.detail}")
    return assignment
