"""Why a container ended, in one line for the job card (pure).

The card's reason is what a user reads in a portal, so it says what happened in a short line;
JupyterLab's own last log lines go to output.log, never onto the card. Whether the kernel's
out-of-memory killer was involved is a fact Podman (or the job's memory cgroup) records: it is
read, never guessed from the exit status.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitFacts:
    """What Podman knows about the container after conmon is gone."""

    status: str  # "exited", "stopped", "running", ...
    exit_code: int | None
    oom_killed: bool = False
    pid: int = 0  # the container's init process while it runs


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def reason(facts: ExitFacts, memory_gib: int = 0) -> str:
    """The card's one-line reason for a container that ended on its own."""
    limit = f" (the session's memory is {memory_gib} GiB)" if memory_gib else ""
    if facts.oom_killed:
        return f"JupyterLab was killed by the out-of-memory killer{limit}; see output.log"
    code = facts.exit_code
    if code is None:
        return "JupyterLab ended and Podman could not say how; see output.log"
    if code > 128:
        return f"JupyterLab was killed by {_signal_name(code - 128)} (not out of memory); " \
               "see output.log"
    return f"JupyterLab exited with status {code}; see output.log"
