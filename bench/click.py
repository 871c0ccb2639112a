#!/opt/sh-jupyter/venv/bin/python
"""Connect click to a cell's output in headless Chromium, ours against a bare `podman run`.

What a user feels, from the moment they press Connect until a notebook answers them, in one
run, as shjuser1, the two variants interleaved (the order rotates from round to round, after
a warm-up round that is not counted), a fresh browser profile every time:
  ours:  a real session through Slurm (`sh-jupyter submit --wait`, already Running); the
         browser opens its job card (the form packaging/ondemand/jupyter_app/view.html.erb
         renders: the password POSTed as `password` and `token` to JupyterLab's login page,
         `next` the lab, a new tab) and the clock starts at the click on "Connect to
         JupyterLab". The card's form goes to JupyterLab directly, not through a portal's
         node proxy: the floor has none either;
  floor: a bare `podman run -d` of our image as the user (bench/launch.py's floor: the very
         container a session runs, the token in JUPYTER_TOKEN), answering `GET /api`; the
         clock starts at the navigation to /lab?token=....
Then, the same in both (bench/click.js, Debian's Chromium through playwright-core): the lab
shell, the splash gone, the launcher's notebook tile clicked, the new notebook's editor, its
kernel idle, `print(6 * 7)` typed and run (Shift+Enter), and the clock stops when an output
area shows 42. Milestones on the way explain the gap. Both variants share the user's
persistent directory (/mnt/jupyter_host): each run starts with no saved workspace (the
user's own is set aside for the benchmark and put back after it), and what a run created in
it (the notebook, the workspace) is removed after the run.

Run as root: `/opt/sh-jupyter/venv/bin/python bench/click.py [--runs N]` (testbed step 70
installs the browser). Measurements only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import benchlib as bl
import yaml
from benchlib import Series, bed, say
from launch import Floor

from slurm import Submission

USER = bed.USERS[0]
DRIVER = os.path.join(bl.REPO, "bench", "click.js")
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
CHROMIUM = "/usr/bin/chromium"
# Both cores of the test VM, as the floor has them (a job's cpuset is what it asked for).
SUBMIT_ARGS = ("--cpus", "2", "--memory", "4", "--time", "30")
CONFIG = (f"{bl.CONFIG_TEXT}[session]\n"
          f'sessions_dir = "{{home}}/{bl.SESSIONS}"\n')
PERSIST_TARGET = "/mnt/jupyter_host"
CODE, EXPECT = "print(6 * 7)", "42"
STEP_TIMEOUT_MS = 60_000
ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BROWSER_TIMEOUT = 300.0
READY_TIMEOUT = 180.0
OURS = "ours: the card's Connect click (a session through Slurm) to the cell's output"
FLOOR = "floor: bare `podman run -d`, navigation to /lab?token= to the cell's output"
# The driver's milestones, in the order they happen (the first three only behind the card).
MARKS = ("login sent", "login answered", "tab opened", "lab page requested",
         "lab page answered", "lab page parsed",
         "lab shell visible", "splash gone", "launcher shown", "notebook open",
         "kernel socket opened", "kernel idle", "cell run", "cell output")


@dataclass
class Figures:
    """One variant: the click-to-output series and each milestone's seconds, run by run."""

    total: Series
    marks: list[dict[str, float]] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the last good run's requests

    def record(self, result: dict) -> None:
        if result.get("ok"):
            marks = {k: v / 1000 for k, v in result["marks"].items()}
            self.total.add(marks["cell output"])
            self.marks.append(marks)
            self.requests.append(int(result.get("requests", 0)))
            self.paths = [ID_RE.sub("{id}", p) for p in result.get("paths", [])]
        else:
            self.total.fail(result.get("error") or "the browser gave no reason")

    def median(self, mark: str) -> float | None:
        values = [m[mark] for m in self.marks if mark in m]
        return statistics.median(values) if values else None

    def segment(self, mark: str) -> float | None:
        """Median time from the milestone reached just before this one (in each run) to it."""
        values = []
        for m in self.marks:
            if mark not in m:
                continue
            before = [v for v in m.values() if v < m[mark]]
            values.append(m[mark] - (max(before) if before else 0.0))
        return statistics.median(values) if values else None


# -- the job card ---------------------------------------------------------------------------
def card_page(port: int, password: str) -> bytes:
    """The card's Connect as view.html.erb renders it, its form aimed at JupyterLab itself."""
    base = f"http://127.0.0.1:{port}/"
    secret = html.escape(password, quote=True)
    return ("<!doctype html><html><head><title>My Interactive Sessions</title></head><body>"
            '<div class="card-body"><div class="sh-jupyter-connect">'
            f'<form action="{html.escape(base)}login" method="post" target="_blank" '
            'rel="noopener noreferrer">'
            f'<input type="hidden" name="password" value="{secret}">'
            f'<input type="hidden" name="token" value="{secret}">'
            '<input type="hidden" name="next" value="/lab">'
            '<button class="btn btn-primary" type="submit">Connect to JupyterLab</button>'
            "</form></div></div></body></html>").encode()


class _CardHandler(BaseHTTPRequestHandler):
    server: _CardServer

    def log_message(self, *_args) -> None:
        pass

    def do_GET(self) -> None:
        found = self.path == "/"
        body = self.server.page if found else b"not here"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _CardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, page: bytes) -> None:
        self.page = page
        super().__init__(("127.0.0.1", 0), _CardHandler)


@contextlib.contextmanager
def card_served(page: bytes) -> Iterator[str]:
    """The card on loopback (a portal's page, outside the clock) for as long as the run."""
    server = _CardServer(page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- the browser ------------------------------------------------------------------------------
SCREENSHOTS: list[str] = []  # --screenshots DIR: where a failed run leaves its tab's picture


def browse(mode: str, url: str, secret: str) -> dict:
    """One run of click.js; the job (with a URL that may carry the token) goes on its stdin,
    and the secret is blanked out of anything it says."""
    job = {"mode": mode, "url": url, "code": CODE, "expect": EXPECT,
           "timeoutMs": STEP_TIMEOUT_MS}
    if SCREENSHOTS:
        job["screenshot"] = os.path.join(SCREENSHOTS[0], f"click-{mode}-{uuid.uuid4().hex[:8]}.png")
    try:
        out = subprocess.run(["node", DRIVER], input=json.dumps(job), capture_output=True,
                             text=True, timeout=BROWSER_TIMEOUT, check=False, cwd="/tmp",
                             env={**os.environ, "NODE_PATH": BROWSER_MODULES})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the browser did not finish in {BROWSER_TIMEOUT:.0f} s"}
    lines = out.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"ok": False, "error": f"click.js exited {out.returncode}: "
                                        f"{bl.tail(out.stderr)}"}
    error = str(result.get("error", "")).replace(secret, "<secret>")
    if error and result.get("waiting"):
        error = f"waiting for {result['waiting']}: {error}"
    result["error"] = error
    return result


# -- the user's persistent directory ----------------------------------------------------------
class Home:
    """The directory both variants mount at /mnt/jupyter_host: JupyterLab restores the saved
    workspace from it and puts a new notebook in it, so each run must start from the same
    state there."""

    def __init__(self, config: str) -> None:
        from sh_jupyter import benchmarking

        pw = pwd.getpwnam(USER)
        mounts = benchmarking.session_mounts(config, USER, pw.pw_dir, pw.pw_uid, "bench")
        self.root = next(m.source for m in mounts if m.target == PERSIST_TARGET)
        self.workspaces = os.path.join(self.root, ".jupyter", "lab", "workspaces")
        self.saved = self.workspaces + ".shj-bench-saved"
        self.had = False
        self.back = False

    def set_aside(self) -> None:
        """The user's saved workspaces out of the lab's sight until put_back."""
        if os.path.isdir(self.saved):
            raise RuntimeError(f"{self.saved} exists (a killed run's): move it back to "
                               f"{self.workspaces} first")
        self.had = os.path.isdir(self.workspaces)
        if self.had:
            os.rename(self.workspaces, self.saved)
        bl.CLEANUP.first.append(self.put_back)

    def put_back(self) -> None:
        """Idempotent (the end of main and the cleanup both call it)."""
        if self.back:
            return
        self.back = True
        if os.path.isdir(self.saved) or not self.had:
            shutil.rmtree(self.workspaces, ignore_errors=True)
        if os.path.isdir(self.saved):
            os.rename(self.saved, self.workspaces)

    def listing(self) -> set[str]:
        found = set()
        for top, dirs, files in os.walk(self.root):
            found |= {os.path.join(top, name) for name in dirs + files}
        return found

    def remove_new(self, before: set[str]) -> None:
        """Remove what appeared since `before` (files first, then the emptied directories)."""
        new = sorted(self.listing() - before, key=len, reverse=True)
        for path in new:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


# -- the variants -----------------------------------------------------------------------------
def connection(session_dir: str) -> tuple[int, str]:
    """Port and password from the session's connection.yml (what the portal's card reads)."""
    with open(os.path.join(session_dir, "connection.yml"), encoding="utf-8") as fh:
        conn = yaml.safe_load(fh)
    return int(conn["port"]), str(conn["password"])


def run_ours(config: str, figures: Figures, home: Home, jobs: list[str]) -> None:
    before = home.listing()
    sub = Submission(USER, config, SUBMIT_ARGS)
    try:
        sub.wait()
        if not sub.ready():
            figures.total.fail(sub.error())
            return
        port, password = connection(sub.session_dir)
        with card_served(card_page(port, password)) as url:
            figures.record(browse("card", url, password))
    finally:
        sub.cancel()
        if sub.job_id:
            jobs.append(sub.job_id)
        if sub.session_id:
            bed.wait_for(lambda: bl.container_gone(USER, sub.container()), 120,
                         f"{sub.container()} removal", interval=0.2)
        if sub.session_dir:
            shutil.rmtree(sub.session_dir, ignore_errors=True)
        home.remove_new(before)


def run_floor(config: str, figures: Figures, home: Home) -> None:
    before = home.listing()
    floor = Floor(config)
    try:
        floor.start()

        def answers() -> bool:
            if why := floor.failed():
                raise RuntimeError(why)
            return floor.api_answers()

        try:
            bed.wait_for(answers, READY_TIMEOUT, "the bare container's GET /api", interval=0.05)
        except (AssertionError, RuntimeError) as exc:
            figures.total.fail(str(exc))
            return
        figures.record(browse("lab", f"http://127.0.0.1:{floor.port}/lab?token={floor.token}",
                              floor.token))
    finally:
        floor.remove()
        home.remove_new(before)


def leftovers(jobs: list[str]) -> list[str]:
    """What the benchmark started that still exists: any container of the user's of either
    kind, any of our jobs not ended."""
    left = [f"container {name}" for prefix in ("epcc-ces-jupyter", "shj-bench-")
            for name in bed.containers_of(USER, prefix)]
    # The user's default storage too (the floor's before bench/launch.py named the sessions').
    out = bed.as_user(USER, ["podman", "ps", "-a", "--format", "{{.Names}}"])
    left += [f"container {name} (default storage)" for name in out.stdout.split()
             if name.startswith(("epcc-ces-jupyter", "shj-bench-"))]
    left += [f"job {job} {state}" for job in jobs
             if (state := bed.job_state(job)) in bl.ACTIVE]
    return left


# -- the report -------------------------------------------------------------------------------
def report(runs: int, ours: Figures, floor: Figures, left: list[str], load0: float) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value * 1000:.0f} ms"

    def diff(a: float | None, b: float | None) -> str:
        return "" if a is None or b is None else f"{(a - b) * 1000:+.0f} ms"

    rows = [[mark, ms(ours.median(mark)), ms(floor.median(mark)),
             diff(ours.median(mark), floor.median(mark)), ms(ours.segment(mark)),
             ms(floor.segment(mark))] for mark in MARKS
            if ours.median(mark) is not None or floor.median(mark) is not None]
    requests = [f"{statistics.median(f.requests):.0f}" if f.requests else "n/a"
                for f in (ours, floor)]
    only_ours = sorted((Counter(ours.paths) - Counter(floor.paths)).elements())
    only_floor = sorted((Counter(floor.paths) - Counter(ours.paths)).elements())
    text = ["## Connect click to a cell's output, in Chromium (as shjuser1)\n",
            f"{bl.machine_note()}. {runs} runs, variants interleaved (order rotated), one "
            f"warm-up round not counted. Load average before: {load0:.2f}. The session asks "
            f"for `{' '.join(SUBMIT_ARGS)}`; the floor is the same container started with "
            "`podman run -d`. Headless Chromium (a fresh profile each run) through "
            f"playwright-core; the cell is `{CODE}`, done when an output area shows "
            f"`{EXPECT}`.\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows([ours.total, floor.total],
                                                       floor.total)),
            "### Milestones (medians; ours from the click, the floor from the navigation)\n",
            bl.table(["milestone", "ours", "floor", "ours - floor", "ours: since the "
                      "previous", "floor: since the previous"], rows),
            f"Requests the browser made after the clock started (median): ours {requests[0]}, "
            f"floor {requests[1]}. Ours opens a new tab with a POST to `/login` (302 to "
            "`/lab`); the floor loads `/lab?token=` in the page it has. Requests of the last "
            "run only ours made: " + (", ".join(f"`{p}`" for p in only_ours) or "none")
            + "; only the floor made: " + (", ".join(f"`{p}`" for p in only_floor) or "none")
            + ".\n",
            "Left behind after the last run (containers of the user, our jobs not ended): "
            + (", ".join(left) if left else "nothing") + ".\n"]
    failures = [f"- {s.name}: {why}" for s in (ours.total, floor.total) for why in s.failures]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    return "\n".join(text)


def missing_browser() -> list[str]:
    return [p for p in ("/usr/bin/node", CHROMIUM, os.path.join(BROWSER_MODULES,
                                                                 "playwright-core"))
            if not os.path.exists(p)]


def main(args: argparse.Namespace) -> int:
    if absent := missing_browser():
        say(f"missing {absent}: run testbed/provision 70")
        return 2
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
        SCREENSHOTS.append(os.path.abspath(args.screenshots))
    config = bl.write_config(CONFIG)
    home = Home(config)
    home.set_aside()
    jobs: list[str] = []
    ours, floor = Figures(Series(OURS)), Figures(Series(FLOOR))

    load0 = os.getloadavg()[0]
    say("warm-up (not counted)")
    run_ours(config, Figures(Series(OURS)), home, jobs)
    run_floor(config, Figures(Series(FLOOR)), home)
    steps = {"ours": lambda: run_ours(config, ours, home, jobs),
             "floor": lambda: run_floor(config, floor, home)}
    for i in range(args.runs):
        say(f"run {i + 1}")
        for name in bl.rotated(list(steps), i):
            steps[name]()
        say(bl.round_line({"ours": ours.total, "floor": floor.total}))
    home.put_back()
    bl.write_result("click", report(args.runs, ours, floor, leftovers(jobs), load0))
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="keep a picture of the tab of every failed run in DIR")
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    raise SystemExit(bl.main_wrapper(lambda: main(options)))
