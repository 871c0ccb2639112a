"""The supervisor while the session runs: conmon, signals, health and idle checks."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import datetime, timezone

from sh_jupyter.container import exits
from sh_jupyter.container.spec import network_mode
from sh_jupyter.errors import SessionFailure
from sh_jupyter.progress import say
from sh_jupyter.session import now_iso
from sh_jupyter.supervisor import activity, follow, ports, readiness
from sh_jupyter.supervisor.netns import helper_alive, helper_gone
from sh_jupyter.supervisor.phase import Phase, podman_shell

RETRY_INTERVAL = 5  # seconds from a failed health check to the next


class Watching(Phase):
    """Running: sleep on conmon and the signal pipe, check health, end an idle session."""

    def _supervise(self) -> int:
        """Sleep until conmon exits or a signal comes; check JupyterLab's health meanwhile,
        and end the session when it has been idle for session.idle_timeout."""
        host = ports.probe_address(self.cfg["network.bind_address"])
        interval = self.cfg["session.health_interval"]
        failures = 0
        while True:
            # After a failed check the next comes soon: the bound the docs state is
            # health_interval + (health_failures - 1) x RETRY_INTERVAL (+ the probes' timeouts).
            next_check = time.monotonic() + (min(interval, RETRY_INTERVAL) if failures
                                             else interval)
            while not (self.stop_signal or self.watch.gone()) \
                    and time.monotonic() < next_check:
                wake = min(next_check, self._walltime_tick())
                follow.wait(self.watch, self.signals, max(0.0, wake - time.monotonic()))
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
                if failures >= self.cfg["session.health_failures"]:
                    raise SessionFailure(f"JupyterLab stopped answering on port {port}: "
                                         f"{self._what_is_dead()}")
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

    def _walltime_tick(self) -> float:
        """Mail the opted-in walltime notice when it is due; the monotonic time of the next
        one (infinity when none is left). JupyterLab's own notices and the save before the
        end are the image's walltime guard's, from the job's end in its environment."""
        end, ahead = self.clock.end(timeout=0), self.cfg["walltime.first_warning"]
        if not (self.notices and end and ahead) or "walltime" in \
                self.status.extra.get("notices", []):
            return math.inf
        due = end - ahead
        now = time.time()
        if now >= due:
            self._notify("walltime", str(max(0, int(end - now))))
            return math.inf
        return time.monotonic() + (due - now)

    def _what_is_dead(self) -> str:
        """What a session that stopped answering lost, for the card's one line."""
        if not self._ensure_service():
            return "JupyterLab does not answer, and Podman's API service could not be started"
        facts = podman_shell().network_facts(self.client, self.name)
        if facts is None:
            return f"its container {self.name} is gone"
        status, pid, netns = facts
        if status != "running" or pid <= 0:
            return f"its container is {status or 'not running'}"
        mode = network_mode(self.cfg["podman.network"], self.podman_version, self.have_pasta)
        if netns and helper_alive(mode, netns, self.req.uid) is False:
            return helper_gone(mode, self.conmon_lost)
        return f"JupyterLab itself does not answer (its container runs, network {mode})"

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
            self.conmon_lost = True
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
