"""The epilog's verdict: only a surviving process of this job's container fails it; every
other step's failure is logged and the next step still runs."""

from __future__ import annotations

import pytest

from sh_jupyter import config
from sh_jupyter.node import hooks, procs
from sh_jupyter.node.jobmatch import Job

JOB = Job("42", "alice", 1000, 1000, "/home/alice", "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c")
STEPS = ("ensure_runtime_dir", "remove_containers", "end_stray_processes",
         "remove_runtime_files", "remove_scratch")


def _boom(*_args, **_kwargs):
    raise OSError("planted by the user")


def test_every_step_runs_and_none_fails_the_epilog(monkeypatch):
    ran = []
    for name in STEPS:
        monkeypatch.setattr(hooks.Node, name,
                            lambda self, n=name: (ran.append(n), _boom())[1])
    said = []
    assert hooks.epilog(JOB, config.default(), said.append) == 0
    assert ran == list(STEPS)
    assert sum("failed: OSError: planted by the user" in line for line in said) == len(STEPS)


@pytest.mark.parametrize(("alive", "verdict"), [((), True), ((7,), True), ((5,), False)])
def test_only_a_surviving_container_process_is_a_failure(monkeypatch, alive, verdict):
    """5 is a process of this job's container, 7 a stray job process (not a container's)."""
    monkeypatch.setattr(hooks.Node, "container_pids", lambda self, ids: {5})
    monkeypatch.setattr(procs, "in_job_cgroup", lambda job_id: {7})
    monkeypatch.setattr(procs, "kill", lambda pids, owner: (sorted(pids), list(alive)))
    monkeypatch.setattr(hooks.Node, "podman", lambda self, *a, **k: hooks.Result(a, 0))
    monkeypatch.setattr(hooks.Node, "job_containers", lambda self: ["c" * 64])
    said = []
    node = hooks.Node(JOB, config.default(), said.append)
    assert node.end_leftovers(["c" * 64]) is verdict
    if verdict:
        assert any("stale container records" in line for line in said)


def test_podman_that_times_out_is_not_asked_again(monkeypatch):
    calls = []

    def fake_run(argv, timeout, cwd=None):
        calls.append(argv)
        return hooks.Result(tuple(argv), hooks.TIMED_OUT, "", "podman did not finish")
    monkeypatch.setattr(hooks, "run", fake_run)
    node = hooks.Node(JOB, config.default(), lambda line: None)
    assert node.job_containers() is None
    assert node.job_containers() is None
    assert len(calls) == 1
