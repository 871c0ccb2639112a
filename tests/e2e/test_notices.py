"""Opt-in e-mail notices through real Slurm sessions and a real local MTA (testbed/steps/
65-mail.sh): one mail when the session is ready (not when the job starts), one before its
walltime runs out, one when it fails; each with the card's link, never the password; none
for a session that did not ask."""

from __future__ import annotations

import email.utils
import json
import mailbox
import os

import bed

U1 = bed.USERS[0]
CARD_URL = "https://portal.invalid/pun/sys/dashboard/batch_connect/sessions#{session_id}"
SITE = (bed.E2E_PORTS + "[walltime]\nfirst_warning = 100\n"
        f'[notify]\ncard_url = "{CARD_URL}"\n')


def _mails(user: str, session_id: str) -> list:
    """The user's mails about this session, in arrival order."""
    path = f"/var/mail/{user}"
    if not os.path.exists(path):
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [m for m in box if session_id in m.get_payload(decode=True).decode()]
    finally:
        box.close()


def _subjects(user: str, session_id: str) -> list[str]:
    return [m["Subject"] for m in _mails(user, session_id)]


def test_ready_and_walltime_notices_come_once_with_the_card_and_never_the_password(
        testbed, cleanup):
    cfg = bed.write_config(SITE)
    sub, _ = bed.start(U1, cfg, cleanup, "--notify", "--time", "3")
    sid, job = sub["session_id"], sub["job_id"]
    got = bed.wait_for(lambda: _mails(U1, sid), 30, "the ready notice", interval=0.5)
    mail = got[0]
    assert mail["Subject"] == f"Your JupyterLab session is ready (job {job})", mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    assert CARD_URL.replace("{session_id}", sid) in body and "JupyterLab is ready" in body
    # To: the user's login name, which the MTA qualifies with its own domain.
    assert mail["To"].split("@")[0] == U1 and mail["Auto-Submitted"] == "auto-generated"
    with open(os.path.join(sub["session_dir"], "status.json"), encoding="utf-8") as fh:
        ready_at = bed.iso_time(json.load(fh)["ready_at"])
    sent = email.utils.parsedate_to_datetime(mail["Date"]).timestamp()
    assert sent >= ready_at - 1, (sent, ready_at)  # when JupyterLab answers, not at job start
    password = bed.connection(U1, sid, cfg)["password"]
    with open(f"/var/mail/{U1}", encoding="utf-8", errors="replace") as fh:
        assert password not in fh.read()  # nor in any other mail of the mailbox
    # The walltime notice: first_warning (100 s) before the job's end (3 min after its start).
    bed.wait_for(lambda: len(_mails(U1, sid)) >= 2, 150, "the walltime notice", interval=1)
    subjects = _subjects(U1, sid)
    assert subjects[1].startswith("Your JupyterLab session ends in 00:01:") \
        and subjects[1].endswith(f"(job {job})"), subjects
    out = bed.as_user(U1, [bed.SH, "--config", cfg, "cancel", sid])
    assert out.returncode == 0, out.stderr
    bed.wait_for(lambda: bed.job_state(job) not in ("RUNNING", "COMPLETING"), 60, "job end")
    assert len(_mails(U1, sid)) == 2  # a cancel is no failure: no third mail


def test_a_failed_session_mails_its_reason_and_a_silent_one_mails_nothing(testbed, cleanup):
    cfg = bed.write_config(SITE + '[image]\ncommand = ["sh", "-c", "echo broken >&2; exit 3"]\n')
    out = bed.submit(U1, "--notify", "--wait", config=cfg, timeout=120)
    loud = bed.docs(out.stdout)
    cleanup.append(loud[0]["job_id"])
    assert out.returncode == 3 and loud[-1]["failed"], out.stdout + out.stderr
    got = bed.wait_for(lambda: _mails(U1, loud[0]["session_id"]), 30, "the failure notice",
                       interval=0.5)
    assert [m["Subject"] for m in got] == [
        f"Your JupyterLab session failed (job {loud[0]['job_id']})"]
    body = " ".join(got[0].get_payload(decode=True).decode().split())
    assert "exited during start-up" in body or "status 3" in body, body

    out = bed.submit(U1, "--wait", config=cfg, timeout=120)
    quiet = bed.docs(out.stdout)
    cleanup.append(quiet[0]["job_id"])
    assert out.returncode == 3
    bed.wait_for(lambda: bed.job_state(quiet[0]["job_id"]) not in ("RUNNING", "COMPLETING"),
                 60, "job end")
    assert _mails(U1, quiet[0]["session_id"]) == []
