"""The job card as text for a terminal, in the words of the portal's card."""

from __future__ import annotations

import time
from datetime import datetime

from sh_jupyter.durations import format_walltime


def when(stamp: str, now: float | None = None) -> str:
    """An ISO time as "2026-12-07 02:30 UTC (in 23 min)", for someone waiting."""
    moment = datetime.fromisoformat(stamp)
    left = moment.timestamp() - (time.time() if now is None else now)
    if left <= 60:
        rel = "any moment now"
    elif left < 3600:
        rel = f"in {round(left / 60)} min"
    else:
        rel = f"in {int(left // 3600)} h {round(left % 3600 / 60):02d} min"
    return f"{moment.strftime('%Y-%m-%d %H:%M')} UTC ({rel})"


def render(fields: dict) -> str:
    """The card as text, in the portal card's words."""
    title = fields["status"] + (" (failed)" if fields["failed"] else "")
    lines = [f"Run JupyterLab Container  [{title}]",
             f"  Created at:             {fields['created_at']}"]
    if "time_remaining" in fields:
        lines.append(f"  Time Remaining:         {format_walltime(fields['time_remaining'])}")
    else:
        lines.append(f"  Time Requested:         {format_walltime(fields['time_requested'])}")
    lines += [f"  Session ID:             {fields['session_id']}",
              f"  Job ID:                 {fields['job_id']}",
              f"  Connection timeout (s): {fields['connection_timeout']}",
              f"  CPUs/cores:             {fields['cpus']}",
              f"  Memory (GiB):           {fields['memory_gib']}"]
    if fields.get("image"):
        lines.append(f"  Image:                  {fields['image']}")
    if fields.get("gpus"):
        lines.append(f"  GPUs:                   {fields['gpus']}")
    if fields["host"]:
        lines.append(f"  Host:                   {fields['host']}")
    if fields["message"]:
        lines.append(f"  {fields['message']}")
    if fields["url"]:
        lines.append(f"  Connect to JupyterLab:  {fields['url']} "
                     f"(`sh-jupyter connect {fields['session_id']}` prints the login URL)")
    if fields.get("expected_start"):
        lines.append(f"  Expected start:         {when(fields['expected_start'])}, "
                     "Slurm's estimate")
    elif fields["status"] == "Queued":
        lines.append("  Expected start:         not yet estimated by Slurm")
    if fields["reason"]:
        words = fields.get("queue_reason", "")
        extra = f" ({words})" if words and words != fields["reason"] else ""
        lines.append(f"  Reason:                 {fields['reason']}{extra}")
    if fields["scheduler_error"]:
        lines.append(f"  Job state:              unknown, shown as last recorded "
                     f"({fields['scheduler_error']})")
    return "\n".join(lines)
