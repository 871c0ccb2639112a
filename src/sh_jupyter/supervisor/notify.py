"""Opt-in notices by e-mail: ready to connect, failed, about to hit the walltime.

Sent by the supervisor (as the user) through the system's sendmail interface, so the site's
own mail set-up (its MTA, relay and domain) delivers them, and the sender is the user, as for
any mail the user sends. A notice carries the session's id, job, host, the card's link and
the reason; never the password or a URL holding it (mail is stored and forwarded in clear).
"""

from __future__ import annotations

import textwrap
from email.message import EmailMessage

from sh_jupyter.config import Config
from sh_jupyter.durations import format_walltime
from sh_jupyter.progress import say
from sh_jupyter.runner import run
from sh_jupyter.session import Status

SENDMAIL_TIMEOUT = 30


def address(cfg: Config, user: str) -> str:
    """The user's mail address from the site's template."""
    return cfg["notify.address"].replace("{user}", user)


def card_link(cfg: Config, status: Status) -> str:
    url = cfg["notify.card_url"]
    if url:
        return url.replace("{session_id}", status.session_id).replace("{job_id}", status.job_id)
    return f"`sh-jupyter status {status.session_id}` on a login node"


def compose(cfg: Config, user: str, status: Status, event: str, detail: str = "") -> str:
    """The mail (RFC 5322 text) for `event`: ready, failed or walltime (`detail`: the reason,
    or the seconds left)."""
    job = f"job {status.job_id}" if status.job_id else "no Slurm job"
    if event == "ready":
        subject = f"Your JupyterLab session is ready ({job})"
        first = f"JupyterLab is ready to connect on {status.host}."
    elif event == "failed":
        subject = f"Your JupyterLab session failed ({job})"
        first = f"The session ended before its time: {detail}"
    else:
        left = format_walltime(int(detail or 0))
        subject = f"Your JupyterLab session ends in {left} ({job})"
        first = (f"The job's walltime runs out in {left}: save your work (JupyterLab saves "
                 "open documents with unsaved changes shortly before the end).")
    body = "\n".join([
        textwrap.fill(first, 72), "",
        f"Session: {status.session_id}",
        f"Job:     {job}" + (f" on {status.host}" if status.host else ""),
        f"Card:    {card_link(cfg, status)}",
        "",
        "(The password is never sent by e-mail: connect from the card.)",
        "",
    ])
    msg = EmailMessage()
    msg["To"] = address(cfg, user)
    msg["Subject"] = subject
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    return msg.as_string()


def send(cfg: Config, user: str, status: Status, event: str, detail: str = "",
         env: dict[str, str] | None = None) -> bool:
    """Mail the notice; a mail that cannot be sent is logged, never a session failure."""
    text = compose(cfg, user, status, event, detail)
    out = run([cfg["notify.sendmail"], "-t", "-oi"], input=text, timeout=SENDMAIL_TIMEOUT,
              env=env)
    if out.ok:
        say(f"notice sent ({event}) to {address(cfg, user)}")
    else:
        say(f"could not send the {event} notice: {out.why}")
    return out.ok
