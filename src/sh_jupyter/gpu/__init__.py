"""GPUs in sessions: the job's allocated GPUs, and only those, in the container through CDI.

`mapping` decides (pure), `cdi` reads the node's CDI specs as Podman does, `host` gathers what
Slurm and the node say and is what the supervisor calls (`for_job`).
"""

from __future__ import annotations

from sh_jupyter.container.gpus import Assignment
from sh_jupyter.gpu.host import allocated_count, for_job
from sh_jupyter.gpu.mapping import GpuMismatch

__all__ = ["Assignment", "GpuMismatch", "allocated_count", "for_job"]
