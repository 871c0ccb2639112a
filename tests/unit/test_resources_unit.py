"""What a session says when a resource runs out: a full home or quota, the process limit."""

from __future__ import annotations

import errno
import io
import os
import resource
import sys

import pytest

from sh_jupyter import progress
from sh_jupyter.errors import SessionFailure
from sh_jupyter.session import Status
from sh_jupyter.submitter import tracking
from sh_jupyter.supervisor import nproc
from sh_jupyter.supervisor.phase import Phase, RunRequest


class _Full(io.StringIO):
    """A stdout whose every write fails as a full filesystem's does."""

    def write(self, _text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_progress_line_that_cannot_be_written_is_dropped(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Full())
    progress.say("container removed")  # no exception: teardown goes on


def test_a_progress_line_goes_straight_to_the_file(tmp_path, monkeypatch):
    path = tmp_path / "output.log"
    with open(path, "w", encoding="utf-8") as fh:
        monkeypatch.setattr(sys, "stdout", fh)
        progress.say("hello")
        assert path.read_text().endswith("sh-jupyter: hello\n")  # nothing left buffered


class _Session(Phase):
    def __init__(self, session_dir: str) -> None:
        self.req = RunRequest(session_id="s1", session_dir=session_dir, user="u", uid=1,
                              home="/h")
        self.status = Status(session_id="s1")
        self.save_error = ""


def _no_room(monkeypatch) -> None:
    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("sh_jupyter.supervisor.phase.write_private", full)


def test_a_status_that_must_be_written_ends_the_session(tmp_path, monkeypatch, capsys):
    _no_room(monkeypatch)
    with pytest.raises(SessionFailure, match=r"could not write status\.json in .*: No space"):
        _Session(str(tmp_path))._save(Status(session_id="s1", phase="Starting"), must=True)


def test_a_running_session_outlives_a_status_it_cannot_write(tmp_path, monkeypatch, capsys):
    session = _Session(str(tmp_path))
    _no_room(monkeypatch)
    session._save(Status(session_id="s1", phase="Running", checked_at="t1"))
    session._save(Status(session_id="s1", phase="Running", checked_at="t2"))
    assert session.status.checked_at == "t2" and session.save_error
    assert capsys.readouterr().out.count("could not write status.json") == 1  # said once
    monkeypatch.undo()
    session._save(Status(session_id="s1", phase="Running", checked_at="t3"))
    assert "status.json written again" in capsys.readouterr().out
    assert Status.from_json((tmp_path / "status.json").read_text()).checked_at == "t3"


def test_the_card_says_when_the_session_directory_is_full(tmp_path, monkeypatch):
    fields = {"failed": True, "reason": "the job ended without a report (FAILED)"}
    queued = Status(session_id="s1", phase="Queued")

    class Full:
        f_bavail, f_favail = 0, 100
    monkeypatch.setattr(os, "statvfs", lambda _p: Full)
    said = tracking.with_space_note(fields, queued, str(tmp_path))["reason"]
    assert said.endswith("; the session directory's filesystem is full, so the session could "
                         "not record why")
    done = Status(session_id="s1", phase="Completed", failed=True)
    assert tracking.with_space_note(fields, done, str(tmp_path)) == fields  # its own word

    class Room:
        f_bavail, f_favail = 10, 10
    monkeypatch.setattr(os, "statvfs", lambda _p: Room)
    assert tracking.with_space_note(fields, queued, str(tmp_path)) == fields


def test_the_process_limit_is_named_with_its_numbers(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (160, 160))
    monkeypatch.setattr(nproc, "tasks_of", lambda _uid: 159)
    note = nproc.limit_note(1, OSError(errno.EAGAIN, "Resource temporarily unavailable"))
    assert note == (" (the process limit is reached: ulimit -u is 160, and this user has 159 "
                    "processes and threads on this node)")
    assert nproc.limit_note(1, "runtime: failed to create new OS thread") == note


def test_no_process_limit_note_far_from_the_limit_or_without_one(monkeypatch):
    monkeypatch.setattr(nproc, "tasks_of", lambda _uid: 20)
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (160, 160))
    assert nproc.limit_note(1, "image not known") == ""
    monkeypatch.setattr(resource, "getrlimit",
                        lambda _r: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert nproc.limit_note(1, OSError(errno.EAGAIN, "again")) == ""


class _Container:
    def __init__(self, state: dict) -> None:
        self.attrs = {"State": state}

    def reload(self) -> None:
        pass

    def logs(self, **_kw) -> bytes:
        return b""


class _Watch:
    def __init__(self, gone: bool) -> None:
        self._gone = gone

    def gone(self) -> bool:
        return self._gone


class _Signals:
    received = ""


def _wait(container, watch, unreachable=None) -> None:
    import time

    from sh_jupyter.supervisor import container as ctr
    ctr.wait_until_ready(container, "127.0.0.1", 1, "/", "", time.monotonic() + 5, watch,
                         _Signals(), unreachable=unreachable)


def test_a_dead_conmon_while_jupyterlab_starts_is_not_its_exit(monkeypatch):
    from sh_jupyter.supervisor import container as ctr
    monkeypatch.setattr(ctr.readiness, "api_answers", lambda *_a, **_k: False)
    running = _Container({"Status": "running", "Pid": 4242, "ExitCode": 0})
    with pytest.raises(ctr.ConmonGone) as gone:
        _wait(running, _Watch(True))
    assert gone.value.pid == 4242
    exited = _Container({"Status": "exited", "Pid": 0, "ExitCode": 137})
    with pytest.raises(ctr.ExitedEarly):
        _wait(exited, _Watch(True))


def test_a_dead_network_helper_ends_the_start_at_once(monkeypatch):
    from sh_jupyter.supervisor import container as ctr
    monkeypatch.setattr(ctr.readiness, "api_answers", lambda *_a, **_k: False)
    monkeypatch.setattr(ctr, "CHECK_EVERY", 0.0)
    with pytest.raises(SessionFailure, match=r"^JupyterLab cannot be reached on port 1: "
                                             r"its network helper \(slirp4netns\) is gone"):
        _wait(_Container({"Status": "running", "Pid": 1}), _Watch(False),
              lambda: "its network helper (slirp4netns) is gone, so nothing reaches it")
