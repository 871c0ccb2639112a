"""Shared fixtures: the real test bed is checked once; a missing part fails, never skips."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import bed

_REAL = ("podman", "slurm", "e2e", "security", "vm", "cluster")


def pytest_collection_modifyitems(config, items):
    """Mark tests by directory so `-m podman` and friends select them."""
    for item in items:
        parts = item.path.parts
        for marker in _REAL:
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def testbed() -> None:
    """Fail (never skip) every real test when the bed is incomplete, naming what is missing."""
    if os.geteuid() != 0:
        pytest.fail("integration tests orchestrate test users and must run as root")
    problems = bed.missing()
    if problems:
        pytest.fail("test bed incomplete (run testbed/provision):\n  - " + "\n  - ".join(problems))


def pytest_sessionfinish(session, exitstatus):
    """Remove the shared temp dirs. In CI a skipped test is a failure: nothing real may be
    skipped (a missing component must fail loudly), and an empty run must not look green."""
    for path in bed.TEMPDIRS:
        shutil.rmtree(path, ignore_errors=True)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not os.environ.get("CI"):
        return
    skipped = len(reporter.stats.get("skipped", []))
    passed = len(reporter.stats.get("passed", []))
    if skipped or (passed == 0 and exitstatus == 0):
        reporter.write_line(f"CI: {skipped} skipped, {passed} passed: failing the run",
                            red=True)
        session.exitstatus = 1
