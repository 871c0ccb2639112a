"""Replacing the supervisor's process with another program of ours, keeping the process.

The supervisor is the Slurm batch step's main process: replacing it (exec) keeps its pid, its
place in the job's cgroup, its output.log and what Slurm signals. What crosses the exec: two
memfds (never files: the plan holds JupyterLab's token), the followed process's pidfd, and the
signals, blocked just before the exec so that one arriving in between waits, pending, for the
new program's handlers (`unblock_signals`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def read_fd(fd: int) -> bytes:
    """All of a memfd, read from its start, then closed."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def memfd(data: bytes, name: str) -> int:
    """An anonymous in-memory file holding data, inherited across exec."""
    fd = os.memfd_create(name, 0)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.set_inheritable(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def exec_supervisor(module: str, plan: Mapping, state: int | bytes,
                    pending: Callable[[], bool] = lambda: False) -> bool:
    """Become `module`'s main(PLAN_FD, STATE_FD) in a fresh interpreter. Returns False,
    everything as it was, when `pending()` says a signal came before the signals were
    blocked (its handler here took it: the caller handles it); raises OSError when the
    exec failed. `state` is a memfd's descriptor or the bytes to put in a new one."""
    made: list[int] = []
    try:
        plan_fd = memfd(json.dumps(plan).encode("utf-8"), "sh-jupyter-plan")
        made.append(plan_fd)
        if isinstance(state, bytes):
            state = memfd(state, "sh-jupyter-state")
            made.append(state)
        os.set_inheritable(state, True)
        if plan["pidfd"] >= 0:
            os.set_inheritable(plan["pidfd"], True)
    except OSError:
        for fd in made:
            os.close(fd)
        raise
    # -c puts the working directory (the session's) first on sys.path: take it off. The
    # words after the code are for ps and pgrep: it is still the session's `sh-jupyter run`.
    code = ("import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; "
            f"from {module} import main; main(sys.argv[-2:])")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    block_signals()
    if pending():
        unblock_signals()
        for fd in made:
            os.close(fd)
        return False
    try:
        os.execv(sys.executable, [sys.executable, "-c", code, "sh-jupyter", "run",
                                  f"({module.rsplit('.', 1)[-1]})", str(plan_fd), str(state)])
    except OSError:
        unblock_signals()
        for fd in made:
            os.close(fd)
        raise
