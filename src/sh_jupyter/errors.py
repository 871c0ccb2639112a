"""sh-jupyter's one error tree, and the exit statuses the command gives each branch.

    ShJupyterError
    ├── UsageError            bad input (config, request, CLI, environment): exit 2
    ├── SessionFailure        a started session cannot go on: its reason is on the card (exit 3)
    │   ├── ConnectionTimeout     JupyterLab did not answer in time
    │   ├── ContainerExited       (supervisor) the container ended during start-up
    │   ├── GpuMismatch, CdiError (gpu) the job's GPUs cannot be given to the container
    │   └── PodmanServiceError    (supervisor) the private Podman API service failed
    ├── SchedulerUnavailable  Slurm gave no definite answer: "unknown", never "failed" (exit 4)
    └── PortInUse             the chosen port was taken before the container bound it (retried)

"Unknown" is not a kind of "failed": a launcher that reads a scheduler error as a failure drops
live sessions, so SchedulerUnavailable stands beside SessionFailure, not under it.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_SESSION_FAILED = 3
EXIT_SCHEDULER_UNAVAILABLE = 4


class ShJupyterError(Exception):
    """Every error sh-jupyter raises on purpose."""


class UsageError(ShJupyterError):
    """Bad input: one line naming the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str, source: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field} = {value!r}: {allowed}")


class SessionFailure(ShJupyterError):
    """A started session that cannot go on; the message is the reason shown to the user."""


class ConnectionTimeout(SessionFailure):
    """JupyterLab did not answer within the connection timeout (the job cancels itself)."""


class SchedulerUnavailable(ShJupyterError):
    """The scheduler gave no definite answer (squeue failed, timed out, or is not installed).

    Callers must read it as "unknown: as it was before", never as "the job is gone": only a
    definite answer may end a session in a launcher.
    """


class PortInUse(ShJupyterError):
    """The chosen port was taken between the bind test and the container's bind."""
