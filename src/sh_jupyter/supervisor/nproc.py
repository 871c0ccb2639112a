"""The user's process limit (ulimit -u): RLIMIT_NPROC counts every process and thread of the
user on the node (the container's too: rootless, they are the user's), so a session can fail
to start a program for processes it does not own. A reason says so, with the numbers."""

from __future__ import annotations

import errno
import os
import resource

NEAR = 3  # this close to the limit counts as at it

# How the tools say "no more processes": errno EAGAIN from fork/clone, and Go's runtime (Podman).
_WORDS = ("resource temporarily unavailable", "failed to create new os thread",
          "ulimit -u", "cannot fork", "fork: retry")


def tasks_of(uid: int) -> int:
    """The user's processes and threads on this node, as RLIMIT_NPROC counts them."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def limit_note(uid: int, error: BaseException | str) -> str:
    """" (the process limit ...)" when `error` says no process could be made and a process
    limit is set; "" otherwise."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft == resource.RLIM_INFINITY:
        return ""
    if isinstance(error, OSError):
        hit = error.errno == errno.EAGAIN
    else:
        hit = any(w in str(error).lower() for w in _WORDS)
    count = tasks_of(uid)
    # A program that died of it may have said something else (or nothing): what counts is
    # that the user is at the limit (a failed start has already given its threads back).
    if not hit and count < soft - NEAR:
        return ""
    return (f" (the process limit is reached: ulimit -u is {soft}, and this user has "
            f"{count} processes and threads on this node)")
