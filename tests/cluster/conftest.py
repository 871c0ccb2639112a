"""Fixtures of the cluster tier: the hosts must be up (a missing one fails, never skips)."""

from __future__ import annotations

import pytest

import bed
import cluster_bed as cb

LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")


@pytest.fixture(scope="session")
def hosts(testbed) -> None:
    problems = cb.missing()
    if problems:
        pytest.fail("cluster bed incomplete (run testbed/provision --cluster):\n  - "
                    + "\n  - ".join(problems))


@pytest.fixture
def cfg(hosts) -> str:
    """A site config with this tier's own port range, readable on every host."""
    return cb.write_config(cb.PORTS)


@pytest.fixture
def cleanup(hosts):
    """Cancel (from login) whatever a test submitted, even when it fails half-way."""
    jobs: list[str] = []
    yield jobs
    if not cb.running("login"):
        return
    for job in jobs:
        cb.on("login", ["scancel", job])
    for job in jobs:
        bed.wait_for(lambda j=job: cb.job_state(j) not in LIVE, 90, f"job {job} to end",
                     interval=0.2)
