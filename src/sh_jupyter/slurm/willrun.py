"""`sbatch --test-only`: when Slurm would start a job, asked without queueing anything (pure).

slurmctld answers a test-only submission with the scheduler's own will-run test (the same
one backfill uses), so the time is Slurm's estimate, not ours: "sbatch: Job 53 to start at
1796609220 using 4 processors on nodes vm in partition debug" (SLURM_TIME_FORMAT=%s makes the
time an epoch on every version). A request Slurm could never run ("Requested node
configuration is not available", an invalid partition) is refused with a message instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENV = {"SLURM_TIME_FORMAT": "%s"}
_ANSWER = re.compile(r"Job \d+ to start at (\S+) using (\d+) processors on nodes (\S+) "
                     r"in partition (\S+)")
_NOISE = ("sbatch: error: ", "sbatch: ", "allocation failure: ")


@dataclass(frozen=True)
class WillRun:
    """Slurm's answer for one request: a start time (epoch), or why it can never start."""

    start: int = 0
    cpus: int = 0
    nodes: str = ""
    partition: str = ""
    refused: str = ""  # Slurm's reason when it would never run the request

    def starts_by(self, moment: float) -> bool:
        return not self.refused and 0 < self.start <= moment


def _refusal(stderr: str) -> str:
    """Slurm's last error line without its prefixes, e.g. "Invalid partition name specified"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    for prefix in _NOISE:
        line = line.removeprefix(prefix)
    return line


def parse(returncode: int, stderr: str) -> WillRun | None:
    """What `sbatch --test-only` said; None when its answer is neither an estimate nor a
    refusal (then the scheduler is unavailable: unknown, not "never")."""
    match = _ANSWER.search(stderr)
    if returncode == 0 and match:
        when = match[1]
        return WillRun(int(when) if when.isdigit() else 0, int(match[2]), match[3], match[4])
    why = _refusal(stderr)
    if returncode != 0 and why and "Unable to contact" not in why \
            and "Socket timed out" not in why:
        return WillRun(refused=why)
    return None
