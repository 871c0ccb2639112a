"""The one way sh-jupyter runs a program: argument lists, a timeout, captured text, no raise.

Every context that shells out (Slurm's commands, Podman as the user in the hooks, doctor's
probes, nvidia-smi) calls `run`, so each has the same contract: the program's own failure, a
missing program and a timeout all come back as a `Result` (never an exception, so a hook never
fails for a command that misbehaved), and `Result.why` says what happened in one line. Two
things are not run to completion and so stand apart: the supervisor's Podman API service (a
background service it starts and stops) and the JupyterHub spawner's calls (asynchronous, in
the hub's event loop).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NOT_FOUND = 127  # the shell's status for "command not found"
TIMED_OUT = 124  # timeout(1)'s status for "killed at the deadline"


@dataclass(frozen=True)
class Result:
    """How a program ended: its status (127 not found, 124 timed out) and its output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def ran(self) -> bool:
        """False when the program never ran or was killed at its deadline."""
        return self.returncode not in (NOT_FOUND, TIMED_OUT) or bool(self.stdout)

    @property
    def why(self) -> str:
        """One line: the last line of stderr, else the exit status."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
        input: str | None = None, cwd: str | None = None) -> Result:
    """Run `argv` (PATH from `env` when given) and wait at most `timeout` seconds.

    A program that is not installed returns NOT_FOUND, one still running at the deadline is
    killed and returns TIMED_OUT; the reason is in `stderr` either way.
    """
    argv = tuple(argv)
    path = (env if env is not None else os.environ).get("PATH")
    if not os.path.isabs(argv[0]) and shutil.which(argv[0], path=path) is None:
        return Result(argv, NOT_FOUND, "", f"{argv[0]} is not installed")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, env=None if env is None else dict(env),
                              input=input, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return Result(argv, TIMED_OUT, out, f"{argv[0]} did not finish within {timeout:g} s")
    except OSError as exc:
        return Result(argv, NOT_FOUND, "", f"{argv[0]} could not run: {exc.strerror}")
    return Result(argv, done.returncode, done.stdout, done.stderr)
