"""Is a session idle? (pure)

JupyterLab's own idle shutdown (`ServerApp.shutdown_no_activity_timeout`) never fires when
`FileContentsManager.preferred_dir` is set: validating it runs the async contents manager's
`dir_exists` through `run_sync`, which swaps the current event loop, and the shutdown check is
registered on that loop, which never runs (jupyter_server 2.x). So the supervisor decides, from
what JupyterLab reports of itself at each health check.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime


def parse_time(text: str) -> datetime:
    """Jupyter's ISO 8601 UTC times ("2026-11-29T00:23:17.391964Z")."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def idle_seconds(status: Mapping, terminals: int | None, now: datetime) -> float | None:
    """Seconds since JupyterLab's last activity, or None while anything keeps it in use: a
    kernel (the kernel culler ends idle ones first), an open terminal, or a count it could not
    give."""
    if status.get("kernels") or terminals is None or terminals > 0:
        return None
    return max(0.0, (now - parse_time(str(status["last_activity"]))).total_seconds())
