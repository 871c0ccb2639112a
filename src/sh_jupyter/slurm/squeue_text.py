"""`squeue -o FORMAT` output: the fixed format sh-jupyter asks for, and reading it (pure).

Every Slurm version filters this form on the server (one job with --jobs, one user's jobs
with -u) and it carries only the fields the card uses: a few dozen bytes a job, where
`squeue --json` gives about 3 KB. The job name is last because it is the only free-text field
(it may contain the separator); times come as epoch seconds through SLURM_TIME_FORMAT=%s.
"""

from __future__ import annotations

from sh_jupyter.durations import parse_walltime
from sh_jupyter.slurm.jobs import JobInfo

# %A job id (one per array element), %T state, %r reason, %N nodes, %V submit time,
# %S start time (expected start while pending), %l time limit, %u user, %j name.
FORMAT = "%A|%T|%r|%N|%V|%S|%l|%u|%j"
ENV = {"SLURM_TIME_FORMAT": "%s"}
_FIELDS = FORMAT.count("%")


def _epoch(text: str) -> int:
    return int(text) if text.isdigit() else 0  # "N/A", "Unknown", "None"


def _limit(text: str) -> int:
    try:
        return parse_walltime(text)  # squeue prints M:SS under an hour, as sbatch reads it
    except ValueError:
        return 0  # UNLIMITED, NOT_SET, INVALID, Partition_Limit


def parse_text(text: str) -> list[JobInfo]:
    """Jobs from `squeue -h -o FORMAT` output (SLURM_TIME_FORMAT=%s).

    A line that does not parse (a continuation of a job name holding a newline) is skipped;
    output of which no line parses is not ours to guess at: ValueError.
    """
    jobs, lines = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        lines += 1
        parts = line.split("|", _FIELDS - 1)
        if len(parts) != _FIELDS or not parts[0].isdigit():
            continue
        job_id, state, reason, nodes, submit, start, limit, user, name = parts
        jobs.append(JobInfo(job_id=job_id, name=name, user=user, state=state, reason=reason,
                            node=nodes, submit_time=_epoch(submit), start_time=_epoch(start),
                            time_limit=_limit(limit)))
    if lines and not jobs:
        raise ValueError(f"no line of squeue's output has the format {FORMAT}: "
                         f"{text.strip().splitlines()[0][:200]!r}")
    return jobs
