"""The launcher against real rootless Podman and the real image, as an unprivileged user."""

from __future__ import annotations

import http.cookiejar
import json
import os
import pwd
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile

import pytest

import lab

import bed

USER = bed.USERS[0]
PORTS = (31000, 31999)


def config_text(**over: str) -> str:
    """A site config for tests: defaults, a private port range, and the given overrides."""
    sections: dict[str, dict[str, str]] = {
        "network": {"port_min": str(PORTS[0]), "port_max": str(PORTS[1])},
        "session": {"health_interval": "5"},
    }
    for dotted, value in over.items():
        section, key = dotted.split("__")
        sections.setdefault(section, {})[key] = value
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def session(testbed):
    """A running session; always torn down, and proven gone, at the end."""
    started = []

    def start(cfg: str | None = None, env: dict[str, str] | None = None,
              wrapper: tuple[str, ...] = ()) -> bed.Session:
        s = bed.start_session(USER, bed.write_config(cfg or config_text()), env=env,
                              wrapper=wrapper)
        started.append(s)
        return s

    yield start
    for s in started:
        s.terminate()
        s.wait_exit(30)
        assert s.container() not in bed.containers_of(USER)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _opener() -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                       _NoRedirect()), jar


def _status(opener, req) -> int:
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _form_login(port: int, password: str) -> tuple[int, str]:
    opener, jar = _opener()
    _status(opener, f"http://127.0.0.1:{port}/login")
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    data = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/login?next=%2Flab", data=data)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "") or ""


def _api(port: int, token: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def kernel_exec(s: bed.Session, port: int, token: str, code: str) -> str:
    """Run code in a kernel started by JupyterLab itself, and return what it printed."""
    kernel = _api(port, token, "POST", "/api/kernels", {"name": "python3"})
    client = (
        "import sys\n"
        "from jupyter_client import BlockingKernelClient\n"
        "c = BlockingKernelClient(connection_file=sys.argv[1]); c.load_connection_file()\n"
        "c.start_channels(); c.wait_for_ready(timeout=60)\n"
        "out = []\n"
        "def hook(m):\n"
        "    if m['msg_type'] == 'stream': out.append(m['content']['text'])\n"
        "    if m['msg_type'] == 'error': out.append('ERROR ' + m['content']['evalue'])\n"
        "c.execute_interactive(sys.argv[2], output_hook=hook, timeout=120)\n"
        "print(''.join(out), end='')\n"
    )
    conn = f"/tmp/jupyter-runtime/kernel-{kernel['id']}.json"
    bed.wait_for(lambda: bed.podman(USER, "exec", s.container(), "test", "-e", conn)
                 .returncode == 0, 30, "the kernel's connection file")
    out = bed.podman(USER, "exec", s.container(), "python", "-c", client, conn, code,
                     timeout=180)
    assert out.returncode == 0, out.stderr
    _api(port, token, "DELETE", f"/api/kernels/{kernel['id']}")
    return out.stdout


def test_session_logs_in_by_token_and_by_password_and_is_private(session):
    s = session()
    conn = s.wait_ready()
    port, secret = int(conn["port"]), conn["password"]
    status = s.status()
    assert status["phase"] == "Running" and not status["failed"]
    assert status["message"] == f"JupyterLab is running in Podman container {s.container()}"
    assert status["port"] == port and PORTS[0] <= port <= PORTS[1]
    assert s.container() in bed.containers_of(USER)

    opener, jar = _opener()
    assert _status(opener, f"http://127.0.0.1:{port}/lab?token={secret}") == 200
    assert any(c.name.startswith("username-") for c in jar), "token login set no session cookie"
    assert _status(opener, f"http://127.0.0.1:{port}/api/status") == 200
    assert _form_login(port, secret) == (302, "/lab")
    assert _form_login(port, secret[::-1])[0] == 401

    # The secret is not in the log; files are private (what another user can reach, argv
    # and environments included, is tests/security/test_secrets.py).
    assert secret not in s.log()
    assert bed.mode_of(s.session_dir) == 0o700
    assert bed.mode_of(os.path.join(s.session_dir, "connection.yml")) == 0o600
    assert bed.mode_of(os.path.join(s.session_dir, "status.json")) == 0o600


def test_network_mode_follows_the_podman_version(session):
    """podman.network = "auto" (the default) gives Podman's own rootless default: slirp4netns
    on Podman 4 (Debian 12), pasta on Podman 5 (Debian 13, where the bed installs passt); a
    configured mode wins (on Podman 5: the deprecated slirp4netns still works)."""
    versions = bed.versions()
    major = int(versions["PODMAN_MAJOR"])
    cases = [("auto", "pasta" if major >= 5 else "slirp4netns")]
    if major >= 5:
        cases.append(('"slirp4netns"', "slirp4netns"))
    for setting, want in cases:
        over = {} if setting == "auto" else {"podman__network": setting}
        s = session(config_text(**over))
        conn = s.wait_ready()
        out = bed.podman(USER, "inspect", "--format", "{{.HostConfig.NetworkMode}}",
                         s.container())
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want, (setting, out.stdout)
        # The version the supervisor read from its API service is the installed one.
        assert f"podman {versions['PODMAN_VERSION']}, network {want}" in s.log()
        opener, _ = _opener()
        assert _status(opener, f"http://127.0.0.1:{conn['port']}/api") == 200
        s.terminate()
        assert s.wait_exit(30) == 0


def test_notebook_in_safe_outputs_is_owned_by_the_user(session):
    s = session()
    conn = s.wait_ready()
    port, secret = int(conn["port"]), conn["password"]
    name = f"nb-{s.session_id[:8]}.ipynb"
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    _api(port, secret, "PUT", f"/api/contents/safe_outputs/{USER}/{name}",
         {"type": "notebook", "format": "json", "content": nb})
    host_path = f"/safe_outputs/{USER}/{name}"
    try:
        assert os.stat(host_path).st_uid == pwd.getpwnam(USER).pw_uid
        # The file browser reaches every mount.
        listing = _api(port, secret, "GET", "/api/contents/")
        names = {item["name"] for item in listing["content"]}
        assert {"safe_data", "safe_outputs", "scratch", "mnt"} <= names
    finally:
        os.unlink(host_path)


def _probe_wheel(directory: str, marker: str) -> str:
    path = os.path.join(directory, "shjprobe-1.0-py3-none-any.whl")
    files = {
        "shjprobe/__init__.py": f"MARKER = {marker!r}\n",
        "shjprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: shjprobe\n"
                                           "Version: 1.0\n",
        "shjprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + "shjprobe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr("shjprobe-1.0.dist-info/RECORD", record)
    return path


def test_pip_install_persists_and_kernel_sees_the_proxy(session):
    pw = pwd.getpwnam(USER)
    persist = os.path.join(pw.pw_dir, ".local/share/ondemand/apps/jupyter_app")
    marker = f"m{time.time_ns()}"
    proxy = "http://proxy.invalid:3128"
    s1 = session(env={"https_proxy": proxy, "NO_PROXY": "localhost"})
    conn = s1.wait_ready()
    wheel = _probe_wheel(persist, marker)
    os.chown(wheel, pw.pw_uid, pw.pw_gid)
    out = kernel_exec(s1, int(conn["port"]), conn["password"],
                      "import os, subprocess, sys\n"
                      "print('proxy=' + os.environ.get('https_proxy', ''))\n"
                      "print('noproxy=' + os.environ.get('NO_PROXY', ''))\n"
                      "print('token=' + str('JUPYTER_TOKEN' in os.environ))\n"
                      "r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index',"
                      " '--no-deps', '--force-reinstall', "
                      "'/mnt/jupyter_host/shjprobe-1.0-py3-none-any.whl'],"
                      " capture_output=True, text=True)\n"
                      "print('pip=' + str(r.returncode), r.stderr[-500:])\n")
    assert f"proxy={proxy}" in out and "noproxy=localhost" in out
    assert "token=False" in out, "the kernel inherited the session secret"
    assert "pip=0" in out, out
    installed = os.path.join(persist, ".local/lib")
    assert any("shjprobe" in dirs for _, dirs, _ in os.walk(installed))
    s1.terminate()
    assert s1.wait_exit(15) == 0

    s2 = session()
    conn = s2.wait_ready()
    out = kernel_exec(s2, int(conn["port"]), conn["password"],
                      "import shjprobe; print(shjprobe.MARKER, shjprobe.__file__)")
    assert marker in out and "/mnt/jupyter_host/.local/" in out


def test_terminal_runs_commands_without_the_secret_and_xsrf_stays_on(session):
    """A terminal made through the REST API (as JupyterLab's Terminal menu does) runs commands
    in the trimmed image, without inheriting the secret; a browser session (the token login's
    cookie) cannot POST without the _xsrf token. The extension manager is the read-only one."""
    s = session()
    conn = s.wait_ready()
    port, secret = int(conn["port"]), conn["password"]
    opener, jar = _opener()
    with opener.open(f"http://127.0.0.1:{port}/lab?token={secret}", timeout=10) as resp:
        page = resp.read().decode()
    assert '"extensionManager": {"can_install": false' in page, "not the read-only manager"
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    url = f"http://127.0.0.1:{port}/api/terminals"
    assert _status(opener, urllib.request.Request(url, data=b"", method="POST")) == 403
    req = urllib.request.Request(url, data=b"", method="POST", headers={"X-XSRFToken": xsrf})
    with opener.open(req, timeout=30) as resp:
        name = json.loads(resp.read())["name"]
    assert name in {t["name"] for t in _api(port, secret, "GET", "/api/terminals")}
    out = lab.run_in_terminal(port, secret, name,
                              'echo "token=${JUPYTER_TOKEN:-absent} sum=$((6*7))"', "sum=42")
    assert "token=absent sum=42" in out, out
    _api(port, secret, "DELETE", f"/api/terminals/{name}")
    assert name not in {t["name"] for t in _api(port, secret, "GET", "/api/terminals")}


def test_session_starts_under_a_low_open_files_limit(session):
    """Slurm propagates the submit host's limits; containers.conf's default_ulimits (20000
    here) above the job's hard limit must not stop the container."""
    s = session(wrapper=("prlimit", "--nofile=4096:4096", "--"))
    s.wait_ready()
    out = bed.podman(USER, "exec", s.container(), "sh", "-c", "ulimit -Hn")
    assert out.stdout.strip() == "4096", out.stdout + out.stderr


def _session_files(s: bed.Session) -> list[str]:
    """What the session keeps in the user's runtime dir (its API socket and the service log)."""
    directory = f"/run/user/{pwd.getpwnam(USER).pw_uid}/sh-jupyter"
    return [n for n in (os.listdir(directory) if os.path.isdir(directory) else [])
            if n.startswith(s.session_id[:8])]


def _api_service_pids(s: bed.Session) -> list[int]:
    marker = f"/sh-jupyter/{s.session_id[:8]}.sock".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"system\0service" in argv and marker in argv:
            pids.append(int(pid))
    return pids


def test_a_running_session_holds_no_api_service_and_outlives_the_api_timeout(session):
    """While JupyterLab runs the supervisor follows conmon, not the Podman API: no service,
    no socket, no log of it; health checks go on past the API timeout; the end is clean."""
    s = session(config_text(podman__api_timeout="5"))
    conn = s.wait_ready()
    # Running is recorded first; the service is stopped (and its socket and log removed) next.
    bed.wait_for(lambda: _api_service_pids(s) == [] and _session_files(s) == [], 15,
                 "the API service, its socket and its log to be gone while the session runs")
    ready = bed.iso_time(s.status()["ready_at"])
    bed.wait_for(lambda: s.status().get("checked_at")
                 and bed.iso_time(s.status()["checked_at"]) >= ready + 10, 30,
                 "health checks over two API timeouts")
    assert s.proc.poll() is None and s.status()["phase"] == "Running"
    opener, _ = _opener()
    assert _status(opener, f"http://127.0.0.1:{conn['port']}/lab?token={conn['password']}") \
        == 200
    s.terminate()
    assert s.wait_exit(15) == 0
    assert s.container() not in bed.containers_of(USER)
    assert _api_service_pids(s) == [] and _session_files(s) == []


def test_shutdown_from_jupyterlab_ends_the_supervisor_cleanly(session):
    s = session()
    conn = s.wait_ready()
    _api(int(conn["port"]), conn["password"], "POST", "/api/shutdown")
    assert s.wait_exit(30) == 0
    assert s.container() not in bed.containers_of(USER)
    status = s.status()
    assert status["phase"] == "Completed" and not status["failed"], status
    assert "scratch" in s.log() and not os.path.exists(
        f"/var/tmp/sh-jupyter/{USER}/scratch/{s.session_id}")


def test_sigterm_removes_the_container_within_10_s(session):
    s = session()
    s.wait_ready()
    start = time.monotonic()
    s.terminate()
    assert s.wait_exit(10) == 0
    bed.wait_for(lambda: s.container() not in bed.containers_of(USER),
                 max(0.1, 10 - (time.monotonic() - start)), "container removal")
    status = s.status()
    assert status["phase"] == "Completed" and status["reason"] == "cancelled (SIGTERM)"


def _failed(s: bed.Session, within: float) -> dict:
    assert s.wait_exit(within) == 3, s.log()
    status = s.status()
    assert status["phase"] == "Completed" and status["failed"], status
    assert not os.path.exists(os.path.join(s.session_dir, "connection.yml"))
    assert s.container() not in bed.containers_of(USER)
    return status


def test_missing_image_fails_fast_with_reason(session):
    s = session(config_text(image__name='"localhost/sh-jupyter/absent:1"'))
    status = _failed(s, 20)
    assert "localhost/sh-jupyter/absent:1 is not in the image store" in status["reason"]


def test_missing_required_mount_fails_fast_with_reason(session):
    cfg = config_text() + ('[[mounts]]\nsource = "/nonexistent-{user}"\ntarget = "/data"\n')
    status = _failed(session(cfg), 20)
    assert f"required mount source /nonexistent-{USER}" in status["reason"]


def _busy_port_before_a_free_one() -> socket.socket:
    """A listening socket on a port of this tier's range whose next port is free: the
    kernel's ephemeral ports (bind to 0) may have their neighbour taken by any connection."""
    for port in range(31500, 31998, 2):
        busy = socket.socket()
        try:
            busy.bind(("0.0.0.0", port))
            with socket.socket() as probe:
                probe.bind(("0.0.0.0", port + 1))
        except OSError:
            busy.close()
            continue
        busy.listen()
        return busy
    raise AssertionError("no free pair of ports in 31500-31999")


def test_occupied_ports_are_skipped_and_exhaustion_fails_fast(session):
    with _busy_port_before_a_free_one() as busy:
        port = busy.getsockname()[1]
        full = session(config_text(network__port_min=str(port), network__port_max=str(port)))
        assert f"no free port: tried [{port}]" in _failed(full, 20)["reason"]

        ok = session(config_text(network__port_min=str(port), network__port_max=str(port + 1),
                                 network__port_attempts="2"))
        assert int(ok.wait_ready()["port"]) == port + 1


def test_jupyter_that_exits_at_start_fails_fast_with_its_output(session):
    s = session(config_text(image__command='["sh", "-c", "echo boom-$0; exit 7"]'))
    reason = _failed(s, 20)["reason"]
    assert "exited during start-up (status 7)" in reason and "boom-" in reason


def test_jupyter_that_never_answers_fails_at_the_connection_timeout(session):
    s = session(config_text(image__command='["sh", "-c", "sleep 600"]',
                            session__connection_timeout="10"))
    start = time.monotonic()
    reason = _failed(s, 40)["reason"]
    assert "did not answer within the connection timeout" in reason
    assert time.monotonic() - start >= 10


@pytest.mark.parametrize(("cfg", "field"), [
    ("[session]\nconnection_timeout = -1\n", "session.connection_timeout"),
    ("[sessoin]\n", "sessoin"),
    ("[[mounts]]\nsource = \"/x/{nope}\"\ntarget = \"/x\"\n", "mounts[0].source"),
])
def test_invalid_config_exits_2_and_starts_nothing(testbed, cfg, field):
    path = bed.write_config(cfg)
    before = bed.containers_of(USER)
    out = bed.as_user(USER, [bed.SH, "--config", path, "run", "--local"])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and path in lines[0], out.stderr
    assert bed.containers_of(USER) == before


API_RUN = ("import sys\n"
           "from sh_jupyter import run\n"
           "sys.exit(run(local=True, config=sys.argv[1], session_dir=sys.argv[2], "
           "session_id=sys.argv[3]))\n")


def test_api_run_keeps_the_wait_in_its_callers_process(testbed):
    """`api.run` inside a launcher's own program: that process is not ours to replace, so
    the wait stays in it (no exec), its health checks go on, and a SIGTERM still ends
    everything."""
    pw = pwd.getpwnam(USER)
    sid = str(uuid.uuid4())
    session_dir = os.path.join(pw.pw_dir, "shj-test-sessions", sid)
    log_path = os.path.join(bed.shared_tempdir(), "output.log")
    with open(log_path, "wb") as log:
        proc = bed.popen_as_user(USER, [bed.PYTHON, "-c", API_RUN,
                                        bed.write_config(config_text()), session_dir, sid],
                                 stdout=log, stderr=subprocess.STDOUT)
    s = bed.Session(USER, sid, session_dir, proc, log_path)
    try:
        s.wait_ready()
        pid = s.supervisor_pid()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().rstrip(b"\0").split(b"\0")
        assert b"(idle)" not in argv and argv[-1] == sid.encode(), argv
        first = s.status().get("checked_at")
        bed.wait_for(lambda: s.status().get("checked_at") not in (None, first), 30,
                     "a health check in the caller's process")
    finally:
        s.terminate()
        assert s.wait_exit(30) == 0, s.log()
    assert s.container() not in bed.containers_of(USER)
    assert s.status()["reason"] == "cancelled (SIGTERM)"
    assert not os.path.exists(bed.scratch_dir(USER, sid))
