"""Finding and ending a job's leftover processes as root, without ever hitting the wrong one.

Root may SIGKILL a process only once it is sure the process is the job user's: its real uid
(from /proc/PID/status) is the user's, or one of the user's sub-uids (a rootless container's
processes run as those). The check and the kill go through a pidfd where the kernel has them,
so a pid reused between the two can never be hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

SUBUID = "/etc/subuid"


def subuid_ranges(user: str, uid: int, path: str = SUBUID) -> list[tuple[int, int]]:
    """The user's sub-uid ranges as (first, count), by name or uid."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                fields = line.strip().split(":")
                if len(fields) != 3 or fields[0] not in (user, str(uid)):
                    continue
                with contextlib.suppress(ValueError):
                    out.append((int(fields[1]), int(fields[2])))
    except OSError:
        pass
    return out


class Owner:
    """The job user's uid and sub-uids: whose processes root may end for this job."""

    def __init__(self, uid: int, ranges: list[tuple[int, int]]) -> None:
        self.uid = uid
        self.ranges = ranges

    def owns_uid(self, uid: int) -> bool:
        return uid == self.uid or any(first <= uid < first + count
                                      for first, count in self.ranges)

    def owns(self, pid: int) -> bool:
        real = real_uid(pid)
        return real is not None and real != 0 and self.owns_uid(real)


def real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def parent_map() -> dict[int, int]:
    """pid -> ppid for every process (from /proc/PID/stat; the name may hold spaces)."""
    out = {}
    for pid in pids():
        stat = _read(f"/proc/{pid}/stat")
        end = stat.rfind(b")")
        fields = stat[end + 2:].split()
        if end > 0 and len(fields) > 1:
            out[pid] = int(fields[1])
    return out


def with_descendants(roots: Iterable[int]) -> set[int]:
    parents = parent_map()
    found = {p for p in roots if p > 1}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def conmons_of(container_ids: Iterable[str]) -> set[int]:
    """conmon processes of these containers (its argv holds `-c FULL_ID`)."""
    wanted = {c.encode() for c in container_ids if c}
    out = set()
    if not wanted:
        return out
    for pid in pids():
        argv = _read(f"/proc/{pid}/cmdline").split(b"\0")
        if argv and argv[0].endswith(b"conmon"):
            for i, arg in enumerate(argv[:-1]):
                if arg in (b"-c", b"--cid") and argv[i + 1] in wanted:
                    out.add(pid)
    return out


def in_job_cgroup(job_id: str) -> set[int]:
    """Processes still in this job's cgroups (Slurm names them .../job_ID/...). On cgroup v1
    rootless Podman leaves a container there, where scancel does not reach it. The user's
    rootless pause process is left alone: it serves all of that user's containers."""
    marker = f"/job_{job_id}/".encode()
    tail = f"/job_{job_id}\n".encode()
    out = set()
    for pid in pids():
        cgroup = _read(f"/proc/{pid}/cgroup")
        if marker in cgroup or tail in cgroup:
            if b"catatonit" in _read(f"/proc/{pid}/cmdline").split(b"\0")[0]:
                continue
            out.add(pid)
    return out


def kill(targets: Iterable[int], owner: Owner, wait: float = 5.0) -> tuple[list[int], list[int]]:
    """SIGKILL each target that is provably the owner's; returns (killed, still alive after
    `wait` seconds). A pid that is not the owner's is never signalled."""
    handles = {}
    for pid in sorted(set(targets)):
        try:
            handle = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        except OSError:
            continue  # gone already
        # Checked after the pidfd pins the process: if it is still alive then (a signal 0
        # through the pidfd succeeds), /proc/PID was this very process.
        if not owner.owns(pid) or not _alive(pid, handle):
            if handle is not None:
                os.close(handle)
            continue
        handles[pid] = handle
    killed = []
    for pid, handle in handles.items():
        with contextlib.suppress(ProcessLookupError):
            if handle is not None:
                signal.pidfd_send_signal(handle, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    end = time.monotonic() + wait
    alive = [p for p in killed if _alive(p, handles[p])]
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p, handles[p])]
    for handle in handles.values():
        if handle is not None:
            os.close(handle)
    return killed, alive


def _alive(pid: int, handle: int | None) -> bool:
    """Still running (a zombie is not: it holds no resource and its parent reaps it)."""
    try:
        if handle is not None:
            signal.pidfd_send_signal(handle, 0)
        else:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = _read(f"/proc/{pid}/stat")
    end = stat.rfind(b")")
    return not (end > 0 and stat[end + 2:end + 3] in (b"Z", b"X"))
