"""Which CDI devices are this job's GPUs: a pure decision from what the job and node show.

Indices lie. In a job with ConstrainDevices=yes Slurm renumbers
CUDA_VISIBLE_DEVICES from 0 while SLURM_JOB_GPUS keeps the node's ids; NVML numbers GPUs in its
own order; a CDI spec's index names are the order of the machine that generated it. So no index
is ever used as a name here. A GPU is known by what cannot be renumbered: the device node
(type major:minor) its CDI device mounts, which the job's device cgroup lets the job open or
not, and, where NVML answers, the GPU's UUID on that node. Any doubt fails the session closed:
no GPU is better than another job's GPU, and `all` is never chosen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sh_jupyter.container.gpus import Assignment, container_environment
from sh_jupyter.errors import SessionFailure

# Set in every session: a legacy NVIDIA OCI hook reads it (CUDA images set it to "all") and
# would otherwise add every GPU of the node; "void" makes it do nothing.
_UUID_NAME = re.compile(r"^(GPU|MIG)-[0-9A-Fa-f-]+$")
_MAX_LISTED = 6


class GpuMismatch(SessionFailure):
    """What Slurm allocated and what the node's CDI specs offer do not provably agree."""


@dataclass(frozen=True, order=True)
class NodeId:
    """A device node's identity: what a bind mount carries, whatever the path is called."""

    kind: str  # "c" (character) or "b" (block)
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.kind} {self.major}:{self.minor}"


@dataclass(frozen=True)
class Node:
    """A device node a CDI device mounts, as this host has it.

    Rootless runc and crun bind-mount a device node from the host path equal to its container
    path (whatever hostPath says), so `identity` is that of the host node at `path`; the shell
    sets `problem` when the spec says otherwise or the node is missing.
    """

    path: str
    identity: NodeId | None
    problem: str = ""


@dataclass(frozen=True)
class Device:
    """One CDI device of the configured kind, after name resolution across the spec dirs."""

    kind: str
    name: str
    nodes: tuple[Node, ...]
    spec: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.kind}={self.name}"

    def identities(self) -> frozenset[NodeId]:
        return frozenset(n.identity for n in self.nodes if n.identity is not None)

    def problem(self) -> str:
        if not self.nodes:
            return "mounts no device node, so nothing ties it to a GPU"
        return "; ".join(f"{n.path}: {n.problem}" for n in self.nodes if n.problem)


@dataclass(frozen=True)
class NvmlGpu:
    """A GPU as nvidia-smi reports it inside the job (its index is renumbered: unused)."""

    uuid: str
    identity: NodeId | None  # of /dev/nvidia<minor_number>


@dataclass(frozen=True)
class Job:
    """What Slurm and the job's cgroup say about the job's GPUs."""

    job_gpus: tuple[str, ...]  # SLURM_JOB_GPUS: the node's ids, only ever counted
    visible: str | None = None  # CUDA_VISIBLE_DEVICES as Slurm set it, only ever counted
    device_rules: tuple[str, ...] | None = None  # devices.list when it lists (deny by default)
    denied: frozenset[NodeId] = frozenset()  # nodes the job could not open (EPERM, EACCES)
    nvml: tuple[NvmlGpu, ...] | None = None  # None: no NVML on this node / not NVIDIA
    # The job's device cgroup is Slurm's (cgroup v1: its devices hierarchy path is the job's,
    # which Slurm makes only with ConstrainDevices=yes); None: cannot tell (cgroup v2).
    confined: bool | None = None



def parse_job_gpus(text: str | None) -> tuple[str, ...]:
    """SLURM_JOB_GPUS ("1,3"); GpuMismatch if it is not a list of ids."""
    if not text or not text.strip():
        return ()
    ids = tuple(p.strip() for p in text.split(","))
    if not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise GpuMismatch(f"SLURM_JOB_GPUS = {text!r} is not a list of distinct GPU ids")
    return ids



def rules_allow(rules: Iterable[str], node: NodeId) -> bool:
    """Does a cgroup v1 devices.list (deny by default) let the job read and write the node?"""
    granted = set()
    for line in rules:
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[1]:
            continue
        kind, (major, minor), access = parts[0], parts[1].split(":", 1), parts[2]
        if kind not in ("a", node.kind):
            continue
        if major not in ("*", str(node.major)) or minor not in ("*", str(node.minor)):
            continue
        granted |= set(access)
    return {"r", "w"} <= granted


def _allowed(job: Job, node: NodeId) -> bool:
    if node in job.denied:
        return False
    return job.device_rules is None or rules_allow(job.device_rules, node)


def _listing(devices: Sequence[Device]) -> str:
    shown = [f"{d.qualified} ({', '.join(n.path for n in d.nodes)})"
             for d in devices[:_MAX_LISTED]]
    more = len(devices) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _preferred_name(group: Sequence[Device], uuid: str) -> Device:
    """Of the names for one GPU, the UUID name: it cannot be renumbered."""
    def rank(d: Device) -> tuple[int, str]:
        if uuid and d.name == uuid:
            return 0, d.name
        if _UUID_NAME.match(d.name):
            return 1, d.name
        return (3 if d.name.isdigit() else 2), d.name
    return min(group, key=rank)


def _check_count(job: Job) -> int:
    n = len(job.job_gpus)
    ids = ",".join(job.job_gpus)
    if job.visible is None:
        return n
    visible = [v for v in job.visible.split(",") if v.strip()]
    if job.visible.strip() == "NoDevFiles":
        raise GpuMismatch("Slurm gave the job GPUs without device files (gres.conf has no "
                          "File= for them), so nothing proves which GPUs are the job's")
    if n and len(visible) != n:
        raise GpuMismatch(f"Slurm's variables disagree: SLURM_JOB_GPUS={ids} but "
                          f"CUDA_VISIBLE_DEVICES={job.visible}")
    return n


def _groups(devices: Sequence[Device], job: Job, kind: str
            ) -> tuple[list[list[Device]], list[Device], list[Device]]:
    """The job's GPUs as groups of names for the same nodes, the devices denied to the job,
    and the unusable ones (with their problem)."""
    unusable = [d for d in devices if d.problem()]
    usable = [d for d in devices if not d.problem()]
    # A device whose nodes include another device's is several GPUs (e.g. "all", a GPU's MIG
    # slices with their parent's node): never one of the job's GPUs.
    single = [d for d in usable
              if not any(e.identities() < d.identities() for e in usable)]
    mine, denied = [], []
    for d in single:
        (mine if all(_allowed(job, i) for i in d.identities()) else denied).append(d)
    groups: dict[frozenset[NodeId], list[Device]] = {}
    for d in mine:
        groups.setdefault(d.identities(), []).append(d)
    keys = sorted(groups, key=sorted)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if a & b:  # partly shared nodes (e.g. a MIG slice and its parent GPU)
                raise GpuMismatch(f"CDI devices {groups[a][0].qualified} and "
                                  f"{groups[b][0].qualified} of kind {kind} share the device "
                                  f"node(s) {', '.join(map(str, sorted(a & b)))}: they cannot "
                                  "be told apart as GPUs")
    ordered = [groups[k] for k in keys]
    return ordered, denied, unusable


def _check_confined(job: Job, devices: Sequence[Device], kind: str, ids: str) -> None:
    """A job that may open every GPU node is either confined and holding them all, or not
    confined at all; in the second case a spec lacking its GPU would hand it another's."""
    refused = any(not _allowed(job, i) for d in devices for i in d.identities())
    if refused or job.device_rules is not None or job.confined or job.nvml is not None:
        return
    raise GpuMismatch(f"nothing shows that Slurm confines this job (SLURM_JOB_GPUS={ids}) to its "
                      f"own GPUs: it may open every device of kind {kind}, and its device cgroup "
                      "is not a Slurm job's (ConstrainDevices=yes in cgroup.conf is needed), so "
                      "which GPUs are its own cannot be proven")


def _nvml_uuids(job: Job, groups: list[list[Device]], kind: str, n: int) -> list[str]:
    """Each group's GPU UUID as NVML reports it; GpuMismatch unless NVML and the device cgroup
    tell the same story."""
    if job.nvml is None:
        return ["" for _ in groups]
    own = [g for g in job.nvml if g.identity is not None and _allowed(job, g.identity)]
    if len(own) != n:
        raise GpuMismatch(f"Slurm allocated {n} GPU(s) (SLURM_JOB_GPUS="
                          f"{','.join(job.job_gpus)}) but NVML shows {len(own)} GPU(s) this "
                          f"job may open ({', '.join(g.uuid for g in own) or 'none'})")
    uuids = []
    for group in groups:
        ids = group[0].identities()
        found = [g for g in own if g.identity in ids]
        if len(found) != 1:
            raise GpuMismatch(f"CDI device {group[0].qualified} mounts "
                              f"{len(found)} of the GPUs NVML shows for this job, not one")
        uuids.append(found[0].uuid)
    for g in own:
        if not any(g.identity in group[0].identities() for group in groups):
            raise GpuMismatch(f"GPU {g.uuid} ({g.identity}) is this job's but no CDI device of "
                              f"kind {kind} mounts it: regenerate the CDI specs "
                              "(nvidia-ctk cdi generate)")
    return uuids


def choose(job: Job, devices: Sequence[Device], kind: str, variables: Sequence[str] = (),
           searched: str = "") -> Assignment:
    """The CDI names of exactly the job's GPUs and the container's GPU variables.

    `devices` are the CDI devices of `kind` after name resolution; `searched` says where they
    were looked for (for the message when there are none).
    """
    n = _check_count(job)
    if n == 0:
        return Assignment((), container_environment(0, variables), "no GPUs")
    ids = ",".join(job.job_gpus)
    if not devices:
        raise GpuMismatch(f"Slurm allocated {n} GPU(s) (SLURM_JOB_GPUS={ids}) but there is no "
                          f"CDI device of kind {kind}" + (f" in {searched}" if searched else "")
                          + " (generate a spec: nvidia-ctk cdi generate)")
    groups, denied, unusable = _groups(devices, job, kind)
    if len(groups) < n:
        why = f"; not this job's: {_listing(denied)}" if denied else ""
        bad = f"; unusable: {'; '.join(f'{d.qualified}: {d.problem()}' for d in unusable)}" \
            if unusable else ""
        raise GpuMismatch(f"Slurm allocated {n} GPU(s) (SLURM_JOB_GPUS={ids}) but only "
                          f"{len(groups)} CDI device(s) of kind {kind} are ones this job may "
                          f"open{why}{bad}: the CDI specs lack this job's GPU(s) "
                          "(regenerate them: nvidia-ctk cdi generate)")
    if len(groups) > n:
        names = _listing([_preferred_name(g, "") for g in groups])
        raise GpuMismatch(f"this job may open the devices of {len(groups)} GPUs of kind {kind} "
                          f"({names}) but Slurm allocated {n} (SLURM_JOB_GPUS={ids}): without "
                          "ConstrainDevices=yes in cgroup.conf the job's own GPUs cannot be "
                          "told apart, and sh-jupyter does not guess")
    _check_confined(job, devices, kind, ids)
    uuids = _nvml_uuids(job, groups, kind, n)
    chosen = [_preferred_name(g, u) for g, u in zip(groups, uuids)]
    detail = ", ".join(f"{d.qualified} ({', '.join(x.path for x in d.nodes)})" for d in chosen)
    return Assignment(tuple(d.qualified for d in chosen), container_environment(n, variables),
                      f"{n} GPU(s) (SLURM_JOB_GPUS={ids}): {detail}")
