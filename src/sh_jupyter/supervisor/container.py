"""Podman shell for one session container: create/start with port retries, readiness, removal.

Every call goes through podman-py to the session's own API service. Nothing here decides
policy; the spec comes from `spec.create_kwargs`, the timing from the supervisor.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from podman.errors import APIError, NotFound, PodmanError
from requests.exceptions import RequestException

from podman import PodmanClient
from sh_jupyter.container.exits import ExitFacts
from sh_jupyter.container.spec import LABEL_SESSION, LABEL_USER
from sh_jupyter.errors import ConnectionTimeout, PortInUse, SessionFailure
from sh_jupyter.progress import say
from sh_jupyter.supervisor import follow, ports, readiness

IN_USE_MARKERS = ("address already in use", "is already in use", "port is already allocated")


def last_log_lines(container, count: int = 8) -> str:
    """The container's last log lines, for failure reasons (never contains the token)."""
    with contextlib.suppress(Exception):  # logs are a courtesy: any API trouble means none
        raw = container.logs(stdout=True, stderr=True, tail=count)
        data = raw if isinstance(raw, bytes) else b"".join(raw)
        lines = data.decode("utf-8", "replace").strip().splitlines()
        return " | ".join(line.strip() for line in lines[-count:])
    return ""


def remove_leftover(client: PodmanClient, name: str, session_id: str, user: str) -> bool:
    """Remove a container of the same name left by an earlier run of this session
    (a leftover of the same name would make the next start fail).

    Only a container carrying this session's and user's labels is ours to remove.
    """
    try:
        old = client.containers.get(name)
    except NotFound:
        return False
    labels = old.labels or {}
    if labels.get(LABEL_SESSION) != session_id or labels.get(LABEL_USER) != user:
        raise SessionFailure(f"a container named {name} exists and is not this session's")
    old.remove(force=True)
    return True


# podman-py's errors and the transport's: the API service went away or refused mid-call.
API_ERRORS = (PodmanError, RequestException)


def create(client: PodmanClient, kwargs: dict, store: str, session_id: str, user: str):
    """Create the container, asking Podman nothing beforehand (each call is a round trip on
    the way to Connect): a missing image or a leftover of the same name shows in the error."""
    try:
        return client.containers.create(**kwargs)
    except APIError as exc:
        text = str(exc).lower()
        if isinstance(exc, NotFound) or "image not known" in text:
            raise SessionFailure(f"image {kwargs['image']} is not in the image store {store} "
                                 "(it is never pulled; the site must publish it)") from None
        if "already in use" not in text or not remove_leftover(client, kwargs["name"],
                                                                 session_id, user):
            raise SessionFailure(f"Podman could not create the container: {exc}") from None
    return client.containers.create(**kwargs)


def create_and_start(client: PodmanClient, kwargs: dict, store: str, session_id: str,
                     user: str):
    """Create and start; PortInUse if Podman could not publish the port."""
    container = create(client, kwargs, store, session_id, user)
    try:
        container.start()
    except APIError as exc:
        text = str(exc).lower()
        with contextlib.suppress(APIError):
            container.remove(force=True)
        if any(m in text for m in IN_USE_MARKERS):
            raise PortInUse(str(exc)) from None
        raise SessionFailure(f"Podman could not start the container: {exc}") from None
    return container


class ConmonGone(Exception):
    """The followed conmon exited while the container runs on: follow `pid` (its init)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"conmon exited; the container's init {pid} runs on")
        self.pid = pid


CHECK_EVERY = 1.0  # seconds between looks at the container's helpers while JupyterLab boots


def wait_until_ready(container, bind_address: str, port: int, base_url: str, token: str,
                     deadline: float, watch: follow.ProcessWatch, signals: follow.SignalPipe,
                     interval: float = 0.01,
                     unreachable: Callable[[], str] | None = None) -> None:
    """Poll HTTP until JupyterLab answers; fail fast when the container exits.

    The exit is seen on the followed process's pidfd, so polling costs no Podman API calls
    while JupyterLab boots; a signal (scancel) ends the wait at once. `unreachable` is asked
    once a second: a non-empty answer (its network helper died) means it can never answer,
    so the session ends now, not at the connection timeout. An empty token skips the token
    check. ConmonGone: conmon died but the container runs (follow its init and wait again).
    """
    host = ports.probe_address(bind_address)
    next_check = time.monotonic() + CHECK_EVERY
    while not readiness.api_answers(host, port, base_url, timeout=2.0):
        if watch.gone():
            _fail_exited(container)
        if unreachable is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + CHECK_EVERY
            why = unreachable()
            if why:
                # The helper also ends when the container does: then the exit is the news.
                with contextlib.suppress(Exception):
                    container.reload()
                if container.attrs.get("State", {}).get("Status") != "running":
                    _fail_exited(container)
                raise SessionFailure(f"JupyterLab cannot be reached on port {port}: {why}")
        if signals.received:
            raise SessionFailure("stopped by a signal while JupyterLab was starting")
        if time.monotonic() >= deadline:
            raise ConnectionTimeout("JupyterLab did not answer within the connection timeout "
                                    f"({last_log_lines(container, 3) or 'no output'})")
        follow.wait(watch, signals, interval)
    if not token:  # the launcher's command authenticates by itself
        return
    status = readiness.auth_status(host, port, base_url, token)
    if status != 200:
        raise SessionFailure(f"JupyterLab answers but refuses the session token (HTTP {status}); "
                             "the image's jupyter_server (2.0 or later) must read the "
                             "config file in JUPYTER_CONFIG_PATH")


class ExitedEarly(SessionFailure):
    """The container ended before JupyterLab answered; the supervisor says why."""

    def __init__(self, facts: ExitFacts, last_lines: str) -> None:
        super().__init__(f"JupyterLab exited during start-up (status {facts.exit_code})")
        self.facts = facts
        self.last_lines = last_lines


def _fail_exited(container) -> None:
    with contextlib.suppress(Exception):  # the state only improves the message
        container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") == "running" and int(state.get("Pid") or 0) > 0:
        raise ConmonGone(int(state["Pid"]))  # conmon was killed, not JupyterLab
    logs = last_log_lines(container)
    if any(m in logs.lower() for m in IN_USE_MARKERS):
        raise PortInUse(logs)
    say(f"JupyterLab's last output: {logs or '(none)'}")
    raise ExitedEarly(_facts(container.attrs.get("State", {})), last_log_lines(container, 2))


def conmon_pid(container) -> int:
    """The pid of the container's conmon (it records the exit, then exits itself)."""
    container.reload()
    state = container.attrs.get("State", {})
    pid = int(state.get("ConmonPid") or 0)
    if pid <= 0:
        if state.get("Status") in ("exited", "stopped"):
            _fail_exited(container)  # it ended before it could be followed: say why
        raise SessionFailure("Podman reports no conmon process for the container")
    return pid


def exit_facts(client: PodmanClient, name: str) -> ExitFacts | None:
    """Inspect the container once it is no longer followed (None if it is gone)."""
    try:
        return _facts(client.containers.get(name).attrs.get("State", {}))
    except NotFound:
        return None


def network_facts(client: PodmanClient, name: str) -> tuple[str, int, str] | None:
    """The container's status, init pid and network namespace path (None if it is gone)."""
    try:
        attrs = client.containers.get(name).attrs
    except NotFound:
        return None
    state = attrs.get("State", {})
    return (str(state.get("Status", "")), int(state.get("Pid") or 0),
            str((attrs.get("NetworkSettings") or {}).get("SandboxKey") or ""))


def _facts(state: dict) -> ExitFacts:
    code = state.get("ExitCode")
    return ExitFacts(status=str(state.get("Status", "")),
                     exit_code=int(code) if isinstance(code, int) else None,
                     oom_killed=bool(state.get("OOMKilled")), pid=int(state.get("Pid") or 0))


def stop_and_remove(client: PodmanClient, name: str, stop_timeout: int) -> None:
    """Stop gracefully (SIGTERM, then SIGKILL after stop_timeout), remove, and verify."""
    try:
        container = client.containers.get(name)
    except NotFound:
        return
    container.reload()
    if container.status == "running":  # stopping an exited one answers 304, no JSON
        with contextlib.suppress(APIError):
            container.stop(timeout=stop_timeout)
    with contextlib.suppress(NotFound):
        container.remove(force=True, v=True)
    if client.containers.exists(name):
        raise SessionFailure(f"container {name} could not be removed")
