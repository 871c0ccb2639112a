"""Opt-in notices: what a mail says (never a secret), the request flag, the job's end."""

from __future__ import annotations

import email
import json
import os
import threading

import pytest

from sh_jupyter import api, config
from sh_jupyter.container import guard
from sh_jupyter.container.spec import AUTH_TARGET, SessionFacts, create_kwargs, host_mounts
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


def test_the_job_clock_asks_when_first_needed_without_a_thread(monkeypatch):
    """At the user's process limit Thread.start() raises; the clock then asks Slurm itself,
    once, the first time the end is needed, instead of failing the session."""
    def no_thread(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    asked = []

    def lookup():
        asked.append(1)
        return JobInfo("42", "", "", "RUNNING", start_time=1000, time_limit=600)
    clock = JobClock(lookup)
    assert asked == []  # nothing asked yet: the start goes on
    assert clock.info(timeout=0).time_limit == 600
    assert clock.end(timeout=0) == 1600
    assert asked == [1]  # once

    def failing():
        raise SchedulerUnavailable("squeue failed")
    assert JobClock(failing).end(timeout=0) == 0

    def broken():
        raise ValueError("an answer nobody expected")
    assert JobClock(broken).end(timeout=0) == 0  # never fatal, as in the thread


def test_the_container_gets_the_jobs_end_and_the_walltime_guard():
    cfg = config.parse("[walltime]\nfirst_warning = 300\nlast_warning = 60\nsave_before = 30\n")
    ctx = TemplateContext("alice", "/home/alice", 1000, SID, "42")
    mounts = host_mounts(cfg.mounts, ctx)
    facts = SessionFacts(ctx=ctx, port=1, job_end=1600, guard_config="/s/jupyter-config")
    kw = create_kwargs(cfg, facts, {}, mounts, set())
    env = kw["environment"]
    assert env["SH_JUPYTER_JOB_END"] == "1600"
    assert (env["JUPYTER_PATH"], env["JUPYTER_CONFIG_PATH"]) == (guard.DATA_TARGET,
                                                               guard.CONFIG_TARGET)
    binds = {m["target"]: m for m in kw["mounts"] if m["type"] == "bind"}
    ext = binds[f"{guard.DATA_TARGET}/labextensions/@sh-jupyter/walltime-guard"]
    assert ext["source"] == guard.LABEXTENSION_DIR and ext["read_only"]
    assert binds[guard.CONFIG_TARGET] == {"type": "bind", "source": "/s/jupyter-config",
                                          "target": guard.CONFIG_TARGET, "read_only": True}
    assert json.loads(guard.page_config(cfg, 1600)) == {
        "shJupyterJobEnd": "1600", "shJupyterWalltimeWarnings": "300,60",
        "shJupyterWalltimeSave": "30"}
    plain = create_kwargs(cfg, SessionFacts(ctx=ctx, port=1), {}, mounts, set())
    assert "SH_JUPYTER_JOB_END" not in plain["environment"]
    assert "JUPYTER_PATH" not in plain["environment"]


def test_the_guards_page_config_joins_the_tokens_config_on_the_search_path():
    """The token's config directory stays on JUPYTER_CONFIG_PATH (first) beside the guard's:
    replacing it would start JupyterLab without the session's token."""
    cfg = config.parse("")
    ctx = TemplateContext("alice", "/home/alice", 1000, SID, "42")
    facts = SessionFacts(ctx=ctx, port=1, job_end=1600, guard_config="/s/jupyter-config",
                         auth_dir="/run/user/1000/auth")
    kw = create_kwargs(cfg, facts, {}, [], set())
    assert kw["environment"]["JUPYTER_CONFIG_PATH"] == f"{AUTH_TARGET}:{guard.CONFIG_TARGET}"
    binds = {m["target"]: m["source"] for m in kw["mounts"] if m["type"] == "bind"}
    assert binds[AUTH_TARGET] == "/run/user/1000/auth"
    assert binds[guard.CONFIG_TARGET] == "/s/jupyter-config"
    alone = create_kwargs(cfg, SessionFacts(ctx=ctx, port=1, auth_dir="/a"), {}, [], set())
    assert alone["environment"]["JUPYTER_CONFIG_PATH"] == AUTH_TARGET


def test_the_prebuilt_guard_is_shipped_with_the_package():
    """The extension's built entry point is there and is what its package.json names."""
    with open(os.path.join(guard.LABEXTENSION_DIR, "package.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta["name"] == guard.NAME
    assert os.path.isfile(os.path.join(guard.LABEXTENSION_DIR, meta["jupyterlab"]["_build"]
                                       ["load"]))
