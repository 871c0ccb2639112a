"""The job card as text for a terminal, in the words of the portal's card."""

from __future__ import annotations

from sh_jupyter.durations import format_walltime


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
    if fields.get("gpus"):
        lines.append(f"  GPUs:                   {fields['gpus']}")
    if fields["host"]:
        lines.append(f"  Host:                   {fields['host']}")
    if fields["message"]:
        lines.append(f"  {fields['message']}")
    if fields["url"]:
        lines.append(f"  Connect to JupyterLab:  {fields['url']} "
                     f"(`sh-jupyter connect {fields['session_id']}` prints the login URL)")
    if fields["reason"]:
        lines.append(f"  Reason:                 {fields['reason']}")
    if fields["scheduler_error"]:
        lines.append(f"  Job state:              unknown, shown as last recorded "
                     f"({fields['scheduler_error']})")
    return "\n".join(lines)
