"""Opt-in notices: what a mail says (never a secret), the request flag, the job's end."""

from __future__ import annotations

import email

import pytest

from sh_jupyter import api, config
from sh_jupyter.container.spec import SessionFacts, create_kwargs, host_mounts
from sh_jupyter.errors import SchedulerUnavailable, UsageError
from sh_jupyter.paths import TemplateContext
from sh_jupyter.session import Status
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.submitter.request import validate
from sh_jupyter.supervisor import notify
from sh_jupyter.supervisor.jobclock import JobClock

SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"
STATUS = Status(session_id=SID, job_id="42", host="node7", port=20001, phase="Running")


@pytest.mark.parametrize(("event", "detail", "subject"), [
    ("ready", "", "Your JupyterLab session is ready (job 42)"),
    ("failed", "JupyterLab exited with status 3", "Your JupyterLab session failed (job 42)"),
    ("walltime", "95", "Your JupyterLab session ends in 00:01:35 (job 42)"),
])
def test_each_notice_names_the_session_and_its_card(event, detail, subject):
    cfg = config.parse('[notify]\ncard_url = "https://ood.example/s#{session_id}/{job_id}"\n'
                       'address = "{user}@example.org"\n')
    msg = email.message_from_string(notify.compose(cfg, "alice", STATUS, event, detail))
    assert msg["Subject"] == subject and msg["To"] == "alice@example.org"
    body = msg.get_payload(decode=True).decode()
    assert f"https://ood.example/s#{SID}/42" in body
    assert (detail if event == "failed" else "") in body.replace("\n", " ")
    assert "token" not in body and "20001" not in body  # no login URL, no port


def test_without_a_card_url_the_notice_names_the_status_command():
    text = notify.compose(config.default(), "alice", STATUS, "ready")
    assert f"`sh-jupyter status {SID}`" in text and "To: alice" in text


@pytest.mark.parametrize(("key", "value"), [("address", "a b@c"), ("address", "{uid}@x"),
                                            ("card_url", "ftp://x"), ("card_url", "https://x/{user}")])
def test_bad_notice_settings_are_config_errors(key, value):
    with pytest.raises(UsageError, match=f"notify.{key}"):
        config.parse(f'[notify]\n{key} = "{value}"\n')


def test_notify_is_a_request_field_of_its_own_type():
    cfg = config.default()
    assert validate(cfg, notify=True).notify and not validate(cfg).notify
    with pytest.raises(UsageError, match="notify = 'yes': must be true or false"):
        validate(cfg, notify="yes")
    assert api.request_from_json('{"notify": true}') == {"notify": True}


def test_the_job_clock_gives_the_end_or_nothing():
    job = JobInfo("42", "", "", "RUNNING", start_time=1000, time_limit=600)
    assert JobClock(lambda: job).end() == 1600
    assert JobClock(None).end() == 0

    def failing():
        raise SchedulerUnavailable("squeue failed")
    assert JobClock(failing).end() == 0


def test_the_container_gets_the_jobs_end_and_the_guards_settings():
    cfg = config.parse("[walltime]\nfirst_warning = 300\nlast_warning = 60\nsave_before = 30\n")
    ctx = TemplateContext("alice", "/home/alice", 1000, SID, "42")
    mounts = host_mounts(cfg.mounts, ctx)
    kw = create_kwargs(cfg, SessionFacts(ctx=ctx, port=1, job_end=1600), "s" * 43, {}, mounts,
                       set())
    env = kw["environment"]
    assert (env["SH_JUPYTER_JOB_END"], env["SH_JUPYTER_WALLTIME_WARNINGS"],
            env["SH_JUPYTER_WALLTIME_SAVE"]) == ("1600", "300,60", "30")
    plain = create_kwargs(cfg, SessionFacts(ctx=ctx, port=1), "s" * 43, {}, mounts, set())
    assert "SH_JUPYTER_JOB_END" not in plain["environment"]
