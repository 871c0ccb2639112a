"""Timestamped progress lines on stdout: the job's output.log is what users and admins read."""

from __future__ import annotations

import sys
from datetime import datetime, timezone


def say(message: str) -> None:
    """One line, flushed at once so `tail -f output.log` and the portal see it live."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sys.stdout.write(f"{stamp} sh-jupyter: {message}\n")
    sys.stdout.flush()
