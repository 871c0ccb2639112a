"""Parsing `squeue --json` across Slurm versions (pure).

22.05 prints plain numbers and `job_state` as a string, and ignores -j/-u filters in JSON mode;
23.02+ wraps numbers as {"set", "infinite", "number"} and gives `job_state` as a list. Callers
get one JobInfo shape either way, filtered here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    name: str
    user: str
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...
    reason: str = ""
    node: str = ""
    submit_time: int = 0
    start_time: int = 0
    time_limit: int = 0  # seconds; 0 when unlimited or unknown
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        """True once the batch script is gone (COMPLETING: only the epilog is still running)."""
        return self.state not in ("PENDING", "RUNNING", "CONFIGURING", "SUSPENDED",
                                  "REQUEUED", "RESIZING")


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


def _state(value: Any) -> str:
    if isinstance(value, list):
        return value[0] if value else "UNKNOWN"
    return str(value or "UNKNOWN")


def _exit_code(value: Any) -> int | None:
    if isinstance(value, dict):  # 23.02+: {"status": [...], "return_code": {...}}
        return _num(value.get("return_code"))
    return _num(value)


def parse_jobs(text: str, job_ids: set[str] | None = None, user: str | None = None,
               ) -> list[JobInfo]:
    """Jobs from `squeue --json` output, filtered by id and user here (22.05 ignores filters)."""
    data = json.loads(text)
    jobs = []
    for raw in data.get("jobs", []):
        job_id = str(raw.get("job_id", ""))
        if job_ids is not None and job_id not in job_ids:
            continue
        if user is not None and raw.get("user_name") != user:
            continue
        limit = _num(raw.get("time_limit"))
        jobs.append(JobInfo(
            job_id=job_id, name=str(raw.get("name", "")), user=str(raw.get("user_name", "")),
            state=_state(raw.get("job_state")), reason=str(raw.get("state_reason", "") or ""),
            node=str(raw.get("nodes", "") or ""), submit_time=_num(raw.get("submit_time")) or 0,
            start_time=_num(raw.get("start_time")) or 0,
            time_limit=limit * 60 if limit else 0, exit_code=_exit_code(raw.get("exit_code")),
        ))
    return jobs
