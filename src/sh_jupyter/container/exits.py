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
    oom_killed: bool | None = False  # None: nothing could tell (no record either way)
    pid: int = 0  # the container's init process while it runs


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def reason(facts: ExitFacts, memory_gib: int = 0, starting: bool = False,
           last_lines: str = "") -> str:
    """The card's one-line reason for a container that ended on its own.

    During start-up a plain exit carries JupyterLab's last lines (a bad command or a missing
    package says why there); afterwards they stay in output.log.
    """
    when = " during start-up" if starting else ""
    if facts.oom_killed:
        limit = f" (the session's memory is {memory_gib} GiB)" if memory_gib else ""
        return f"JupyterLab was killed by the out-of-memory killer{when}{limit}; see output.log"
    code = facts.exit_code
    if code is None:
        return f"JupyterLab ended{when} and Podman could not say how; see output.log"
    if code > 128:
        known = " (not out of memory)" if facts.oom_killed is False else ""
        return f"JupyterLab was killed by {_signal_name(code - 128)}{when}{known}; see output.log"
    if starting:
        return f"JupyterLab exited during start-up (status {code}): {last_lines or '(no output)'}"
    return f"JupyterLab exited with status {code}; see output.log"
