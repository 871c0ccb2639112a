"""Is this Slurm job a session? Answered from the prolog/epilog environment alone, cheaply:
it runs for every job on the node, so it imports nothing heavy and asks no daemon.

Any user can make an ordinary job look like a session (the same working directory and output
file, even the same batch script), and no marker a user's sbatch sets could stop that: the
user can always run sh-jupyter's own batch script. So recognition is not a security boundary.
What makes it safe is that every hook action for a recognised job is safe for the node and for
other users whatever the job is: Podman runs as the job's user on that user's containers
labelled with this job's id; root touches paths only through checked, link-free directory fds;
root kills only the user's own processes of this job; and nothing the user plants can fail
the hook. Posing gains the poser nothing they could not get by starting a real session.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from sh_jupyter.session import LOG_FILE, is_session_id


@dataclass(frozen=True)
class Job:
    job_id: str
    user: str
    uid: int
    gid: int
    home: str
    session_id: str


def our_job(env: Mapping[str, str]) -> Job | None:
    """Recognise a session job without asking slurmctld: its working directory is a session
    directory (named by a UUID) and its output goes to that directory's output.log."""
    work = env.get("SLURM_JOB_WORK_DIR", "")
    session_id = os.path.basename(work.rstrip("/"))
    if not is_session_id(session_id):
        return None
    stdout = env.get("SLURM_JOB_STDOUT", "")
    if stdout and stdout != os.path.join(work, LOG_FILE):
        return None
    try:
        pw = pwd.getpwnam(env["SLURM_JOB_USER"])
        uid = int(env.get("SLURM_JOB_UID", pw.pw_uid))
    except (KeyError, ValueError):
        return None
    if uid != pw.pw_uid or uid == 0:
        return None
    return Job(env.get("SLURM_JOB_ID", ""), pw.pw_name, uid, pw.pw_gid, pw.pw_dir, session_id)
