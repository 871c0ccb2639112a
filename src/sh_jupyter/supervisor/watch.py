"""The supervisor while the session runs: conmon, signals, health and idle checks."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

from sh_jupyter.container import exits
from sh_jupyter.container.spec import network_mode
from sh_jupyter.errors import SessionFailure
from sh_jupyter.progress import say
from sh_jupyter.session import now_iso
from sh_jupyter.supervisor import handoff, idle, ports
from sh_jupyter.supervisor.netns import helper_alive, helper_gone
from sh_jupyter.supervisor.phase import Phase, podman_shell


class Watching(Phase):
    """Running: follow conmon and the signals, check health, end an idle session.

    The wait itself is `idle.watch`: in a small process of its own (`handoff`) when this
    process is the CLI's, in this one otherwise; what it saw is handled here."""

    def _supervise(self, event: dict | None = None) -> int:
        """Until the session ends: wait for something, handle it; the exit status."""
        while True:
            if event is None:
                event = self._wait_for_event()
            code = self._handle(event)
            event = None
            if code is not None:
                return code

    def _plan(self) -> dict:
        """What the wait needs to know, as JSON (it may cross an exec)."""
        watch = self.watch
        return {
            "host": ports.probe_address(self.cfg["network.bind_address"]),
            "port": self.status.port, "base_url": self.status.base_url,
            "token": self.secret if self.launch.auth == "token" else "",
            "health_interval": self.cfg["session.health_interval"],
            "health_failures": self.cfg["session.health_failures"],
            "idle_timeout": self.cfg["session.idle_timeout"],
            "walltime_due": self._walltime_due(),
            "pid": watch.pid if watch else 0,
            "pidfd": watch.fd if watch and watch.fd is not None else -1,
            "session_dir": self.req.session_dir, "status": asdict(self.status),
            "service": self.service.spec() if self.service and self.req.handoff else None,
            "removal": self.removal_command() if self.req.handoff else None,
            "name": self.name, "stop_timeout": self.cfg["session.stop_timeout"],
            "scratch": [m.source for m in self.mounts if m.ephemeral],
        }

    def _wait_for_event(self) -> dict:
        plan = self._plan()
        if self.req.handoff:
            try:
                handoff.exec_supervisor("sh_jupyter.supervisor.idle", plan, self._freeze(),
                                        self.signals.pending)
            except OSError as exc:
                say(f"the idle wait stays in the supervisor's process: {exc}")
        return idle.watch(plan, self.watch, self.signals,
                          lambda when: self._save(replace(self.status, checked_at=when)))

    def _handle(self, event: dict) -> int | None:
        """Act on what the wait saw; the exit status once the session is over."""
        kind = event["kind"]
        if kind == idle.WALLTIME:
            end = self.clock.end(timeout=0)
            self._notify("walltime", str(max(0, int(end - time.time()))))
            return None
        if kind == idle.UNHEALTHY:
            raise SessionFailure(f"JupyterLab stopped answering on port {self.status.port}: "
                                 f"{self._what_is_dead()}")
        if kind == idle.IDLE:
            reason = (f"ended after {event['seconds']:.0f} s without activity "
                      f"(session.idle_timeout = {self.cfg['session.idle_timeout']} s)")
            say(f"JupyterLab is idle: {reason}")
            self._save(self.status.advance("Completed", ended_at=now_iso(), reason=reason))
            return 0
        return self._ended(event.get("said", False))

    def _walltime_due(self) -> float:
        """When the opted-in walltime notice is due (epoch seconds; 0: none is left). The
        JupyterLab notices and the save before the end are the image's walltime guard's,
        from the job's end in its environment."""
        end, ahead = self.clock.end(timeout=0), self.cfg["walltime.first_warning"]
        if not (self.notices and end and ahead) or "walltime" in \
                self.status.extra.get("notices", []):
            return 0
        return float(end - ahead)

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

    def _ended(self, said: bool = False) -> int | None:
        """The session is ending: say why. None when it was only conmon that went away.

        A stop signal needs no Podman here: the teardown's `podman rm` stops the container
        (Slurm has signalled its processes too), and Slurm's next look at the job comes a
        second after its signal, so every tenth of a second spent before counts."""
        if self.stop_signal:
            if not said:
                say(f"received {self.stop_signal}: stopping JupyterLab")
            self._save(self.status.advance("Completed", ended_at=now_iso(),
                                           reason=f"cancelled ({self.stop_signal})"))
            return 0
        if not self._ensure_service():
            raise SessionFailure("the session ended but Podman's API service could not be "
                                 "started to stop the container")
        facts = podman_shell().exit_facts(self.client, self.name)
        if facts is None:
            raise SessionFailure(f"container {self.name} disappeared (removed by someone "
                                 "else?)")
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
