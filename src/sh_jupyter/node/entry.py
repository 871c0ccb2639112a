"""Slurm Prolog/Epilog entry point (`python -m sh_jupyter.node prolog|epilog`), run as root.

They run for EVERY job on the node, with no PATH, HOME or job name, and a failure drains the
node: so for a job that is not ours they import almost nothing and return at once, and for
ours they never raise: only an epilog that finds a process of this job's container still
alive after removal and a root SIGKILL fails (hooks.py). The log is root's own (0600), opened
without following links, one escaped and bounded line per event: it records text a user
controls (Podman's error messages, process command lines).
"""

from __future__ import annotations

import os
import stat
import sys
import time

LOG_DIR = "/var/log/sh-jupyter"
LOG_NAME = "hooks.log"
MAX_LINE = 2000  # characters of one log event: a user's text cannot flood the log


def escape(text: str) -> str:
    """One line of printable text: newlines, control and other non-printable characters (and
    the backslash) are written as Python escapes, so nothing a user wrote can forge a line."""
    return "".join(ch if ch.isprintable() and ch != "\\" else repr(ch)[1:-1] for ch in text)


def log_line(line: str, stamp: str | None = None) -> str:
    """The log's form of one event: time stamp, escaped text, bounded length, one newline."""
    stamp = stamp or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    text = escape(line)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}...({len(text) - MAX_LINE} more)"
    return f"{stamp} {text}\n"


def _open_log() -> int:
    """hooks.log for appending, 0600 root: the directory and the file are opened without
    following links, and must be root's (the log holds user names and Podman's words)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dfd = os.open(LOG_DIR, flags)
    except FileNotFoundError:
        os.mkdir(LOG_DIR, 0o755)
        dfd = os.open(LOG_DIR, flags)
    try:
        st = os.fstat(dfd)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise PermissionError(f"{LOG_DIR} is not root's own directory")
        fd = os.open(LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_nlink != 1:
        os.close(fd)
        raise PermissionError(f"{LOG_DIR}/{LOG_NAME} is not a regular file of root's")
    if stat.S_IMODE(st.st_mode) != 0o600:  # a log from before: make it private now
        os.fchmod(fd, 0o600)
    return fd


def _log(line: str) -> None:
    text = log_line(line)
    try:
        fd = _open_log()
        try:
            os.write(fd, text.encode("utf-8"))  # one write per event: lines never interleave
        finally:
            os.close(fd)
    except OSError:
        sys.stderr.write(text)  # slurmd's own log


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("prolog", "epilog"):
        sys.stderr.write("usage: python -m sh_jupyter.node prolog|epilog\n")
        return 2
    which, env = argv[0], os.environ
    head = f"{which} job={env.get('SLURM_JOB_ID', '?')} user={env.get('SLURM_JOB_USER', '?')}"
    from sh_jupyter.node.jobmatch import our_job  # cheap: stdlib only

    job = our_job(env)
    _log(f"{head} uid={env.get('SLURM_JOB_UID', '?')} euid={os.geteuid()} "
         f"session={job.session_id if job else '-'}")
    if job is None:
        return 0
    from sh_jupyter import config as config_mod
    from sh_jupyter.node.hooks import epilog, prolog

    def log(line: str) -> None:
        _log(f"{head} {line}")

    try:
        cfg = config_mod.load()
        return (prolog if which == "prolog" else epilog)(job, cfg, log)
    except Exception as exc:  # noqa: BLE001 - never drain the node over our own bug
        log(f"error: {type(exc).__name__}: {exc}")
        return 0

