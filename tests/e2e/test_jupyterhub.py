"""The JupyterHub spawner end to end, with real parts only: JupyterHub from PyPI and
configurable-http-proxy from npm on this machine (tests/hub_bed.py), the dummy authenticator,
sessions through the real Slurm cluster and rootless Podman, jupyterhub-singleuser in the real
image, and headless Chromium.

The tests of one hub run in order on the servers the earlier ones started (a spawn costs a job
and a container start): log in and run a cell; where the token is not; a scheduler error; a hub
restart; an external scancel; a REST spawn and stop; then a second hub with a broken image.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

import lab

import bed
import hub_bed

U1, U2 = bed.USERS
REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "e2e" / "browser" / "hub.js"
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
ARTIFACTS = REPO / "test-artifacts"
SLURM_STATE = "/var/lib/sh-jupyter-testbed/slurm/ctld"
PORTS = "[network]\nport_min = 34000\nport_max = 34999\n"


def site_config(image: str, store: str) -> str:
    return bed.write_config(f'{PORTS}[image]\nname = "{image}"\nstore = "{store}"\n')


@pytest.fixture(scope="module")
def hubenv(testbed) -> dict[str, str]:
    missing = [p for p in (hub_bed.HUB_ENV, hub_bed.JUPYTERHUB, "/usr/bin/chromium",
                           f"{BROWSER_MODULES}/playwright-core") if not os.path.exists(p)]
    if missing:
        pytest.fail(f"missing {missing}: run testbed/provision (steps 50, 70 and 80)")
    return hub_bed.hub_env()


@pytest.fixture(scope="module")
def hub(hubenv, jobs):
    h = hub_bed.Hub(site_config(hubenv["HUB_IMAGE"], hubenv["HUB_STORE"]))
    try:
        h.start()
        yield h
    finally:
        h.close()


def state_of(hub: hub_bed.Hub, user: str, jobs: list[str]) -> dict:
    """The spawner's state as the hub stores it (admin:server_state); records its job."""
    state = hub.server(user).get("state") or {}
    if state.get("job_id") and state["job_id"] not in jobs:
        jobs.append(state["job_id"])
    return state


def followers(user: str) -> list[int]:
    """The spawner's user-side `sh-jupyter wait` processes still running for `user`."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"wait" in argv and b"--no-scheduler" in argv:
                    found.append(int(pid))
        except OSError:
            continue
    return found


def prefixes(messages: list[str]) -> list[str]:
    """The spawner's steps in the order shown (Queued/Starting/Running), repeats folded."""
    out: list[str] = []
    for message in messages:
        step = message.split(":", 1)[0]
        if step in ("Queued", "Starting", "Running") and (not out or out[-1] != step):
            out.append(step)
    return out


def test_the_spawner_is_registered_and_the_hub_matches_the_image(hubenv):
    (point,) = importlib.metadata.entry_points(group="jupyterhub.spawners", name="sh-jupyter")
    assert point.value == "sh_jupyter.jupyterhub:SHJupyterSpawner"
    assert point.load().__name__ == "SHJupyterSpawner"
    import jupyterhub

    assert jupyterhub.__version__ == hubenv["JUPYTERHUB_VERSION"]
    out = bed.as_user(U1, ["podman", "--storage-opt",
                           f"additionalimagestore={hubenv['HUB_STORE']}", "image", "inspect",
                           "--format", '{{index .Labels "sh-jupyter.jupyterhub-version"}}',
                           hubenv["HUB_IMAGE"]])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == jupyterhub.__version__


def test_log_in_start_the_server_and_run_a_cell_in_a_browser(hub, jobs):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterhub-lab.png"
    browser = subprocess.run(["node", str(DRIVER), hub.url, U1, str(shot)],
                             capture_output=True, text=True, check=False, timeout=400,
                             env={**os.environ, "NODE_PATH": BROWSER_MODULES,
                                  hub_bed.PASSWORD_FIELD: hub.password})
    state = state_of(hub, U1, jobs)
    assert browser.returncode == 0, browser.stderr + hub.log()[-3000:]
    result = json.loads(browser.stdout.strip().splitlines()[-1])
    assert result["landed"].startswith(f"{hub.url}/user/{U1}/lab"), result
    assert result["shell"] and result["output"] == "42", result
    kernel_sockets = [s for s in result["sockets"]
                      if s.startswith(f"/user/{U1}/api/kernels/") and s.endswith("/channels")]
    assert kernel_sockets and not result["socketErrors"], result
    # The spawn page shows the progress events in order; it reloads into the server as soon as
    # the last one arrives, so a fast spawn may leave too little time to see "Running" drawn
    # (the REST test checks the whole event stream).
    seen = prefixes(result["progress"])
    assert seen and seen == ["Queued", "Starting", "Running"][:len(seen)], result
    bed.wait_for(lambda: not followers(U1), 10, "the spawner's user-side follower to end")

    # The hub keeps only the job and the session, and the job is the user's own session.
    assert set(state) == {"job_id", "session_id"}, state
    job, session_id = state["job_id"], state["session_id"]
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%u %j %T"], capture_output=True,
                         text=True, check=False)
    assert out.stdout.split() == [U1, "jupyter_app", "RUNNING"]
    name = f"epcc-ces-jupyter-{session_id}"
    assert name in bed.containers_of(U1)
    inspect = bed.podman(U1, "inspect", name)
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)[0]
    host = info["HostConfig"]
    # The same hardening and mounts as any session.
    assert host["ReadonlyRootfs"] and "no-new-privileges" in " ".join(host["SecurityOpt"])
    assert {m["Destination"] for m in info["Mounts"]} >= {"/safe_data", "/safe_outputs",
                                                          "/scratch", "/mnt/jupyter_host"}
    assert "jupyterhub-singleuser" in info["Config"]["Cmd"]
    assert info["Config"]["Labels"]["sh-jupyter.job-id"] == job


def _files_with(user: str, token: str, roots: list[str]) -> list[str]:
    """Files `user` can read that contain the token (the token goes in on stdin)."""
    scan = r"""
import os, sys
token = sys.stdin.read().encode()
for root in sys.argv[1:]:
    for base, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 20_000_000:
                    continue
                with open(path, "rb") as fh:
                    if token in fh.read():
                        print(path)
            except OSError:
                pass
"""
    out = bed.as_user(user, ["/usr/bin/python3", "-c", scan, *roots], input=token,
                      timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_token_is_nowhere_but_in_the_servers_environment(hub, jobs):
    state = state_of(hub, U1, jobs)
    job, session_id = state["job_id"], state["session_id"]
    pid, env = hub_bed.singleuser_process(U1)
    token = env.get("JUPYTERHUB_API_TOKEN", "")
    assert len(token) >= 32, f"no hub token in the server's environment (pid {pid})"

    leaks = []
    for proc in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as fh:
                if token.encode() in fh.read():
                    leaks.append(f"argv of pid {proc}")
        except OSError:
            pass
    for argv in (["scontrol", "show", "job", "-dd", job],
                 ["scontrol", "write", "batch_script", job, "-"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert out.returncode == 0 and out.stdout.strip(), (argv, out.stderr)
        if token in out.stdout:
            leaks.append(" ".join(argv))
    saved = glob.glob(f"{SLURM_STATE}/hash.*/job.{job}/*")
    assert saved, f"slurmctld keeps no files for job {job} under {SLURM_STATE}"
    for path in saved:  # the job's script and its sbatch environment
        if token.encode() in Path(path).read_bytes():
            leaks.append(path)
    supervisor = bed.supervisor_of(U1, session_id)
    assert supervisor is not None
    if token.encode() in Path(f"/proc/{supervisor}/environ").read_bytes():
        leaks.append("the supervisor's (the job's) environment")
    session_dir = os.readlink(f"/proc/{supervisor}/cwd")
    assert not os.path.exists(os.path.join(session_dir, "launch-env.json"))
    for path in (p for p in Path(session_dir).rglob("*") if p.is_file()):
        if token.encode() in path.read_bytes():
            leaks.append(path)
    if token in hub.log():
        leaks.append("the hub's log (DEBUG)")
    if token.encode() in Path(hub.workdir, "jupyterhub.sqlite").read_bytes():
        leaks.append("the hub's database (spawner state)")
    leaks += _files_with(U2, token, ["/tmp", "/var/tmp", "/dev/shm", "/run", "/home",
                                     "/var/log", "/var/spool", "/var/lib/sh-jupyter-testbed",
                                     "/etc", "/opt/sh-jupyter", "/safe_data", "/safe_outputs"])
    assert not leaks, leaks


def test_a_scheduler_error_does_not_drop_the_server(hub, jobs):
    job = state_of(hub, U1, jobs)["job_id"]
    hub.fail_squeue_once()
    bed.wait_for(lambda: not os.path.exists(hub.fail_flag), 3 * hub.poll_interval + 10,
                 "the hub's next poll to meet the failing squeue", interval=0.2)
    failed_at = hub.squeue_calls()
    bed.wait_for(lambda: f"job {job} state unknown" in hub.log(), 10,
                 "the spawner to log the unknown state")
    # One more poll, this time answered: the server is still there, untouched.
    bed.wait_for(lambda: hub.squeue_calls() > failed_at, 3 * hub.poll_interval + 10,
                 "the next poll", interval=0.2)
    server = hub.server(U1)
    assert server.get("ready") and server["state"]["job_id"] == job, server
    status, _ = hub_bed.http("GET", f"{hub.url}/user/{U1}/api/status", hub.token)
    assert status == 200
    assert bed.job_state(job) == "RUNNING"
    assert f"job {job} ended" not in hub.log()


def test_the_server_survives_a_hub_restart(hub, jobs):
    before = state_of(hub, U1, jobs)
    hub.stop_hub()
    # The proxy routes on while the hub is down: the server still answers.
    status, body = hub_bed.http("GET", f"{hub.url}/user/{U1}/api")
    assert status == 200 and b"version" in body
    hub.start()
    server = hub.server(U1)
    assert server.get("ready") and server["state"] == before, server
    out = lab.run_in_kernel(hub.public_port, hub.token, "print(6 * 7)",
                            base_url=f"/user/{U1}/")
    assert out == "42\n"
    mine = subprocess.run(["squeue", "-h", "-u", U1, "-n", "jupyter_app", "-o", "%i"],
                          capture_output=True, text=True, check=False).stdout.split()
    assert mine == [before["job_id"]]


def test_an_external_scancel_is_seen_within_the_poll_interval(hub, jobs):
    state = state_of(hub, U1, jobs)
    name = f"epcc-ces-jupyter-{state['session_id']}"
    out = bed.as_user(U1, ["scancel", state["job_id"]])
    assert out.returncode == 0, out.stderr
    # poll_interval, plus one scheduler question and the supervisor's teardown.
    bed.wait_for(lambda: not hub.server(U1), 2 * hub.poll_interval + 15,
                 "the hub to notice the cancelled job", interval=0.5)
    assert f"job {state['job_id']} ended" in hub.log()
    bed.wait_for(lambda: name not in bed.containers_of(U1), 30, f"{name} removal")


def test_a_rest_spawn_reports_progress_and_stop_ends_the_job(hub, jobs):
    events, _took = hub.spawn(U2)
    state = state_of(hub, U2, jobs)
    assert events and events[-1].get("ready"), events
    messages = [e.get("message", "") for e in events]
    assert prefixes(messages) == ["Queued", "Starting", "Running"], messages
    name = f"epcc-ces-jupyter-{state['session_id']}"
    assert name in bed.containers_of(U2)
    status, _ = hub_bed.http("GET", f"{hub.url}/user/{U2}/api/status", hub.token)
    assert status == 200

    status, body = hub.api("DELETE", f"users/{U2}/server", timeout=180)
    assert status in (202, 204), body
    bed.wait_for(lambda: not hub.server(U2), 180, "the hub to stop the server", interval=0.5)
    # stop() returned only once Slurm finished the job, epilog included.
    assert bed.job_state(state["job_id"]) not in bed.LIVE
    assert name not in bed.containers_of(U2)


def test_a_broken_image_fails_the_spawn_at_once_with_the_reason(hubenv, jobs):
    broken = hub_bed.Hub(site_config("localhost/sh-jupyter/no-such-image:latest",
                                     hubenv["HUB_STORE"]))
    try:
        broken.start()
        events, _took = broken.spawn(U2)
        assert events and events[-1].get("failed"), events
        assert "no-such-image:latest is not in the image store" in events[-1]["message"], events
        assert not broken.server(U2)
        assert "Traceback" not in broken.log()  # a spawn failure, not a hub error
    finally:
        broken.close()

    def live_jobs() -> list[str]:
        return subprocess.run(["squeue", "-h", "-u", U2, "-t", "PD,CF,R", "-o", "%i"],
                              capture_output=True, text=True, check=False).stdout.split()
    bed.wait_for(lambda: not live_jobs(), 30, f"no job of {U2} left running or queued")
    bed.wait_for(lambda: not followers(U2), 10, "the spawner's user-side follower to end")
    assert bed.containers_of(U2) == []
