"""Fixtures for sessions through the real Slurm cluster."""

from __future__ import annotations

import subprocess

import pytest

import bed


@pytest.fixture
def cfg(testbed) -> str:
    """A site config with this suite's own port range."""
    return bed.write_config(bed.E2E_PORTS)


def _cancel_all(jobs: list[str]) -> None:
    for job in jobs:
        subprocess.run(["scancel", job], check=False)
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) not in bed.LIVE, 60, f"job {job} to end")


@pytest.fixture
def cleanup():
    """Cancel whatever a test submitted, even when it fails half-way."""
    jobs: list[str] = []
    yield jobs
    _cancel_all(jobs)


@pytest.fixture(scope="module")
def jobs():
    """Every job a module's hubs started: cancelled at the module's end, whatever happened."""
    started: list[str] = []
    yield started
    _cancel_all(started)
