"""The two ways sh-jupyter fails, kept apart because they exit differently.

Bad input (config, request, CLI, environment) is the caller's to fix: exit status 2, nothing done.
A session failure happens after we started work: it has a reason that goes on the job card.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_SESSION_FAILED = 3


class UsageError(Exception):
    """Bad input: one line naming the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str, source: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field} = {value!r}: {allowed}")


class SessionFailure(Exception):
    """A started session that cannot go on; the message is the reason shown to the user."""


class ConnectionTimeout(SessionFailure):
    """JupyterLab did not answer within the connection timeout (the job cancels itself)."""


class PortInUse(Exception):
    """The chosen port was taken between the bind test and the container's bind."""


class SchedulerError(SessionFailure):
    """The scheduler gave no definite answer (squeue failed, timed out, or is not installed).

    Callers must read it as "unknown: as it was before", never as "the job is gone": only a
    definite answer may end a session in a launcher (one failing squeue dropped live servers
    in batchspawner#315).
    """
