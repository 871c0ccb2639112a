"""squeue --json in both shapes (22.05 and 23.02+) gives the same JobInfo."""

from __future__ import annotations

import json

from sh_jupyter.slurm.squeue_json import JobInfo, parse_jobs

V2205 = {"jobs": [
    {"job_id": 7, "name": "jupyter_app", "user_name": "alice", "job_state": "RUNNING",
     "state_reason": "None", "nodes": "n1", "submit_time": 100, "start_time": 110,
     "time_limit": 60, "exit_code": 0},
    {"job_id": 8, "name": "other", "user_name": "bob", "job_state": "PENDING",
     "state_reason": "Resources", "nodes": "", "submit_time": 105, "start_time": 0,
     "time_limit": 30, "exit_code": 0},
]}
V2411 = {"jobs": [
    {"job_id": 7, "name": "jupyter_app", "user_name": "alice", "job_state": ["RUNNING"],
     "state_reason": "None", "nodes": "n1",
     "submit_time": {"set": True, "infinite": False, "number": 100},
     "start_time": {"set": True, "infinite": False, "number": 110},
     "time_limit": {"set": True, "infinite": False, "number": 60},
     "exit_code": {"status": ["SUCCESS"], "return_code": {"set": True, "number": 0}}},
    {"job_id": 9, "name": "x", "user_name": "alice", "job_state": ["COMPLETED"],
     "time_limit": {"set": False, "infinite": True, "number": 0},
     "exit_code": {"status": ["EXIT"], "return_code": {"set": True, "number": 3}}},
]}


def test_both_shapes_give_the_same_job():
    old = parse_jobs(json.dumps(V2205), job_ids={"7"})
    new = parse_jobs(json.dumps(V2411), job_ids={"7"})
    assert old == new == [JobInfo("7", "jupyter_app", "alice", "RUNNING", "None", "n1", 100, 110,
                                  3600, 0)]


def test_filters_are_applied_here_because_2205_ignores_them():
    assert [j.job_id for j in parse_jobs(json.dumps(V2205), user="bob")] == ["8"]
    assert parse_jobs(json.dumps(V2205), job_ids={"99"}) == []


def test_unlimited_time_and_exit_codes():
    job = parse_jobs(json.dumps(V2411), job_ids={"9"})[0]
    assert job.time_limit == 0 and job.exit_code == 3 and job.finished


def test_finished_states():
    def state(s: str) -> bool:
        return JobInfo("1", "n", "u", s).finished
    assert not state("RUNNING") and not state("PENDING")
    assert state("COMPLETING") and state("CANCELLED") and state("TIMEOUT")


def test_a_flag_shows_as_squeue_prints_it():
    # 24.11: a cancelled job whose epilog still runs is ["CANCELLED", "COMPLETING"]; squeue's %T
    # (Slurm's job_state_string) says COMPLETING, and so must we: its epilog is not done.
    shapes = {("CANCELLED", "COMPLETING"): "COMPLETING", ("PENDING", "CONFIGURING"): "CONFIGURING",
              ("RUNNING",): "RUNNING", (): "UNKNOWN"}
    for given, shown in shapes.items():
        doc = {"jobs": [{"job_id": 5, "name": "j", "user_name": "u", "job_state": list(given)}]}
        assert parse_jobs(json.dumps(doc))[0].state == shown
