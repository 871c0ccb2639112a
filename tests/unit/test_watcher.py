"""The JobWatcher: one squeue call per interval for every watched job, a bounded back-off,
and a failing squeue read as unknown, never as gone (fake scheduler, fake clock)."""

from __future__ import annotations

import threading
import time

import pytest

from sh_jupyter.errors import SchedulerUnavailable
from sh_jupyter.slurm.jobs import JobInfo, Unknown
from sh_jupyter.slurm.watcher import Backoff, JobWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSlurm:
    """Answers states() from a dict (None: not in the queue); `fail` makes it raise."""

    name = "fake"

    def __init__(self) -> None:
        self.queue: dict[str, JobInfo] = {}
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.fail = ""
        self.delay = 0.0

    def states(self, job_ids, user=None):
        self.calls.append((tuple(sorted(job_ids)), user))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise SchedulerUnavailable(self.fail)
        return {i: self.queue.get(i) for i in job_ids}


def job(job_id: str, state: str = "PENDING", start: int = 0) -> JobInfo:
    return JobInfo(job_id, "jupyter_app", "alice", state, "Priority", "", 1, start, 60)


@pytest.fixture
def setup():
    slurm, clock = FakeSlurm(), Clock()
    return slurm, clock, JobWatcher(slurm, Backoff(0.5, 2.0, 4.0), clock)


def test_one_call_per_interval_answers_every_watched_job(setup):
    slurm, _clock, w = setup
    slurm.queue = {"1": job("1"), "2": job("2", "RUNNING")}
    for i in ("1", "2", "3"):
        w.watch(i, "alice")
    assert [w.view(i) for i in ("1", "2", "3")] == [job("1"), job("2", "RUNNING"), None]
    assert [w.view(i) for i in ("1", "2", "3")] == [job("1"), job("2", "RUNNING"), None]
    assert slurm.calls == [(("1", "2", "3"), "alice")]  # six views, one squeue


def test_quiet_queue_backs_off_to_the_cap_and_a_change_resets(setup):
    slurm, clock, w = setup
    slurm.queue = {"1": job("1", start=10)}
    w.watch("1")
    w.view("1")
    gaps = []
    for _ in range(6):
        gaps.append(w.seconds_to_next())
        clock.now += w.seconds_to_next()
        slurm.queue["1"] = job("1", start=int(clock.now))  # a new estimate is no change
        w.view("1")
    assert gaps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    slurm.queue["1"] = job("1", "RUNNING")
    clock.now += w.seconds_to_next()
    assert w.view("1").state == "RUNNING" and w.seconds_to_next() == 0.5
    w.watch("2")  # a new job is asked about at once
    assert w.seconds_to_next() == 0 and len(slurm.calls) == 8


def test_failing_squeue_is_unknown_and_backs_off_never_gone(setup):
    slurm, clock, w = setup
    slurm.queue = {"1": job("1", "RUNNING")}
    w.watch("1")
    assert w.view("1").state == "RUNNING"
    slurm.fail = "squeue failed (exit 1): Unable to contact slurm controller"
    clock.now += w.seconds_to_next()
    got = w.view("1")
    assert isinstance(got, Unknown) and "Unable to contact" in got.error
    assert w.failing_for() == 0
    clock.now += 3
    assert w.failing_for() == 3 and w.seconds_to_next() == 0  # 0.5 -> 1.0 s, 3 s ago
    w.view("1")
    assert w.seconds_to_next() == 2.0  # backing off from a struggling controller
    slurm.fail = ""
    slurm.queue = {}
    clock.now += 2
    assert w.view("1") is None and w.failing_for() == 0  # a definite answer: gone


def test_jobs_of_several_users_are_asked_for_by_id_in_one_call(setup):
    slurm, clock, w = setup
    w.watch("1", "alice")
    w.watch("2", "bob")
    w.view("1")
    w.forget("2")
    clock.now += 10
    w.view("1")
    assert slurm.calls == [(("1", "2"), None), (("1",), "alice")]
    with pytest.raises(KeyError):
        w.view("2")


def test_concurrent_callers_in_one_interval_share_one_call():
    slurm = FakeSlurm()
    slurm.delay = 0.05
    slurm.queue = {str(i): job(str(i)) for i in range(50)}
    w = JobWatcher(slurm, Backoff(60, 1, 60))
    for i in range(50):
        w.watch(str(i), "alice")
    got: dict[str, object] = {}
    threads = [threading.Thread(target=lambda i=i: got.update({str(i): w.view(str(i))}))
               for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(slurm.calls) == 1 and w.calls == 1
    assert got == {str(i): job(str(i)) for i in range(50)}


def test_a_hurried_job_is_asked_about_at_once_then_every_tenth_of_a_second(setup):
    slurm, clock, w = setup
    slurm.queue = {"1": job("1", "RUNNING"), "2": job("2")}
    w.watch("1", "alice")
    w.watch("2", "alice")
    w.view("1")
    for _ in range(3):  # quiet: backing off to the cap
        clock.now += w.seconds_to_next()
        w.view("1")
    assert w.seconds_to_next() == 4.0 and len(slurm.calls) == 4
    w.hurry("1")
    assert w.seconds_to_next() == 0
    w.view("2")  # any caller's view asks at once, for every watched job
    assert len(slurm.calls) == 5 and w.seconds_to_next() == pytest.approx(0.1)
    w.hurry("1")  # already hurried: no extra call
    w.view("1")
    assert len(slurm.calls) == 5
    for _ in range(3):
        clock.now += 0.1
        w.view("1")
    assert len(slurm.calls) == 8 and w.seconds_to_next() == pytest.approx(0.1)
    w.calm("1")
    clock.now += 0.1
    w.view("1")
    assert w.seconds_to_next() == 4.0  # backed off again: the quiet stretch counted on


def test_a_failing_squeue_backs_off_even_for_a_hurried_job(setup):
    slurm, clock, w = setup
    w.watch("1")
    w.hurry("1")
    slurm.fail = "squeue failed (exit 1): Unable to contact slurm controller"
    w.view("1")
    assert w.seconds_to_next() == 1.0  # 0.5 -> 1.0: backing off, not every 0.1 s
    slurm.fail = ""
    slurm.queue = {"1": job("1", "RUNNING")}
    clock.now += 1.0
    assert w.view("1").state == "RUNNING" and w.seconds_to_next() == pytest.approx(0.1)


def test_forget_ends_the_hurry_and_an_unwatched_hurry_changes_no_pace(setup):
    slurm, clock, w = setup
    slurm.queue = {"1": job("1")}
    w.watch("1")
    w.hurry("1", interval=0.2)
    w.view("1")
    assert w.seconds_to_next() == pytest.approx(0.2)
    w.forget("1")
    w.watch("2")
    w.hurry("ghost")  # never watched: not asked about, and no reason to hurry the others
    w.view("2")
    clock.now += 0.5
    w.view("2")
    assert w.seconds_to_next() == 1.0
