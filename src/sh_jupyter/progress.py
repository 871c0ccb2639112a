"""Timestamped progress lines on stdout: the job's output.log is what users and admins read."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from datetime import datetime, timezone


def say(message: str) -> None:
    """One line, written at once so `tail -f output.log` and the portal see it live.

    Never raises: output.log lives in the user's home, and a full home (or quota) must not
    turn a progress line into a crash half-way through a teardown. A line that cannot be
    written is dropped. It goes straight to the file descriptor, so a failed line leaves
    nothing in Python's buffers to fail again at exit.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    line = f"{stamp} sh-jupyter: {message}\n"
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # what print() may have left, first
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        fd = -1
    try:
        if fd < 0:  # a captured stdout (tests, a launcher's own stream)
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        data = line.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
