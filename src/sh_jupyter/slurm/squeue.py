"""How sh-jupyter asks squeue about jobs (pure): the form for the installed Slurm, the argv,
and what an answer means.

The questions of status, list and submit --wait are ones slurmctld answers from a filtered
set on every supported version: one job (`--jobs=ID`, slurm_load_job) or one user's jobs
(`-u USER`, slurm_load_job_user; an id list with it is applied by squeue to that user's jobs).
Only a watcher of several users' jobs (a hub) asks with ids and no user: squeue then loads the
whole queue itself and filters it, and we still read only the asked jobs. A question with
neither ids nor a user is refused: never the whole queue.

Form: `squeue --json` from Slurm 23.02, where a single -j/-u reaches the server in JSON mode
too; 22.05 ignores every filter with --json (about 3 KB per job of the whole cluster), and
23.02-24.05.0 ignore an id list there, so those questions use the fixed text format
(slurm_text), which every version filters. `-t all` keeps finished jobs (for MinJobAge) in
the answer, so the card can say how a job ended.

An answer is definite when squeue succeeded (an asked job missing from it is not in the queue)
or when it refused a single job id as invalid (the job has left the queue). Anything else is a
SchedulerUnavailable, "unknown", never "gone": a non-zero exit, output that does not parse, or an
error on stderr next to an absence (22.05 exits 0 with nothing listed for an unknown user).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sh_jupyter.errors import SchedulerUnavailable
from sh_jupyter.slurm import squeue_text as slurm_text
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.squeue_json import parse_jobs

JSON_FROM = (23, 2)
# squeue's answer for a single --jobs=ID that slurmctld no longer knows (exit status 1).
NO_SUCH_JOB = "Invalid job id specified"
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_JOB_ID = re.compile(r"^[0-9]+$")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`squeue --version` output ("slurm-wlm 22.05.8", "slurm 24.11.3") as (22, 5, 8)."""
    match = _VERSION.search(text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


@dataclass(frozen=True)
class Query:
    argv: tuple[str, ...]
    env: dict[str, str]  # added to the caller's environment (minus SQUEUE_*)
    form: str  # "json" or "text"
    job_ids: frozenset[str]
    user: str | None


def plan(version: tuple[int, int, int] | None, job_ids: Iterable[str] = (),
         user: str | None = None, cluster_args: Sequence[str] = ()) -> Query:
    """The squeue command for these jobs and/or this user (name or uid) on this Slurm.

    An unknown version gets the text form, which every version understands.
    """
    ids = sorted(set(job_ids), key=int) if all(_JOB_ID.match(i) for i in job_ids) else None
    if ids is None:
        raise ValueError(f"not Slurm job ids: {sorted(job_ids)}")
    if not ids and not user:
        raise ValueError("a squeue question needs job ids or a user (never the whole queue)")
    filters = ["-t", "all", *(["-u", user] if user else []),
               *([f"--jobs={','.join(ids)}"] if ids else [])]
    use_json = version is not None and version[:2] >= JSON_FROM and (len(ids) == 1 or bool(user))
    if use_json:
        argv = ("squeue", *cluster_args, "--json", *filters)
        return Query(argv, {}, "json", frozenset(ids), user)
    argv = ("squeue", *cluster_args, "-h", "-o", slurm_text.FORMAT, *filters)
    return Query(argv, dict(slurm_text.ENV), "text", frozenset(ids), user)


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())[:300]


def read(query: Query, returncode: int, stdout: str, stderr: str) -> list[JobInfo]:
    """The jobs in squeue's answer to `query`; an asked id not among them is not in the queue.

    SchedulerUnavailable when the answer is not definite.
    """
    if returncode != 0:
        if len(query.job_ids) == 1 and NO_SUCH_JOB in stderr:
            return []
        raise SchedulerUnavailable(f"squeue failed (exit {returncode}): "
                             f"{_one_line(stderr) or 'no message'}")
    try:
        if query.form == "json":
            jobs = parse_jobs(stdout, job_ids=set(query.job_ids) or None, user=query.user)
        else:
            jobs = slurm_text.parse_text(stdout)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise SchedulerUnavailable(f"squeue's answer could not be read: {_one_line(str(exc))}") \
            from None
    if query.job_ids:
        jobs = [j for j in jobs if j.job_id in query.job_ids]
    complete = {j.job_id for j in jobs} == query.job_ids if query.job_ids else bool(jobs)
    if "error" in stderr.lower() and not complete:
        # 22.05 says "squeue: error: Invalid user: NAME" and exits 0 with nothing listed:
        # an absence next to an error is no answer.
        raise SchedulerUnavailable(f"squeue reported an error: {_one_line(stderr)}")
    return jobs
