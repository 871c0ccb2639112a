"""Fixtures for sessions through the real Slurm cluster."""

from __future__ import annotations

import subprocess

import pytest

import bed


@pytest.fixture
def cfg(testbed) -> str:
    """A site config with this suite's own port range."""
    return bed.write_config(bed.E2E_PORTS)


@pytest.fixture
def cleanup():
    """Cancel whatever a test submitted, even when it fails half-way."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["scancel", job], check=False)
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING", "COMPLETING"),
                     60, f"job {job} to end")
