"""The supervisor while the session runs: conmon, signals, health and idle checks."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone

from sh_jupyter.container import exits
from sh_jupyter.errors import (
    SessionFailure,
)
from sh_jupyter.progress import say
from sh_jupyter.session import (
    now_iso,
)
from sh_jupyter.supervisor import activity, follow, ports, readiness
from sh_jupyter.supervisor.phase import Phase, podman_shell


class Watching(Phase):
    """Running: sleep on conmon and the signal pipe, check health, end an idle session."""

    # -- while it runs -----------------------------------------------------------------
    def _release_service(self) -> None:
        """Stop the API service while the session runs: conmon keeps the container."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.service is not None:
            self.service.stop()

    def _ensure_service(self) -> bool:
        """Bring the API service (back) for the session's end; False if it cannot start."""
        if self.service is None:
            return False
        if self.client is not None and self.service.alive():
            return True
        if self.client is not None:
            say("the Podman API service died; starting it again")
        try:
            self.service.stop()  # whatever is left of a dead one: socket and log
            self.service.start()
            self.client = self.service.wait_ready()
        except SessionFailure as exc:
            say(f"could not start the Podman API service: {exc}")
            self.client = None
            return False
        return True

    def _supervise(self) -> int:
        """Sleep until conmon exits or a signal comes; check JupyterLab's health meanwhile,
        and end the session when it has been idle for session.idle_timeout."""
        host = ports.probe_address(self.cfg["network.bind_address"])
        interval = self.cfg["session.health_interval"]
        failures = 0
        while True:
            next_check = time.monotonic() + interval
            while not (self.stop_signal or self.watch.gone()) \
                    and time.monotonic() < next_check:
                follow.wait(self.watch, self.signals, next_check - time.monotonic())
            if self.stop_signal or self.watch.gone():
                code = self._ended()
                if code is not None:
                    return code
                continue
            port, base = self.status.port, self.status.base_url
            # With the launcher's own auth (JupyterHub) our token opens nothing: only the
            # unauthenticated /api answers, and there is no activity report to judge idling.
            report = readiness.server_status(host, port, base, self.secret) \
                if self.launch.auth == "token" else None
            if report is None and not readiness.api_answers(host, port, base):
                failures += 1
                say(f"health check failed ({failures} in a row): JupyterLab does not answer")
                continue
            failures = 0
            self._save(replace(self.status, checked_at=now_iso()))
            idle = self._idle_for(host, report) if report is not None else None
            if idle is not None:
                reason = (f"ended after {idle:.0f} s without activity "
                          f"(session.idle_timeout = {self.cfg['session.idle_timeout']} s)")
                say(f"JupyterLab is idle: {reason}")
                self._save(self.status.advance("Completed", ended_at=now_iso(), reason=reason))
                return 0

    def _idle_for(self, host: str, report: dict) -> float | None:
        """Seconds idle when that reaches session.idle_timeout, else None."""
        limit = self.cfg["session.idle_timeout"]
        if not limit or report.get("kernels"):
            return None
        now = datetime.now(timezone.utc)
        if activity.idle_seconds(report, 0, now) < limit:
            return None  # ask for terminals only when it may be idle
        terminals = readiness.terminal_count(host, self.status.port, self.status.base_url,
                                             self.secret)
        idle = activity.idle_seconds(report, terminals, now)
        return idle if idle is not None and idle >= limit else None

    def _ended(self) -> int | None:
        """The session is ending: say why. None when it was only conmon that went away."""
        if not self._ensure_service():
            raise SessionFailure("the session ended but Podman's API service could not be "
                                 "started to stop the container")
        facts = podman_shell().exit_facts(self.client, self.name)
        if facts is None:
            raise SessionFailure(f"container {self.name} disappeared (removed by someone "
                                 "else?)")
        if self.stop_signal:
            say(f"received {self.stop_signal}: stopping JupyterLab")
            self._save(self.status.advance("Completed", ended_at=now_iso(),
                                           reason=f"cancelled ({self.stop_signal})"))
            return 0
        if facts.status == "running" and facts.pid > 0:
            say("conmon exited but the container runs on; following its init process")
            self._follow(facts.pid)
            self._release_service()
            return None
        if facts.exit_code == 0:
            say("JupyterLab was shut down (File > Shut Down); ending the session")
            self._save(self.status.advance("Completed", ended_at=now_iso()))
            return 0
        facts = self._with_oom(facts)
        logs = podman_shell().last_log_lines(self.client.containers.get(self.name))
        oom = {True: "yes", False: "no", None: "unknown"}[facts.oom_killed]
        say(f"JupyterLab ended: status {facts.exit_code}, out-of-memory kill: {oom}; "
            f"its last output: {logs or '(none)'}")
        raise SessionFailure(exits.reason(facts, self.req.memory_gib))
