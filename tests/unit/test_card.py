"""The job card merges the status file with the scheduler's view."""

from __future__ import annotations

from sh_jupyter.cli.render import render
from sh_jupyter.session import Status
from sh_jupyter.slurm.jobs import JobInfo, Unknown
from sh_jupyter.submitter.card import build as card

NOW = 1_000_000


def status(phase: str, **kw) -> Status:
    base = {"session_id": "s1", "job_id": "7", "created_at": "t0", "walltime": 3600,
            "connection_timeout": 180, "cpus": 2, "memory_gib": 4, "host": "n1", "port": 20001,
            "base_url": "/", "message": "JupyterLab is running in Podman container c"}
    base.update(kw)
    return Status(phase=phase, **base)


def job(state: str, reason: str = "None") -> JobInfo:
    return JobInfo("7", "jupyter_app", "alice", state, reason, "n1", NOW - 100, NOW - 60, 3600)


def test_pending_is_queued_with_time_requested_and_no_host():
    c = card(status("Queued"), job("PENDING", "Priority"), NOW)
    assert c["status"] == "Queued" and c["reason"] == "Priority"
    assert c["time_requested"] == 3600 and "time_remaining" not in c and c["host"] == ""


def test_running_job_before_readiness_is_starting():
    c = card(status("Queued"), job("RUNNING"), NOW)
    assert c["status"] == "Starting" and c["time_remaining"] == 3600 - 60 and c["url"] == ""


def test_running_shows_message_and_url_without_token():
    c = card(status("Running"), job("RUNNING"), NOW)
    assert c["status"] == "Running" and c["url"] == "http://n1:20001/lab"
    assert c["message"].startswith("JupyterLab is running in Podman container")
    text = render(c)
    assert "Time Remaining:         00:59:00" in text and "Connection timeout (s): 180" in text


def test_job_that_vanished_or_ended_without_a_word_is_a_failure_with_reason():
    gone = card(status("Running"), None, NOW)
    assert gone["status"] == "Completed" and gone["failed"]
    assert "no longer in the queue" in gone["reason"]
    timeout = card(status("Starting"), job("TIMEOUT"), NOW)
    assert timeout["failed"] and "TIMEOUT" in timeout["reason"]
    assert "walltime ran out" in timeout["reason"]


def test_a_node_that_went_down_is_named_on_the_card():
    down = card(status("Running"), job("NODE_FAIL"), NOW)
    assert down["failed"] and down["reason"] == (
        "the session ended with its node (node failure, reboot or maintenance) (NODE_FAIL) "
        "while the session was Running")
    odd = card(status("Running"), job("SPECIAL_EXIT"), NOW)
    assert odd["reason"] == "the job ended (SPECIAL_EXIT) while the session was Running"


def test_completed_status_is_kept_as_written():
    done = card(status("Completed", reason="cancelled (SIGTERM)"), job("CANCELLED"), NOW)
    assert done["status"] == "Completed" and not done["failed"]
    assert done["reason"] == "cancelled (SIGTERM)" and done["message"] == ""


def test_unknown_job_state_keeps_the_status_file_and_says_so():
    for phase in ("Queued", "Starting", "Running"):
        c = card(status(phase), Unknown("squeue failed (exit 1): boom"), NOW)
        assert c["status"] == phase and not c["failed"] and c["reason"] == ""
        assert c["job_state"] == "unknown" and "boom" in c["scheduler_error"]
        assert "Job state:              unknown, shown as last recorded" in render(c)
    local = card(status("Running", job_id="local"), Unknown(), NOW)
    assert local["status"] == "Running" and local["job_state"] == "" \
        and local["scheduler_error"] == "" and "Job state" not in render(local)


def test_job_state_names_slurms_view():
    assert card(status("Running"), job("RUNNING"), NOW)["job_state"] == "RUNNING"
    assert card(status("Running"), None, NOW)["job_state"] == "gone"


def test_gpus_are_on_the_card_only_when_the_session_has_some():
    with_gpus = card(status("Running", gpus=2), job("RUNNING"), NOW)
    assert with_gpus["gpus"] == 2 and "GPUs:                   2" in render(with_gpus)
    without = card(status("Running"), job("RUNNING"), NOW)
    assert without["gpus"] == 0 and "GPUs" not in render(without)


def test_a_failed_job_without_a_final_card_says_its_supervisor_left_no_report():
    killed = card(status("Running"), job("FAILED"), NOW)
    assert killed["failed"] and killed["reason"] == (
        "the job ended without a report from its supervisor (FAILED) while the session was "
        "Running")
