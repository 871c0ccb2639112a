"""JupyterHub on the test bed as the spawner tests run it: configurable-http-proxy and the hub,
on this machine, with the dummy authenticator and sh-jupyter's spawner (testbed/steps/
80-jupyterhub.sh installs them; these helpers start them for a test module and stop them).

The proxy runs on its own (the hub does not start it), as sites run it for restarts without
downtime: a hub restart then leaves every route, and every server, in place. The public side
is loopback; the hub's own API listens on this host's address, because the single-user server
in a slirp4netns container reaches the host only there (the host's loopback is not the
container's).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bed

HUB_ENV = "/var/lib/sh-jupyter-testbed/hub.env"
JUPYTERHUB = f"{bed.VENV}/bin/jupyterhub"
PASSWORD_FIELD = "HUB_PASSWORD"
# What each server's job asks Slurm for (bench/peer.py gives batchspawner the same).
CPUS, MEMORY_GIB, WALLTIME = 1, 1, "30"


def hub_env() -> dict[str, str]:
    """What step 80 recorded (image, store, versions, the proxy's path)."""
    out = {}
    with open(HUB_ENV, encoding="utf-8") as fh:
        for line in fh:
            if "=" in line and not line.startswith("#"):
                key, _, value = line.strip().partition("=")
                out[key] = value
    return out


def host_address() -> str:
    """This host's own IPv4 address (not loopback, not a container bridge)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        name, addr = parts[1], parts[3].split("/")[0]
        if not name.startswith(("cni-", "podman", "docker", "virbr", "veth")):
            return addr
    raise AssertionError(f"no global IPv4 address on this host:\n{out}")


def connect_host(host: str) -> str:
    """How the session's container reaches a hub on this very host. Under pasta (Podman 5) the
    container carries the node's own address, so that address is the container itself; Podman
    maps host.containers.internal to the host instead. slirp4netns reaches the host's address."""
    from sh_jupyter.container.podman_args import pasta_installed
    from sh_jupyter.container.spec import network_mode

    mode = network_mode("auto", bed.versions()["PODMAN_VERSION"], pasta_installed(os.environ))
    return "host.containers.internal" if mode == "pasta" else host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, token: str = "", body: dict | None = None,
         timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answers(url: str, token: str = "") -> bool:
    """True when GET url answers 200 (False on any connection trouble)."""
    try:
        return http("GET", url, token, timeout=10)[0] == 200
    except OSError:
        return False


SHIM = """#!/bin/sh
# squeue as the hub sees it: the real one, except that a job-state query fails once after the
# test creates {flag} (a scheduler that errors once); every such query is counted in {calls}.
case " $* " in *" --version "*) exec /usr/bin/squeue "$@" ;; esac  # a state query fails, not this
echo x >> {calls}
if rm {flag} 2>/dev/null; then
    echo "squeue: error: slurm_load_jobs error: Unable to contact slurm controller" >&2
    exit 1
fi
exec /usr/bin/squeue "$@"
"""


@dataclass
class Hub:
    """configurable-http-proxy plus JupyterHub with the sh-jupyter spawner, in a root-only
    directory (config, database, cookie secret, logs). Another spawner: a subclass with its
    own `_spawner_config()` (and `jupyterhub`, the hub command of the venv that has it)."""

    site_config: str
    poll_interval: int = 5
    extra_config: str = ""
    jupyterhub: str = JUPYTERHUB
    log_level: str = "DEBUG"
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="shj-hub-"))
    host: str = field(default_factory=host_address)
    public_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))  # the tests' service
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # dummy auth
    proxy_token: str = field(default_factory=lambda: secrets.token_hex(32))
    proxy: subprocess.Popen | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        os.chmod(self.workdir, 0o700)
        self.shim_dir = os.path.join(self.workdir, "bin")
        os.mkdir(self.shim_dir)
        self.fail_flag = os.path.join(self.workdir, "squeue-fail-once")
        self.shim_calls = os.path.join(self.workdir, "squeue-calls")
        shim = os.path.join(self.shim_dir, "squeue")
        with open(shim, "w", encoding="utf-8") as fh:
            fh.write(SHIM.format(flag=self.fail_flag, calls=self.shim_calls))
        os.chmod(shim, 0o755)
        self.log_path = os.path.join(self.workdir, "hub.log")
        self.config = os.path.join(self.workdir, "jupyterhub_config.py")
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write(self._config())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def hub_url(self) -> str:
        return f"http://{self.host}:{self.hub_port}"

    def _config(self) -> str:
        return f"{self._common_config()}{self._spawner_config()}{self.extra_config}\n"

    def _common_config(self) -> str:
        """Everything but the spawner: authenticator, ports, proxy, database, the tests'
        service and its token, the poll interval."""
        users = list(bed.USERS)
        return f"""# Written by tests/hub_bed.py
c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {self.password!r}
c.Authenticator.allowed_users = set({users!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.public_port}
c.JupyterHub.hub_bind_url = {self.hub_url!r}
c.JupyterHub.hub_connect_url = {self.hub_url!r}
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.JupyterHub.cleanup_servers = False
# A spawn request answers at once (202) and progress follows, however fast the spawn is
# (slow_spawn_timeout is a tornado setting, not a JupyterHub trait).
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.workdir}/jupyterhub_cookie_secret"
c.JupyterHub.log_level = {self.log_level!r}
c.JupyterHub.services = [{{"name": "tester", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
    "scopes": ["admin:users", "admin:servers", "admin:server_state", "read:servers",
               "access:servers", "read:users"]}}]
c.Spawner.poll_interval = {self.poll_interval}
c.Spawner.poll_jitter = 0
"""

    def _spawner_config(self) -> str:
        return f"""c.JupyterHub.spawner_class = "sh-jupyter"
c.Spawner.hub_connect_url = "http://{connect_host(self.host)}:{self.hub_port}"  # from containers
c.SHJupyterSpawner.config_file = {self.site_config!r}
c.SHJupyterSpawner.req_cpus = {CPUS}
c.SHJupyterSpawner.req_memory_gib = {MEMORY_GIB}
c.SHJupyterSpawner.req_walltime = {WALLTIME!r}
c.SHJupyterSpawner.start_timeout = 180
c.SHJupyterSpawner.http_timeout = 60
"""

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{self.shim_dir}:{os.path.dirname(self.jupyterhub)}:/usr/local/sbin:"
                        "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8", "HOME": "/root", "SLURM_CONF": bed.SLURM_CONF,
                "CONFIGPROXY_AUTH_TOKEN": self.proxy_token}

    def start(self) -> None:
        """The proxy (once) and the hub; returns when the hub answers through the proxy."""
        if self.proxy is None:
            chp = hub_env()["CHP"]
            log = open(os.path.join(self.workdir, "proxy.log"), "ab")  # noqa: SIM115
            self.proxy = subprocess.Popen(
                [chp, "--ip", "127.0.0.1", "--port", str(self.public_port),
                 "--api-ip", "127.0.0.1", "--api-port", str(self.api_port),
                 "--default-target", self.hub_url, "--error-target", f"{self.hub_url}/hub/error",
                 "--log-level", "warn"],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
            log.close()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the hub owns it while it runs
        self.proc = subprocess.Popen([self.jupyterhub, "-f", self.config], env=self._env(),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        log.close()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited ({self.proc.returncode}):\n"
                                     f"{self.log()[-4000:]}")
            with contextlib.suppress(OSError):
                return http("GET", f"{self.url}/hub/api", timeout=5)[0] == 200
            return False
        try:
            bed.wait_for(up, 90, "JupyterHub to answer through its proxy", interval=0.2)
        except AssertionError as exc:
            proxy_log = Path(self.workdir, "proxy.log")
            tail = proxy_log.read_text(errors="replace")[-1500:] if proxy_log.exists() else ""
            raise AssertionError(f"{exc}\nhub log:\n{self.log()[-3000:]}\nproxy log:\n{tail}") \
                from None

    def stop_hub(self) -> None:
        """Stop the hub only (SIGTERM, as an admin's restart does); the proxy keeps routing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop_hub()
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        self.proxy = None

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def api(self, method: str, path: str, body: dict | None = None,
            timeout: float = 30) -> tuple[int, dict]:
        status, data = http(method, f"{self.url}/hub/api/{path.lstrip('/')}", self.token,
                            body, timeout)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {"raw": data.decode("utf-8", "replace")}

    def server(self, user: str) -> dict:
        """The user's default server as the hub's REST API shows it ({} when none)."""
        status, model = self.api("GET", f"users/{user}")
        assert status == 200, model
        return model.get("servers", {}).get("", {})

    def progress(self, user: str, timeout: float = 240) -> Iterator[dict]:
        """The spawn's progress events (the hub's event stream) until ready or failed."""
        req = urllib.request.Request(f"{self.url}/hub/api/users/{user}/server/progress",
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return

    def spawn(self, user: str) -> tuple[list[dict], float]:
        """Start the user's server through the REST API; its progress events and how long
        the spawn took until the hub said ready (or failed)."""
        began = time.monotonic()
        status, body = self.api("POST", f"users/{user}/server")
        assert status in (201, 202), (status, body)
        events = [] if status == 201 else list(self.progress(user))
        return events, time.monotonic() - began

    def fail_squeue_once(self) -> None:
        with open(self.fail_flag, "w", encoding="utf-8"):
            pass

    def squeue_calls(self) -> int:
        try:
            with open(self.shim_calls, encoding="utf-8") as fh:
                return len(fh.readlines())
        except FileNotFoundError:
            return 0


def singleuser_process(user: str) -> tuple[int, dict[str, str]]:
    """The user's jupyterhub-singleuser process (in the container, as the user on the host)
    and its environment, read as root."""
    uid = pwd.getpwnam(user).pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if not any(a.endswith(b"jupyterhub-singleuser") for a in argv):
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(e.decode("utf-8", "replace").partition("=")[::2]
                           for e in fh.read().split(b"\0") if b"=" in e)
            return int(pid), env
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    raise AssertionError(f"no jupyterhub-singleuser process of {user}")
