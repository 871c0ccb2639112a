#!/opt/sh-jupyter/venv/bin/python
"""JupyterHub spawn-to-ready beside `submit --wait`, as shjuser1, interleaved in one run.

  floor: `sh-jupyter submit --wait --json` (JupyterLab, same image, same resources), from Popen
         until it exits with Running;
  hub:   POST /hub/api/users/shjuser1/server until the hub reports the server ready (the
         spawner's start() returned and the hub saw the server answer), through a real
         JupyterHub and configurable-http-proxy on this machine (tests/hub_bed.py), with
         sh-jupyter's spawner: submit as the user, follow, jupyterhub-singleuser in the
         container;
  informational: until the first GET /user/shjuser1/api through the proxy answers 200, and
         the hub's DELETE of the server (stop(): scancel, then wait for the job and its epilog).

Run as root: `/opt/sh-jupyter/venv/bin/python bench/hub.py [--runs N]` (testbed step 80 first).
Measurements only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time

import benchlib as bl
from benchlib import Series, bed, say

from slurm import SUBMIT_ARGS, Submission

import hub_bed  # tests/, on the path through benchlib

U1 = bed.USERS[0]
FLOOR = "floor: `submit --wait --json` exits with Running"
HUB = "hub: REST spawn until the hub says ready"
ROUTED = "hub: REST spawn until /user/NAME/api answers through the proxy (informational)"
STOP = "hub: REST stop until stopped (job and epilog done; informational)"


def run_floor(config: str, series: Series) -> None:
    sub = Submission(U1, config)
    sub.wait()
    if sub.ready():
        series.add(sub.done_at - sub.t0)
    else:
        series.fail(sub.error())
    sub.cancel()
    sub.forget()


def run_hub(hub: hub_bed.Hub, ready: Series, routed: Series, stop: Series) -> None:
    t0 = time.monotonic()
    try:
        events, took = hub.spawn(U1)
    except (AssertionError, OSError) as exc:
        ready.fail(str(exc))
        return
    state = hub.server(U1).get("state") or {}
    if state.get("job_id"):
        bl.CLEANUP.jobs.append(state["job_id"])
    if events and events[-1].get("failed"):
        ready.fail(events[-1].get("message", "failed"))
    else:
        ready.add(took)
        try:
            bed.wait_for(lambda: hub_bed.answers(f"{hub.url}/user/{U1}/api"), 60, "the route",
                         interval=0.005)
            routed.add(time.monotonic() - t0)
        except AssertionError as exc:
            routed.fail(str(exc))
    t1 = time.monotonic()
    status, body = hub.api("DELETE", f"users/{U1}/server", timeout=180)
    try:
        bed.wait_for(lambda: not hub.server(U1), 180, "the hub to stop it", interval=0.05)
        if status in (202, 204):
            stop.add(time.monotonic() - t1)
        else:
            stop.fail(f"DELETE answered {status}: {body}")
    except AssertionError as exc:
        stop.fail(str(exc))
    if state.get("job_id"):
        bl.wait_job_end(state["job_id"], 120)
        bl.CLEANUP.jobs.remove(state["job_id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    args = parser.parse_args()
    env = hub_bed.hub_env()
    config = bl.write_config(f'{bl.CONFIG_TEXT}[image]\nname = "{env["HUB_IMAGE"]}"\n'
                             f'store = "{env["HUB_STORE"]}"\n')
    hub = hub_bed.Hub(config, poll_interval=30)
    bl.CLEANUP.first.append(hub.close)
    bl.CLEANUP.paths.append(hub.workdir)
    hub.start()
    floor, ready, routed, stop = Series(FLOOR), Series(HUB), Series(ROUTED), Series(STOP)
    load0 = os.getloadavg()
    say("warm-up (not counted)")
    run_floor(config, Series(FLOOR))
    run_hub(hub, Series(HUB), Series(ROUTED), Series(STOP))
    steps = {FLOOR: lambda: run_floor(config, floor),
             HUB: lambda: run_hub(hub, ready, routed, stop)}
    for i in range(args.runs):
        say(f"run {i + 1}")
        for name in bl.rotated(list(steps), i):
            steps[name]()
        say("  " + ", ".join(f"{s.name.split(':')[0]} {s.values[-1]:.2f} s"
                             for s in (floor, ready) if s.values))
    hub.close()
    text = ["## JupyterHub spawn to ready (as shjuser1)\n",
            f"{bl.machine_note()}, JupyterHub {env['JUPYTERHUB_VERSION']}. {args.runs} runs, "
            "variants interleaved (order rotated), one warm-up round not counted. Load "
            f"average before: {load0[0]:.2f}. Jobs ask for `{' '.join(SUBMIT_ARGS)}`; the hub's "
            "spawner asks for the same.\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows([floor, ready, routed, stop], floor)),
            "The hub row includes what `submit --wait` does (sbatch, Slurm, the prolog, the "
            "container, readiness) plus the spawner's user-side commands (runuser, "
            "`sh-jupyter submit --stdin`, `sh-jupyter wait --no-scheduler`), "
            "jupyterhub-singleuser's own start instead of JupyterLab's, and the hub's check "
            "that the server answers.\n"]
    failures = [f"- {s.name}: {why}" for s in (floor, ready, routed, stop) for why in s.failures]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    bl.write_result("hub", "\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
