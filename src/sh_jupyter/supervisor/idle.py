"""The session's long wait, in a small process.

Once JupyterLab answers, all a session needs until it ends is a sleep on conmon's pidfd and the
signal pipe, a health check per `session.health_interval`, and an eye on idleness and on the
walltime notice's time. The supervisor's interpreter holds podman-py, requests and the config
for that (about 31 MB resident), so the CLI's supervisor replaces itself with this module
(`handoff`), which loads nothing more than the loop needs (about 11 MB), and this module
replaces itself with the full supervisor (`resume`) when something happens. Where the process
is not ours to replace (`api.run` inside a launcher's program) the same loop runs in-process.

Run as `python -c ... PLAN_FD STATE_FD` by `handoff`: never meant to be started by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from sh_jupyter.progress import say
from sh_jupyter.supervisor import activity, follow, readiness

RETRY_INTERVAL = 5  # seconds from a failed health check to the next
STATUS_FILE = "status.json"  # session.STATUS_FILE; that module is too heavy to load here
# What a watch ends with: the supervisor's own work follows (`Watching._handle`).
ENDED, UNHEALTHY, IDLE, WALLTIME = "ended", "unhealthy", "idle", "walltime"


def now_iso() -> str:
    """As session.now_iso (the card's times)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def watch(plan: Mapping, process: follow.ProcessWatch, signals: follow.SignalPipe,
          checked: Callable[[str], None]) -> dict:
    """Follow the session until the supervisor has work to do; what it is.

    `plan` says what to check (host, port, base_url, token: "" for a launcher's own auth,
    health_interval, health_failures, idle_timeout, walltime_due: epoch seconds or 0).
    `checked` records each good health check's time on the card. After a failed check the
    next comes soon: the bound the docs state is health_interval + (health_failures - 1) x
    RETRY_INTERVAL (+ the probes' timeouts).
    """
    host, port, base, token = plan["host"], plan["port"], plan["base_url"], plan["token"]
    interval, due = plan["health_interval"], plan["walltime_due"]
    failures = 0
    while True:
        next_check = time.monotonic() + (min(interval, RETRY_INTERVAL) if failures else interval)
        while not (signals.received or process.gone()) and time.monotonic() < next_check:
            if due and time.time() >= due:
                return {"kind": WALLTIME}
            wake = next_check if not due else min(next_check,
                                                   time.monotonic() + due - time.time())
            follow.wait(process, signals, max(0.0, wake - time.monotonic()))
        if signals.received or process.gone():
            return {"kind": ENDED, "signal": signals.received}
        # With the launcher's own auth (JupyterHub) our token opens nothing: only the
        # unauthenticated /api answers, and there is no activity report to judge idling.
        report = readiness.server_status(host, port, base, token) if token else None
        if report is None and not readiness.api_answers(host, port, base):
            failures += 1
            say(f"health check failed ({failures} in a row): JupyterLab does not answer")
            if failures >= plan["health_failures"]:
                return {"kind": UNHEALTHY}
            continue
        failures = 0
        checked(now_iso())
        idle = idle_for(plan, report) if report is not None else None
        if idle is not None:
            return {"kind": IDLE, "seconds": idle}


def idle_for(plan: Mapping, report: Mapping) -> float | None:
    """Seconds idle when that reaches the plan's idle_timeout, else None."""
    limit = plan["idle_timeout"]
    if not limit or report.get("kernels"):
        return None
    now = datetime.now(timezone.utc)
    if activity.idle_seconds(report, 0, now) < limit:
        return None  # ask for terminals only when it may be idle
    terminals = readiness.terminal_count(plan["host"], plan["port"], plan["base_url"],
                                         plan["token"])
    idle = activity.idle_seconds(report, terminals, now)
    return idle if idle is not None and idle >= limit else None


def start(spec: Mapping | None, what: str) -> int:
    """Start the supervisor's next Podman command now, so it runs while the supervisor comes
    back (which adopts it by its pid): the API service (`PodmanService.spec`: its errors go
    to its log) or the container's removal (`removal_command`: its errors to output.log).
    0 when it could not: the supervisor then runs its own."""
    if not spec:
        return 0
    import subprocess  # only now: the wait itself never needs it

    try:
        with contextlib.ExitStack() as stack:
            stderr = None  # the removal's errors: inherited, into output.log
            if "socket" in spec:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(spec["socket"])
                stderr = stack.enter_context(open(spec["log"], "ab"))
            return subprocess.Popen(spec["argv"], env=spec["env"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    start_new_session=True, close_fds=True).pid
    except OSError as exc:
        say(f"could not start {what} early: {exc}")
        return 0


def remove_container(removal: Mapping, name: str, timeout: float) -> bool:
    """Run the teardown's `podman rm` (`removal_command`) and say how it went; True when
    the container is gone."""
    from sh_jupyter.runner import run  # only now: the wait itself never needs it

    out = run(removal["argv"], env=removal["env"], timeout=timeout)
    return said_removal(name, out.returncode, out.why)


def said_removal(name: str, code: int, why: str) -> bool:
    """The line a `podman rm` of the container leaves in output.log; True when it worked."""
    if code == 0:
        say(f"container {name} removed")
    else:
        say(f"podman rm {name} failed ({why}); trying through the API")
    return code == 0


def cancel(plan: dict, signal_name: str) -> bool:
    """End a cancelled session here: `podman rm` (which stops the container), the card,
    the scratch. True when done; False when the removal failed (the supervisor, taken
    back, then tries through the API).

    Why here and not in the supervisor: Slurm looks at the job a second after its signal
    and again a second later, and loading the supervisor again while JupyterLab shuts down
    made the job's end miss the first look. What is done is exactly what the teardown does
    after a cancel, with the same helpers."""
    if not remove_container(plan["removal"], plan["name"], plan["stop_timeout"] + 30):
        return False
    plan["status"].update(phase="Completed", ended_at=now_iso(),
                          reason=f"cancelled ({signal_name})")
    try:
        write_status(plan["session_dir"], plan["status"])
    except OSError as exc:
        say(f"warning: could not write {STATUS_FILE}: {exc.strerror or exc}")
    from sh_jupyter.files import remove_scratch

    for path in plan["scratch"]:
        if os.path.lexists(path):
            say(remove_scratch(path, plan["removal"]["env"]))
    return True


def write_status(session_dir: str, status: Mapping) -> None:
    """status.json as Status.to_json writes it, replaced atomically and created 0600 (the
    session directory is the user's own, 0700)."""
    path = os.path.join(session_dir, STATUS_FILE)
    tmp = os.path.join(session_dir, f".tmp-idle-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a run killed mid-write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def take_signal(signals: follow.SignalPipe) -> str:
    """The signal this process's handler took, if any, now cleared (pipe and record), so
    that `signals.pending()` tells only of a newer one."""
    follow.wait(None, signals, 0)  # lets the handler of one that just came run
    name, signals.received = signals.received, ""
    signals.drain()
    return name


def main(argv: list[str]) -> None:
    """The handed-off wait: read the plan, watch, write down what happened, hand back."""
    from sh_jupyter.supervisor import handoff  # light: os, signal, sys

    plan_fd, state_fd = int(argv[0]), int(argv[1])
    plan = json.loads(handoff.read_fd(plan_fd))
    signals = follow.SignalPipe(handoff.SIGNALS)
    handoff.unblock_signals()  # a signal that came during the exec is delivered now
    process = follow.ProcessWatch.adopt(plan["pid"], plan["pidfd"])
    failed_write = ""

    def checked(when: str) -> None:
        nonlocal failed_write
        plan["status"]["checked_at"] = when
        try:
            write_status(plan["session_dir"], plan["status"])
        except OSError as exc:  # a full home must not end a working session
            why = f"could not write {STATUS_FILE}: {exc.strerror or exc}"
            if why != failed_write:
                say(f"warning: {why}; the session goes on, its card is not updated")
            failed_write = why
            return
        if failed_write:
            say(f"{STATUS_FILE} written again")
        failed_write = ""

    plan["event"] = event = watch(plan, process, signals, checked)
    if event["kind"] == ENDED and event["signal"] and plan.get("removal"):
        say(f"received {event['signal']}: stopping JupyterLab")
        event["said"] = True
        if cancel(plan, event["signal"]):
            sys.exit(0)
    elif event["kind"] == IDLE:
        # The container goes: it stops while the supervisor loads.
        plan["removal_pid"] = start(plan.get("removal"), "the container's removal")
    elif event["kind"] != WALLTIME:
        # What ended or failed is asked through the API service: it boots during the exec.
        plan["service_pid"] = start(plan.get("service"), "the Podman API service")
    taken = take_signal(signals)  # the event carries it now: no longer pending here
    event["signal"] = event.get("signal") or taken
    try:
        while not handoff.exec_supervisor("sh_jupyter.supervisor.resume", plan, state_fd,
                                          signals.pending):
            # A signal came on the way out, and its handler here took it: pass it on.
            taken = take_signal(signals)
            event["signal"] = event.get("signal") or taken or "SIGTERM"
    except OSError as exc:
        say(f"could not hand the session back to the supervisor ({exc}); the job ends and "
            "its epilog removes the container")
        sys.exit(3)  # EXIT_SESSION_FAILED


if __name__ == "__main__":
    main(sys.argv[1:])
