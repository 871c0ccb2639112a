"""The container's own view of its GPUs: CDI device names for the create spec and the GPU
variables numbered 0..n-1 (which GPUs are the job's is `sh_jupyter.gpu`'s to decide)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

NVIDIA_HOOK_VARIABLE = "NVIDIA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Assignment:
    """The session's GPUs: CDI names for the create spec and the container's own view."""

    names: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    @property
    def count(self) -> int:
        return len(self.names)


def container_environment(count: int, variables: Sequence[str]) -> dict[str, str]:
    """The GPU variables of the container's own view: its GPUs are 0..n-1 whatever the host
    numbers were (the job's CUDA_VISIBLE_DEVICES is never copied in)."""
    env = {NVIDIA_HOOK_VARIABLE: "void"}
    if count:
        view = ",".join(str(i) for i in range(count))
        env.update({name: view for name in variables})
    return env
