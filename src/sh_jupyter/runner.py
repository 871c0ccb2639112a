"""The one way sh-jupyter runs a program: argument lists, a timeout, captured text, no raise.

Every context that shells out (Slurm's commands, Podman as the user in the hooks, doctor's
probes, nvidia-smi) calls `run`, so each has the same contract: the program's own failure, a
missing program and a timeout all come back as a `Result` (never an exception, so a hook never
fails for a command that misbehaved), and `Result.why` says what happened in one line. Two
things are not run to completion and so stand apart: the supervisor's Podman API service (a
background service it starts and stops) and the JupyterHub spawner's calls (asynchronous, in
the hub's event loop).

Each program runs in a session (and process group) of its own, and a timeout kills that whole
group: a program run through `runuser` (the hooks' Podman as the user) would otherwise leave
its child running after runuser itself was killed, outside any Slurm job's accounting. A
program that deliberately leaves a process behind in a session of its own escapes this; the
one sh-jupyter relies on is the prolog's `podman unshare true`, whose rootless pause process
must outlive the job (see node/hooks.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=None if env is None else dict(env), cwd=cwd,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:
        return Result(argv, NOT_FOUND, "", f"{argv[0]} could not run: {exc.strerror}")
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _err = _drain(proc)
        return Result(argv, TIMED_OUT, out,
                      f"{argv[0]} did not finish within {timeout:g} s")
    finally:
        if proc.returncode is None:  # an exception of our own (KeyboardInterrupt): no orphans
            _kill_group(proc)
    return Result(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (its session, from start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    """What a killed program wrote; bounded, in case a grandchild in another group still holds
    the pipes open."""
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return "", ""
