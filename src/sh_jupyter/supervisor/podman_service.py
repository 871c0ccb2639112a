"""Podman shell: the user's rootless Podman API service, and podman-py clients for it.

podman-py does not start a service, so the supervisor starts `podman system service` for this
session on a short private socket path and stops exactly what it started. The service runs in
its own session so Slurm's signal to the batch script's process group does not kill it before
the supervisor has removed the container.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sh_jupyter.errors import SessionFailure
from sh_jupyter.files import ensure_private_dir
from sh_jupyter.supervisor import follow
from sh_jupyter.supervisor.nproc import limit_note

if TYPE_CHECKING:
    from podman import PodmanClient


def runtime_dir(uid: int, environ: Mapping[str, str]) -> str:
    """The user's XDG runtime dir; rootless Podman cannot work without one."""
    path = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SessionFailure(f"runtime directory {path} does not exist (the Slurm prolog or "
                             "the login session creates it; run `sh-jupyter doctor`)") from None
    if st.st_uid != uid:
        raise SessionFailure(f"runtime directory {path} is not owned by uid {uid}")
    return path


def podman_env(uid: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Environment for podman commands run as this user (Slurm and sudo may strip it)."""
    env = {k: v for k, v in environ.items() if k in ("PATH", "HOME", "USER", "LOGNAME", "LANG")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    env["XDG_RUNTIME_DIR"] = runtime_dir(uid, environ)
    return env


class PodmanService:
    """One `podman system service` for this session, on its own socket.

    It runs while the session starts and while it ends; in between, the supervisor stops it
    (conmon keeps the container) so an idle session costs the node no API process.
    """

    def __init__(self, socket_path: str, env: dict[str, str], global_args: list[str],
                 api_timeout: int) -> None:
        self.socket_path = socket_path
        self.log_path = socket_path + ".log"
        self.uri = f"unix://{socket_path}"
        self.env = env
        self.global_args = global_args
        self.api_timeout = api_timeout
        self.proc: subprocess.Popen | None = None
        # The serving Podman's version ("4.3.1", "5.4.2"), from the readiness ping's
        # Libpod-API-Version header (no extra API call); "" until then or if it is missing.
        self.version = ""

    def argv(self) -> list[str]:
        podman = shutil.which("podman", path=self.env["PATH"])
        if not podman:
            raise SessionFailure("podman is not installed on this node")
        return [podman, *self.global_args, "system", "service", "--time=0", self.uri]

    def spec(self) -> dict:
        """How to start it, for the idle wait: it starts the service the moment the session
        ends, so the service boots while the supervisor comes back (`adopt`)."""
        return {"argv": self.argv(), "env": self.env, "socket": self.socket_path,
                "log": self.log_path}

    def adopt(self, pid: int) -> None:
        """Take on a service this process started before an exec (its child still)."""
        self.proc = follow.Child(pid)  # type: ignore[assignment] - what is used of Popen

    def start(self) -> None:
        """Start the service without waiting for it (the caller overlaps other work)."""
        argv = self.argv()
        ensure_private_dir(os.path.dirname(self.socket_path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv,
                    env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log, start_new_session=True, close_fds=True,
                )
        except OSError as exc:  # no process can be made (ulimit -u), or no room for the log
            raise SessionFailure(f"could not start podman system service: {exc.strerror or exc}"
                                 f"{limit_note(os.getuid(), exc)}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> PodmanClient:
        """A client whose every call is bounded by the configured API timeout."""
        from podman import PodmanClient  # ~80 ms: imported while the service boots

        return PodmanClient(base_url=self.uri, timeout=self.api_timeout)

    def wait_ready(self, deadline_s: float = 20.0) -> PodmanClient:
        """Block until the API answers a ping; fail with the service's own words if it died."""
        end = time.monotonic() + deadline_s
        delay = 0.002
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self._log_tail()
                raise SessionFailure(f"podman system service exited ({self.proc.returncode})"
                                     f"{limit_note(os.getuid(), tail)}: {tail}")
            if os.path.exists(self.socket_path):
                client = self.client()
                with contextlib.suppress(Exception):  # not up yet: any transport error
                    response = client.api.head("/_ping")
                    if response.ok:
                        self.version = response.headers.get("Libpod-API-Version", "")
                        return client
                client.close()
            time.sleep(delay)  # bounded back-off while polling a condition with a deadline
            delay = min(delay * 2, 0.02)
        raise SessionFailure(f"podman system service did not answer within {deadline_s:.0f} s: "
                             f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(no log)"

    def stop(self) -> None:
        """Stop the service we started and remove its socket and log (nothing of a session
        may pile up in the runtime directory)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for path in (self.socket_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
