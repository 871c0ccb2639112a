#!/opt/sh-jupyter/venv/bin/python
"""Across the cluster's hosts (testbed/cluster: login, node1, node2), acting as the test users
on login:

  (i)   one session: `sh-jupyter submit --wait --json -w node1` on login, from its start to its
        exit with Running (the peer of (ii), measured in the same run);
  (ii)  a burst: 16 sessions submitted at once from login, 8 aimed at each node (both users on
        both nodes): all ready, each URL answering from login, the time until the last is
        ready against (i); then all cancelled and every container gone from both nodes;
  (iii) JupyterHub on login: a REST spawn (landing on node2) until the hub says ready, beside
        (i); then the REST stop until the job has ended.

Run as root after `testbed/provision --cluster`:
`/opt/sh-jupyter/venv/bin/python bench/cluster.py [--runs N]`. Measurements only: targets are
reported next to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import benchlib as bl
from benchlib import Series, bed, say

import cluster_bed as cb  # benchlib put tests/ on the path
import hub_bed

U1, U2 = bed.USERS
PORTS = "[network]\nport_min = 36000\nport_max = 36999\n"
ARGS = ("--memory", "1", "--cpus", "1", "--time", "30")  # 8 fit on each node at once
SINGLE = "(i) one session from login: `submit --wait` exits with Running"
HUB = "(iii) hub on login: REST spawn until ready (on node2)"
HUB_STOP = "(iii) hub: REST stop until the job ended (informational)"
BURST_PER_NODE = 8
BURST_RATIO_TARGET = 8.0  # 2 cores doing 16 CPU-bound starts: about 8 starts' worth


class Submit:
    """One `submit --wait --json` as a user on login, timed from its start to its exit."""

    def __init__(self, user: str, config: str, node: str) -> None:
        self.user, self.node = user, node
        self.t0 = self.t1 = 0.0
        self.out = None
        self.docs: list[dict] = []
        self.config = config

    def run(self) -> None:
        self.t0 = time.monotonic()
        self.out = cb.sh(self.user, self.config, "submit", "--wait", "--json", "-w", self.node,
                         *ARGS, timeout=600)
        self.t1 = time.monotonic()
        self.docs = bl.json_docs(self.out.stdout) if self.out.stdout.strip() else []
        if self.docs:
            bl.CLEANUP.first.append(lambda: cb.on("login", ["scancel", self.job]))

    @property
    def job(self) -> str:
        return self.docs[0]["job_id"] if self.docs else ""

    @property
    def session(self) -> str:
        return self.docs[0]["session_id"] if self.docs else ""

    def ready(self) -> bool:
        return self.out is not None and self.out.returncode == 0 and \
            bool(self.docs) and self.docs[-1].get("status") == "Running"

    def error(self) -> str:
        if self.out is None:
            return "not run"
        last = self.docs[-1] if self.docs else {}
        return (f"exit {self.out.returncode}, status {last.get('status')!r}, "
                f"reason {last.get('reason')!r}; {bl.tail(self.out.stderr)}")


def cancel(subs: list[Submit]) -> float | None:
    """scancel every job from login; seconds until no container is left on either node."""
    jobs = [s.job for s in subs if s.job]
    t0 = time.monotonic()
    if jobs:
        cb.on("login", ["scancel", *jobs])

    def gone() -> bool:
        names = {f"epcc-ces-jupyter-{s.session}" for s in subs if s.session}
        return not any(names & set(cb.containers(u, n)) for u in (U1, U2) for n in cb.NODES)
    try:
        bed.wait_for(gone, 240, "every container gone", interval=0.2)
        took = time.monotonic() - t0
    except AssertionError:
        took = None
    for job in jobs:
        bed.wait_for(lambda j=job: cb.job_state(j) not in ("RUNNING", "COMPLETING", "PENDING"),
                     240, f"job {job} to end", interval=0.5)
    return took


def answers(sub: Submit) -> bool:
    conn = cb.connection(sub.user, sub.session, sub.config)
    return cb.http_status(f"http://{conn['host']}:{conn['port']}/api/status",
                          token=conn["password"]) == 200


def run_single(config: str, series: Series) -> None:
    sub = Submit(U1, config, "node1")
    sub.run()
    if sub.ready():
        series.add(sub.t1 - sub.t0)
    else:
        series.fail(sub.error())
    cancel([sub])


def run_burst(config: str) -> dict:
    subs = [Submit((U1, U2)[i % 2], config, node)
            for node in cb.NODES for i in range(BURST_PER_NODE)]
    threads = [threading.Thread(target=s.run) for s in subs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ready = [s for s in subs if s.ready()]
    placed = sum(cb.job_node(s.job) == s.node for s in ready)
    reached = sum(answers(s) for s in ready)
    out = {"count": len(subs), "ready": len(ready), "placed": placed, "reached": reached,
           "first": min((s.t1 - t0 for s in ready), default=None),
           "last": max((s.t1 - t0 for s in ready), default=None),
           "last_by_node": {n: max((s.t1 - t0 for s in ready if s.node == n), default=None)
                            for n in cb.NODES},
           "errors": [s.error() for s in subs if not s.ready()]}
    say(f"  burst: {len(ready)}/{len(subs)} ready, last after {bl.fmt(out['last'])}; cancelling")
    out["gone"] = cancel(subs)
    return out


def run_hub(runs: int, spawn: Series, stop: Series) -> None:
    env = hub_bed.hub_env()
    site = cb.write_config(f'{PORTS}[image]\nname = "{env["HUB_IMAGE"]}"\n'
                           f'store = "{env["HUB_STORE"]}"\n')
    workdir = tempfile.mkdtemp(prefix="hub-bench-", dir=cb.CONFIGS)
    hub = cb.ClusterHub(site, workdir=workdir, host="login",
                        extra_config='c.SHJupyterSpawner.req_nodelist = "node2"\n'
                                     'c.SHJupyterSpawner.req_cpus = 1\n')
    os.chmod(workdir, 0o700)
    try:
        hub.start()
        for i in range(runs + 1):  # the first is a warm-up
            events, took = hub.spawn(U1)
            ok = bool(events) and events[-1].get("ready")
            job = (hub.server(U1).get("state") or {}).get("job_id", "")
            if i:
                spawn.add(took) if ok else spawn.fail(json.dumps(events[-1:]))
            t0 = time.monotonic()
            hub.api("DELETE", f"users/{U1}/server")
            bed.wait_for(lambda: not hub.server(U1), 120, "the hub to forget the server")
            if job:
                bed.wait_for(lambda j=job: cb.job_state(j) not in ("RUNNING", "COMPLETING"),
                             120, f"job {job} to end", interval=0.2)
            if i:
                stop.add(time.monotonic() - t0)
    finally:
        hub.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs of (i) and (iii)")
    args = parser.parse_args()
    problems = cb.missing()
    if problems:
        raise SystemExit("cluster bed incomplete (testbed/provision --cluster): "
                         + "; ".join(problems))
    config = cb.write_config(PORTS)
    single, spawn, stop = Series(SINGLE), Series(HUB), Series(HUB_STOP)
    load0 = os.getloadavg()
    say("warm-up (not counted)")
    run_single(config, Series(SINGLE))
    for i in range(args.runs):
        say(f"single {i + 1}")
        run_single(config, single)
    say("burst")
    burst = run_burst(config)
    say("single after the burst")
    run_single(config, single)
    say("hub")
    run_hub(args.runs, spawn, stop)

    last_ok = None if burst["last"] is None or not single.median() or \
        burst["ready"] < burst["count"] else burst["last"] <= BURST_RATIO_TARGET * single.median()
    rows = [
        ["sessions ready", f"{burst['ready']}/{burst['count']}", f"all {burst['count']}"],
        ["on the node asked for", f"{burst['placed']}/{burst['ready']}", "all"],
        ["URL answers from login (with the token)", f"{burst['reached']}/{burst['ready']}",
         "all"],
        ["first ready after", bl.fmt(burst["first"]), "informational"],
        *[[f"last ready on {n} after", bl.fmt(v), "informational"]
          for n, v in burst["last_by_node"].items()],
        ["last ready after (from the first submit)", bl.fmt(burst["last"]),
         f"<= {BURST_RATIO_TARGET:.0f}x one session's (i) "
         f"({bl.ratio(burst['last'], single.median())}): {bl.verdict(last_ok)}"],
        ["scancel of all to every container gone", bl.fmt(burst["gone"]), "informational"],
    ]
    text = ["## Across the cluster (login, node1, node2; testbed/cluster)\n",
            f"{bl.machine_note()}. The three hosts share this machine's cores. Load average "
            f"before: {load0[0]:.2f}. Jobs ask for `{' '.join(ARGS)}`; (i) {len(single.values)} "
            "runs (the last right after the burst), one warm-up not counted.\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows([single, spawn, stop], single)),
            f"### (ii) {burst['count']} sessions submitted at once from login "
            f"({BURST_PER_NODE} per node, both users on both nodes)\n",
            bl.table(("measure", "value", "target"), rows)]
    failures = [f"- {s.name}: {why}" for s in (single, spawn, stop) for why in s.failures]
    failures += [f"- burst: {e}" for e in burst["errors"]]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    bl.write_result("cluster", "\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
