"""Signals shell: follow a process that is not our child, and turn signals into a readable fd.

While a session runs, the supervisor holds no Podman API service (44 MB and steady CPU per
session): it follows the container through its conmon process, which outlives the service and
exits only after it has recorded the container's exit. A pidfd makes that wait free (no polling,
no thread); signals arrive on a self-pipe, so one `select` sleeps on both.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Iterable


class ProcessWatch:
    """Becomes readable when the process exits (pidfd; /proc polling where there is none)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # Linux < 5.3 or already gone
            self.fd = os.pidfd_open(pid)

    @classmethod
    def adopt(cls, pid: int, fd: int) -> ProcessWatch:
        """Follow through a pidfd this process inherited (-1: none, look at /proc): the pid
        alone could since name another process."""
        watch = cls.__new__(cls)
        watch.pid, watch.fd = pid, (fd if fd >= 0 else None)
        return watch

    def gone(self) -> bool:
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], 0)[0])
        return not os.path.exists(f"/proc/{self.pid}")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SignalPipe:
    """Records the first of the given signals and wakes a `select` on `fileno()`."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.received = ""
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame) -> None:
        self.received = self.received or signal.Signals(signum).name

    def fileno(self) -> int:
        return self._read.fileno()

    def pending(self) -> bool:
        """A signal came, even one whose Python handler has not run yet (its byte is in the
        pipe): what must not be lost when this process is replaced."""
        return bool(self.received) or bool(select.select([self._read], [], [], 0)[0])

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._read.recv(64):
                pass


class Child:
    """A child process known only by its pid (started before this process's exec): what
    PodmanService uses of Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere, or not ours after all
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                import subprocess  # as Popen.wait raises; the idle wait never loads it

                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(delay)  # bounded back-off while polling a condition with a deadline
            delay = min(delay * 2, 0.05)
        return self.returncode


def wait(watch: ProcessWatch | None, signals: SignalPipe, timeout: float) -> None:
    """Sleep until the watched process exits, a signal arrives or `timeout` passes.

    Returns at once when one of them already happened.
    """
    if signals.received or (watch is not None and watch.gone()):
        return
    fds: list[int] = [signals.fileno()]
    if watch is not None and watch.fd is not None:
        fds.append(watch.fd)
    elif watch is not None:
        timeout = min(timeout, 1.0)  # no pidfd: look at /proc once a second
    with contextlib.suppress(InterruptedError):
        select.select(fds, [], [], timeout)
    signals.drain()
