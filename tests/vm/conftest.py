"""The VM tier: runs only inside the guest testbed/vm boots (cgroup v2, systemd as init, Slurm's
cgroup/v2 plugin), where a site's node behaves as this host cannot show."""

from __future__ import annotations

import subprocess

import pytest

import bed


@pytest.fixture(scope="session")
def guest(testbed) -> None:
    """Fail (never skip) anywhere but a cgroup v2 machine with systemd as init."""
    with open("/proc/1/comm", encoding="ascii") as fh:
        init = fh.read().strip()
    kind = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True,
                          text=True, check=False).stdout.strip()
    if init != "systemd" or kind != "cgroup2fs":
        pytest.fail(f"the VM tier needs cgroup v2 and systemd as init (here: {kind}, PID 1 "
                    f"{init}): run it with `testbed/test --release trixie-vm`")


@pytest.fixture
def cfg(guest) -> str:
    """A site config as the docs tell a cgroup v2 site to write (the defaults), small sessions
    (the guest has 4 GiB)."""
    return bed.write_config(bed.E2E_PORTS + "[limits]\ndefault_memory_gib = 1\n")


@pytest.fixture
def cleanup():
    """Cancel whatever a test submitted, even when it fails half-way."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["scancel", job], check=False)
    for job in jobs:
        bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING", "COMPLETING"),
                     180, f"job {job} to end")
