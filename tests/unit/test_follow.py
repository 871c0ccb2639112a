"""`submit --wait`'s loop: the status file read often, the scheduler through one watcher, and
a failing squeue never ending the wait as "ended" (fake scheduler, real files in tmp_path)."""

from __future__ import annotations

import os
import threading

import pytest

from sh_jupyter.errors import SchedulerUnavailable
from sh_jupyter.session import STATUS_FILE, Status
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.submitter.tracking import follow


class Slurm:
    name = "fake"

    def __init__(self, state: str | None = "PENDING", fail: str = "") -> None:
        self.state, self.fail, self.calls = state, fail, 0

    def states(self, job_ids, user=None):
        self.calls += 1
        if self.fail:
            raise SchedulerUnavailable(self.fail)
        return {i: JobInfo(i, "jupyter_app", "u", self.state) if self.state else None
                for i in job_ids}


def write(session_dir: str, phase: str, **kw) -> None:
    text = Status(session_id="0d7f5c4e-0000-4000-8000-000000000000", phase=phase, job_id="7",
                  **kw).to_json()
    tmp = os.path.join(session_dir, STATUS_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(session_dir, STATUS_FILE))


def test_failing_squeue_waits_on_and_the_status_file_decides(tmp_path):
    write(str(tmp_path), "Queued")
    slurm = Slurm(fail="squeue failed (exit 1): simulated")
    seen: list[dict] = []

    def emit(fields: dict) -> None:
        seen.append(fields)
        if len(seen) == 1:  # the supervisor starts and then answers meanwhile
            threading.Timer(0.3, write, (str(tmp_path), "Running")).start()
    final = follow(str(tmp_path), slurm, emit, tick=0.02)
    assert [f["status"] for f in seen] == ["Queued", "Running"]
    assert seen[0]["job_state"] == "unknown" and "simulated" in seen[0]["scheduler_error"]
    assert final["status"] == "Running" and not final["failed"]


def test_a_job_that_died_without_a_word_ends_the_wait(tmp_path):
    write(str(tmp_path), "Queued")
    final = follow(str(tmp_path), Slurm(state=None), lambda f: None, tick=0.02)
    assert final["status"] == "Completed" and final["failed"] and final["job_state"] == "gone"


def test_the_scheduler_is_asked_far_less_often_than_the_file_is_read(tmp_path):
    write(str(tmp_path), "Queued")
    slurm = Slurm(state="PENDING")

    def starts() -> None:  # Slurm starts the job, and its supervisor answers a little later
        slurm.state = "RUNNING"
        threading.Timer(0.3, write, (str(tmp_path), "Running")).start()
    threading.Timer(1.2, starts).start()
    final = follow(str(tmp_path), slurm, lambda f: None, tick=0.02)
    # ~75 reads of status.json; squeue at 0, 0.5, 1.25 s and once more on the news
    assert final["status"] == "Running" and 2 <= slurm.calls <= 5


def test_gives_up_after_a_long_failure(tmp_path):
    write(str(tmp_path), "Queued")
    with pytest.raises(SchedulerUnavailable, match="has not answered for 0 s"):
        follow(str(tmp_path), Slurm(fail="down"), lambda f: None, tick=0.02,
               give_up_after=0.1)
