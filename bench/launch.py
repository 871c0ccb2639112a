#!/opt/sh-jupyter/venv/bin/python
"""Launcher benchmark (issue "launcher"): time from launch to connection-ready, as shjuser1.

Variants, interleaved in every run (the order rotates from run to run):
  (s) stock floor: as (a), but of the stock-JupyterLab baseline image (bench/stock: the same
      versions installed the plain way, started with `jupyter lab`), built into the shared
      store first if it is missing or stale;
  (a) floor: a bare `podman run -d` of the same container the launcher creates (same image,
      mounts, read-only root with tmpfs, published port, JUPYTER_TOKEN, jupyter command line,
      the OCI runtime the supervisor would choose: a config's podman.runtime picks another),
      from Popen until `GET /api` answers 200, polled every 10 ms;
  (b) Open OnDemand style: the same container, ready at the first TCP connect (probed every
      0.5 s, as OOD's `wait_until_port_used`) plus `sleep 2` (a typical after.sh);
  (c) `sh-jupyter run --local`, from Popen until connection.yml exists (polled every 5 ms).
Then the supervisor's peak RSS (VmHWM, followed through teardown) and its CPU time over an idle
stretch of a running session.

Run as root: `/opt/sh-jupyter/venv/bin/python bench/launch.py [--runs N] [--idle-seconds S]`.
Measurements only: targets are reported next to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Sequence

import benchlib as bl
from benchlib import Series, bed, say

USER = bed.USERS[0]
STOCK_FLOOR = "(s) stock floor: stock JupyterLab image, bare `podman run -d` until GET /api = 200"
FLOOR = "(a) floor: bare `podman run -d` until GET /api = 200"
OOD = "(b) OOD-style: TCP probe every 0.5 s + sleep 2"
OOD_USABLE = "(b) OOD-style, until JupyterLab really answers (informational)"
LAUNCHER = "(c) `sh-jupyter run --local` until connection.yml"
FLOOR_RUNC = "(a-runc) floor (a) under runc"
LAUNCHER_RUNC = "(c-runc) launcher (c) with podman.runtime = \"runc\""
RSS_TARGET_MB = 60
CPU_TARGET_S = 0.3
RATIO_TARGET = 1.10
STOCK_RATIO_TARGET = 0.65


# -- the container of (a) and (b): the launcher's own spec, as podman CLI options ------------
def container_argv(config: str, name: str, port: int, scratch_id: str,
                   extra: Sequence[str] = (), args: Sequence[str] = ()) -> tuple[list[str], str]:
    """`podman run -d` options for the container sh-jupyter would create, and its scratch dir.

    Built from the supervisor's own create spec (sh_jupyter.benchmarking) so the floor runs the
    same container
    (minus the session's labels' meaning): every field is translated; one the translation does
    not know is reported, never silently dropped. A variant may add `podman run` options (`extra`,
    before the image) and JupyterLab options (`args`, after the launcher's own).
    """
    from sh_jupyter import benchmarking

    podman_version = bed.versions()["PODMAN_VERSION"]
    pw = pwd.getpwnam(USER)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ulimits = () if hard == resource.RLIM_INFINITY else (("nofile", soft, hard),)
    mounts = benchmarking.session_mounts(config, USER, pw.pw_dir, pw.pw_uid, scratch_id)
    scratch = ""
    for m in mounts:
        if m.create:
            out = bed.as_user(USER, ["mkdir", "-p", "-m", "0700", "--", m.source])
            if out.returncode != 0:
                raise RuntimeError(f"mkdir {m.source}: {out.stderr.strip()}")
        if m.ephemeral:
            scratch = m.source
    present = {m.source for m in mounts if os.path.isdir(m.source)}
    kw = benchmarking.create_spec(config, USER, pw.pw_dir, pw.pw_uid, scratch_id, port, ulimits,
                                  present, podman_version, bed.user_env(USER), "TOKEN-FROM-ENV")
    kw["name"] = name
    argv = ["--read-only", "--read-only-tmpfs=false"] if kw.pop("read_only") else []
    argv += ["--name", kw.pop("name"), "-w", kw.pop("working_dir")]
    for key, value in kw.pop("environment").items():
        # The token reaches podman through its environment, never its argv.
        argv += ["-e", key] if key == "JUPYTER_TOKEN" else ["-e", f"{key}={value}"]
    for key, value in kw.pop("labels").items():
        argv += ["--label", f"bench.{key}={value}"]  # not mistaken for a session
    for key, value in kw.pop("annotations", {}).items():
        argv += ["--annotation", f"{key}={value}"]
    for m in kw.pop("mounts"):
        if m["type"] == "tmpfs":
            argv += ["--tmpfs", f"{m['target']}:rw,mode={m['mode']}"]
        else:
            argv += ["--mount", f"type=bind,source={m['source']},target={m['target']}"
                     + (",ro=true" if m["read_only"] else "")]
    argv += [f"--cap-drop={c}" for c in kw.pop("cap_drop")]
    argv += [f"--cap-add={c}" for c in kw.pop("cap_add")]
    if kw.pop("no_new_privileges"):
        argv += ["--security-opt", "no-new-privileges"]
    argv += ["--pids-limit", str(kw.pop("pids_limit")), "--shm-size", kw.pop("shm_size"),
             "--stop-signal", str(kw.pop("stop_signal")),
             "--stop-timeout", str(kw.pop("stop_timeout"))]
    argv += [f"--device={d}" for d in kw.pop("devices")]
    argv += [f"--ulimit={u['Name']}={u['Soft']}:{u['Hard']}" for u in kw.pop("ulimits")]
    network = kw.pop("network_mode")
    options = kw.pop("network_options", {}).get(network)
    argv += ["--network", f"{network}:{','.join(options)}" if options else network]
    for spec, (addr, host_port) in kw.pop("ports", {}).items():
        argv += ["-p", f"{addr}:{host_port}:{spec}"]
    image, command = kw.pop("image"), kw.pop("command")
    if kw:
        say(f"WARNING: floor container ignores launcher options {sorted(kw)}")
    return [*argv, *extra, image, *command, *args], scratch


def runtime_of(config: str):
    """The OCI runtime the supervisor would choose for this config on this node (its
    `podman.runtime` setting and the node's facts), so a floor runs under the same one."""
    from sh_jupyter import benchmarking

    return benchmarking.runtime_choice(config)


class Floor:
    """One bare container run as the user: started, probed, removed.

    `extra` are more `podman run` options, `args` more JupyterLab options (see container_argv).
    """

    def __init__(self, config: str, extra: Sequence[str] = (), args: Sequence[str] = ()) -> None:
        self.name = f"shj-bench-{uuid.uuid4().hex[:12]}"
        self.port = bl.free_port()
        self.token = secrets.token_urlsafe(32)
        opts, self.scratch = container_argv(config, self.name, self.port, str(uuid.uuid4()),
                                            extra, args)
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        # The sessions' own storage (podman.graphroot), where bed.podman (remove) looks too.
        self.argv = [runuser, "-u", USER, "--", "podman", "--runtime",
                     runtime_of(config).runtime, "--storage-opt",
                     f"additionalimagestore={bed.STORE}", "--root", bed.graphroot(USER),
                     "run", "-d", *opts]
        self.env = bed.user_env(USER, {"JUPYTER_TOKEN": self.token})
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        bl.CLEANUP.containers.append((USER, self.name))
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd="/tmp",
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return t0

    def failed(self) -> str:
        if self.proc is not None and self.proc.poll() not in (None, 0):
            return f"podman run exited {self.proc.returncode}: {self.proc.stderr.read()!r}"
        return ""

    def api_answers(self) -> bool:
        from sh_jupyter import benchmarking

        return benchmarking.api_answers("127.0.0.1", self.port, "/", timeout=2.0)

    def tcp_connects(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0):
                return True
        except OSError:
            return False

    def remove(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        bed.podman(USER, "rm", "-f", "-t", "0", self.name, timeout=120)
        bl.CLEANUP.containers.remove((USER, self.name))
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def run_floor(config: str, series: Series, started: list[float], timeout: float = 180,
              extra: Sequence[str] = (), args: Sequence[str] = ()) -> None:
    floor = Floor(config, extra, args)
    try:
        t0 = floor.start()
        returned = None
        while True:
            if returned is None and floor.proc.poll() == 0:
                returned = time.monotonic() - t0
            if floor.api_answers():
                series.add(time.monotonic() - t0)
                if returned is not None:
                    started.append(returned)
                return
            if why := floor.failed():
                series.fail(why)
                return
            if time.monotonic() - t0 > timeout:
                series.fail(f"no answer after {timeout:.0f} s")
                return
            time.sleep(0.010)
    finally:
        floor.remove()


def run_ood(config: str, series: Series, usable: Series, answered: list[bool],
            timeout: float = 180) -> None:
    floor = Floor(config)
    try:
        t0 = floor.start()
        while not floor.tcp_connects():
            if why := floor.failed():
                series.fail(why)
                return
            if time.monotonic() - t0 > timeout:
                series.fail(f"port not open after {timeout:.0f} s")
                return
            time.sleep(0.5)
        time.sleep(2)
        series.add(time.monotonic() - t0)
        answered.append(floor.api_answers())  # would Connect have worked at that moment?
        while not answered[-1] and not floor.api_answers():  # when it would have worked
            if time.monotonic() - t0 > timeout:
                usable.fail(f"no answer after {timeout:.0f} s")
                return
            time.sleep(0.010)
        usable.add(time.monotonic() - t0)
    finally:
        floor.remove()


def run_launcher(config: str, series: Series, hwm: list[int],
                 phases: list[dict[str, float]]) -> None:
    run = bl.launch_local(USER, config)
    if run.seconds is None:
        series.fail(run.error)
    else:
        series.add(run.seconds)
    peak, _code = bl.end_session(run.session)
    if peak and run.seconds is not None:
        hwm.append(peak)
        phases.append(run.phases())


def idle_session(config: str, idle: float) -> dict:
    """One session left idle: CPU of the supervisor (and its Podman service) over `idle` s,
    then the peak RSS of both, followed through teardown."""
    run = bl.launch_local(USER, config)
    out: dict = {"error": run.error}
    try:
        if run.seconds is None:
            return out
        time.sleep(2)  # let the session settle after connection.yml appears
        sup = run.session.supervisor_pid()
        svc = bl.podman_service_of(sup)
        c0, s0 = bl.cpu_seconds(sup), bl.cpu_seconds(svc) if svc else None
        say(f"  idle session: sampling CPU over {idle:.0f} s")
        time.sleep(idle)
        c1, s1 = bl.cpu_seconds(sup), bl.cpu_seconds(svc) if svc else None
        out["cpu"] = None if c0 is None or c1 is None else c1 - c0
        out["svc_cpu"] = None if s0 is None or s1 is None else s1 - s0
        out["svc_hwm"] = bl.status_kb(svc, "VmHWM") if svc else None
    finally:
        out["hwm"], _code = bl.end_session(run.session)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--idle-seconds", type=float, default=60,
                        help="idle stretch over which the supervisor's CPU is measured (0: skip)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unrecorded rounds first (page cache, pause process)")
    args = parser.parse_args()
    config = bl.write_config()
    stock_config = bl.image_config(bl.STOCK_IMAGE, bl.STOCK_COMMAND)
    runc_config = bl.write_config(f'{bl.CONFIG_TEXT}[podman]\nruntime = "runc"\n')
    stock_why = bl.ensure_stock_image()
    stock, floor, ood, launcher = Series(STOCK_FLOOR), Series(FLOOR), Series(OOD), Series(LAUNCHER)
    ood_usable = Series(OOD_USABLE)
    floor_runc, launcher_runc = Series(FLOOR_RUNC), Series(LAUNCHER_RUNC)
    answered: list[bool] = []
    hwm: list[int] = []
    started: list[float] = []  # (a): when `podman run -d` returned
    phases: list[dict[str, float]] = []  # (c): milestones of the supervisor's log
    load0 = os.getloadavg()
    # One entry per variant (its series and how to measure one run of it): add rows here.
    steps = {FLOOR: (floor, lambda s: run_floor(config, s, started)),
             OOD: (ood, lambda s: run_ood(config, s, ood_usable if s is ood
                                          else Series(OOD_USABLE), answered)),
             LAUNCHER: (launcher, lambda s: run_launcher(config, s, hwm, phases)),
             # The same two under runc, side by side (crun is the default where it runs).
             FLOOR_RUNC: (floor_runc, lambda s: run_floor(runc_config, s, [])),
             LAUNCHER_RUNC: (launcher_runc, lambda s: run_launcher(runc_config, s, [], []))}
    if stock_why:
        stock.fail(stock_why)
    else:
        steps[STOCK_FLOOR] = (stock, lambda s: run_floor(stock_config, s, []))
    for i in range(args.warmup + args.runs):
        warm = i < args.warmup
        say(f"{'warm-up' if warm else 'run'} {i + 1 - (0 if warm else args.warmup)}")
        for name in bl.rotated(list(steps), i):
            series, step = steps[name]
            target = Series(name) if warm else series
            step(target)
            if target.values:
                say(f"  {name}: {target.values[-1]:.3f} s")
        if warm:
            for kept in (answered, hwm, started, phases):
                kept.clear()
    idle = idle_session(config, args.idle_seconds) if args.idle_seconds > 0 else {}
    if idle.get("hwm"):
        hwm.append(idle["hwm"])

    lm, fm, om, sm = launcher.median(), floor.median(), ood.median(), stock.median()
    ratio_ok = None if lm is None or fm is None else lm <= RATIO_TARGET * fm
    stock_ok = None if lm is None or sm is None else lm <= STOCK_RATIO_TARGET * sm
    ahead = None if lm is None or om is None else lm < om
    targets = {LAUNCHER: f"median <= {STOCK_RATIO_TARGET:.2f}x (s): {bl.verdict(stock_ok)} "
               f"({bl.ratio(lm, sm)}); <= {RATIO_TARGET:.2f}x floor (a): "
               f"{bl.verdict(ratio_ok)}; well ahead of (b): {bl.verdict(ahead)} "
               f"({fmt_gap(om, lm)})"}
    text = ["## Launcher: launch to connection-ready (as shjuser1)\n",
            f"{bl.machine_note()}. {args.runs} runs, variants interleaved (order rotated), "
            f"{args.warmup} warm-up round(s) not counted. Load average before: "
            f"{load0[0]:.2f}.\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows([stock, floor, ood, ood_usable, launcher,
                                                           floor_runc, launcher_runc],
                                                          floor, targets)),
            "(s) is the same JupyterLab installed the plain way (bench/stock/Containerfile), "
            "run like (a); (a) is our image; \"ratio to floor\" is to (a). (a) and (c) run "
            f"under {runtime_of(config).runtime} (what the supervisor chooses here); the -runc "
            "rows are the same under runc (which drops the user's groups), in the same rounds."
            f" {runc_note(floor, floor_runc, launcher, launcher_runc)}\n"]
    if answered:
        text.append(f"(b) declared ready while JupyterLab did not yet answer `GET /api` "
                    f"(a portal's \"Proxy Error\"): {answered.count(False)}/{len(answered)}. "
                    "Rootless port forwarding accepts TCP connections as soon as the port is "
                    "published, before JupyterLab listens, so (b) is about \"published + 0.5 s "
                    "+ 2 s\" whatever JupyterLab does; its informational row is the later of "
                    "that and JupyterLab's first answer.\n")
    text.append(phase_table(floor, launcher, started, phases))
    text.append(resource_table(hwm, idle, args.idle_seconds))
    failures = [f"- {s.name}: {why}" for s in (stock, floor, ood, ood_usable, launcher,
                                               floor_runc, launcher_runc)
                for why in s.failures]
    if idle.get("error"):
        failures.append(f"- idle session: {idle['error']}")
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    bl.write_result("launch", "\n".join(text))
    return 0


def runc_note(floor: Series, floor_runc: Series, launcher: Series,
              launcher_runc: Series) -> str:
    """crun against runc, floor and launcher, as ratios of medians from the same rounds."""
    return (f"Under runc: floor {bl.ratio(floor_runc.median(), floor.median())}, launcher "
            f"{bl.ratio(launcher_runc.median(), launcher.median())} of the same under the default.")


def fmt_gap(ood: float | None, launcher: float | None) -> str:
    if ood is None or launcher is None:
        return "n/a"
    gap = ood - launcher
    return f"{bl.ratio(launcher, ood)} of (b), {abs(gap):.2f} s " \
        + ("earlier" if gap >= 0 else "later")


def phase_table(floor: Series, launcher: Series, started: list[float],
                phases: list[dict[str, float]]) -> str:
    """Where the time goes: medians of milestones, each from the Popen (informational)."""
    def med(values: list[float]) -> str:
        return bl.fmt(statistics.median(values)) if values else "n/a"

    def of(key: str) -> list[float]:
        return [p[key] for p in phases if key in p]

    rows = [["supervisor's first log line (interpreter, imports, config)", "n/a",
             med(of("first"))],
            ["container created and started (`podman run -d` returned / the supervisor's "
             "\"container started\" line)", med(started), med(of("started"))],
            ["JupyterLab answers (floor) / supervisor logs Running", bl.fmt(floor.median()),
             med(of("running"))],
            ["connection.yml exists (the measured launch time)", "n/a",
             bl.fmt(launcher.median())]]
    return ("### Where the time goes (medians, seconds from Popen; informational)\n\n"
            + bl.table(("milestone", "(a) floor", "(c) launcher"), rows)
            + "\nThe supervisor's milestones come from the millisecond stamps of its own log.\n")


def resource_table(hwm: list[int], idle: dict, idle_s: float) -> str:
    rows = []
    if hwm:
        peak_mb = [k / 1024 for k in hwm]
        rows.append(["supervisor peak RSS (VmHWM at session end)",
                     f"median {statistics.median(peak_mb):.1f} MB, max {max(peak_mb):.1f} MB "
                     f"({len(hwm)} sessions)",
                     f"<= {RSS_TARGET_MB} MB: {bl.verdict(max(peak_mb) <= RSS_TARGET_MB)}"])
    cpu = idle.get("cpu")
    if cpu is not None:
        per_min = cpu * 60 / idle_s
        rows.append([f"supervisor CPU (utime+stime) over {idle_s:.0f} s idle",
                     f"{cpu:.2f} s ({per_min:.2f} s per minute)",
                     f"<= {CPU_TARGET_S} s per idle minute: {bl.verdict(per_min <= CPU_TARGET_S)}"])
    if idle.get("svc_cpu") is not None:
        rows.append([f"its `podman system service`: CPU over {idle_s:.0f} s idle",
                     f"{idle['svc_cpu']:.2f} s", "informational"])
    if idle.get("svc_hwm"):
        rows.append(["its `podman system service`: VmHWM after the idle stretch",
                     f"{idle['svc_hwm'] / 1024:.1f} MB", "informational"])
    if not rows:
        return "No resource figures (no session reached ready).\n"
    return "### Supervisor resources\n\n" + bl.table(("measure", "value", "target"), rows)


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
