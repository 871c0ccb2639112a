"""Parsing `squeue --json` across Slurm versions (pure).

22.05 prints plain numbers and `job_state` as a string, and ignores every filter in JSON mode
(so sh-jupyter uses the text format there, see squeue.py); 23.02+ wraps numbers as
{"set", "infinite", "number"} and gives `job_state` as a list. Callers get one JobInfo shape
either way; ids and user are filtered here too, because 23.02 to 24.05.0 apply only a single
-j or -u in JSON mode (the rest of the filters from 24.05.1, Slurm commit ff14834caa).
"""

from __future__ import annotations

import json
from typing import Any

from sh_jupyter.slurm.jobs import JobInfo

__all__ = ["JobInfo", "parse_jobs"]


def _num(value: Any) -> int | None:
    """A number in either shape: 42, or {"set": true, "infinite": false, "number": 42}."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# State flags that Slurm's job_state_string() (so squeue's %T) prints instead of the base state,
# in its order: 23.02+ JSON gives the base state first and the flags after it.
_SHOWN_FLAGS = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED")


def _state(value: Any) -> str:
    """The state as squeue prints it: a job being cancelled whose epilog still runs is
    COMPLETING (JSON: ["CANCELLED", "COMPLETING"]), not yet CANCELLED."""
    if isinstance(value, list):
        for flag in _SHOWN_FLAGS:
            if flag in value:
                return flag
        return value[0] if value else "UNKNOWN"
    return str(value or "UNKNOWN")


def _exit_code(value: Any) -> int | None:
    if isinstance(value, dict):  # 23.02+: {"status": [...], "return_code": {...}}
        return _num(value.get("return_code"))
    return _num(value)


def _reason(raw: dict) -> str:
    """The description where Slurm has one ("Nodes required for job are DOWN, ..."), else the
    reason's name ("Priority"): what 24.11's `squeue -o %r` prints, so both forms agree."""
    return str(raw.get("state_description") or raw.get("state_reason") or "")


def parse_jobs(text: str, job_ids: set[str] | None = None, user: str | None = None,
               ) -> list[JobInfo]:
    """Jobs from `squeue --json` output, filtered by id and user (name or uid) here too.

    ValueError when it is not such output or Slurm listed errors in it.
    """
    data = json.loads(text)
    if data.get("errors"):
        raise ValueError(f"squeue reported errors: {data['errors']}")
    jobs = []
    for raw in data.get("jobs", []):
        job_id = str(raw.get("job_id", ""))
        if job_ids is not None and job_id not in job_ids:
            continue
        if user is not None and user not in (raw.get("user_name"), str(raw.get("user_id"))):
            continue
        limit = _num(raw.get("time_limit"))
        jobs.append(JobInfo(
            job_id=job_id, name=str(raw.get("name", "")), user=str(raw.get("user_name", "")),
            state=_state(raw.get("job_state")), reason=_reason(raw),
            node=str(raw.get("nodes", "") or ""), submit_time=_num(raw.get("submit_time")) or 0,
            start_time=_num(raw.get("start_time")) or 0,
            time_limit=limit * 60 if limit else 0, exit_code=_exit_code(raw.get("exit_code")),
        ))
    return jobs
