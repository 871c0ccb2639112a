"""The supervisor's end: the container stopped and removed, scratch deleted, the service stopped."""

from __future__ import annotations

import os
import subprocess

import psutil

from sh_jupyter.files import remove_scratch
from sh_jupyter.progress import say
from sh_jupyter.supervisor import idle
from sh_jupyter.supervisor.phase import Phase, podman_shell
from sh_jupyter.supervisor.podman_service import podman_env


class TearingDown(Phase):
    """Every way out ends here: nothing of the session is left."""

    # -- teardown ----------------------------------------------------------------------
    def _teardown(self) -> bool:
        """Remove the container and the session's ephemeral dirs; stop our service.

        Returns False when the container could not be removed (the epilog is the backstop).
        """
        removed = True
        if self.service is not None and self.container_created():
            removed = self._remove_container()
        for m in self.mounts:
            if m.ephemeral and os.path.lexists(m.source):
                self._remove_tree(m.source)
        self._drop_auth()  # a session that never answered still had its token there
        if self.service is not None:
            self.service.stop()
        if self.watch is not None:
            self.watch.close()
        return removed

    def container_created(self) -> bool:
        """True once a container may exist (the API service was started for this session)."""
        return self.client is not None or self.watch is not None

    def _remove_container(self) -> bool:
        """Stop and remove the container, starting the API service again if it is down.

        A second try also follows a refusal: Podman 5 before 5.6 fails the first removal of
        a container whose conmon was killed ("conmon exited prematurely", podman#26640) and
        marks it exited, so the next one removes it (the epilog does the same)."""
        if self.client is None and self._remove_with_cli():
            return True
        for attempt in (1, 2):
            if not self._ensure_service():
                if attempt == 1 and self._stop_by_pid():
                    continue  # its processes are gone: Podman may have room to start now
                return False
            try:
                podman_shell().stop_and_remove(self.client, self.name,
                                               self.cfg["session.stop_timeout"])
                say(f"container {self.name} removed")
                return True
            except Exception as exc:  # noqa: BLE001 - report, maybe retry, keep tearing down
                say(f"could not remove container {self.name}: {exc}")
                if attempt == 2:
                    return False
        return False

    def removal_command(self) -> dict | None:
        """`podman rm` of the container (stopping it first, as the API's stop would), for
        when the API service is down: the idle wait starts it the moment a cancel arrives."""
        if self.service is None:
            return None
        return {"argv": ["podman", *self.service.global_args, "rm", "--force", "--ignore",
                         "--time", str(self.cfg["session.stop_timeout"]), "--", self.name],
                "env": self.service.env}

    def _remove_with_cli(self) -> bool:
        """Stop and remove the container with one `podman rm` when the API service is down
        (the session ran without it): no service to boot and no API client to load on the
        way out. The idle wait may have started it already (`removal`). False when that
        did not work; the API's way then tries."""
        limit = self.cfg["session.stop_timeout"] + 30
        if self.removal is not None:
            removal, self.removal = self.removal, None
            try:
                code = removal.wait(limit)
            except subprocess.TimeoutExpired:
                removal.kill()
                code = removal.wait()
            return idle.said_removal(self.name, code, f"exit status {code}")
        command = self.removal_command()
        return command is not None and idle.remove_container(command, self.name, limit)

    def _stop_by_pid(self) -> bool:
        """Stop the container as its owner can without Podman: SIGTERM to its init, SIGKILL
        after session.stop_timeout. For when Podman itself cannot start (the user is at the
        process limit: the container's own processes count), so that it then can."""
        pid = self.watch.pid if self.conmon_lost and self.watch else self.init_pid
        if pid <= 0:
            return False
        try:
            init = psutil.Process(pid)
            if init.uids().real != self.req.uid \
                    or init.create_time() > self.launched_at:
                return False  # not the container's init (gone, or its pid taken since)
            init.terminate()
            try:
                init.wait(self.cfg["session.stop_timeout"])
            except psutil.TimeoutExpired:
                init.kill()
                init.wait(5)
        except (psutil.Error, ValueError):
            return False
        say(f"Podman could not start: stopped the container's processes directly (init {pid})")
        return True

    def _remove_tree(self, path: str) -> None:
        env = self.service.env if self.service else podman_env(self.req.uid, self.req.job_env)
        say(remove_scratch(path, env))
