"""GPUs in sessions: the job's allocated GPUs, and only those, in the container through CDI.

`mapping` decides (pure), `cdi` reads the node's CDI specs as Podman does, `host` gathers what
Slurm and the node say and is what the supervisor calls (`for_job`).
"""

from __future__ import annotations

from .host import allocated_count, for_job
from .mapping import Assignment, GpuMismatch

__all__ = ["Assignment", "GpuMismatch", "allocated_count", "for_job"]
