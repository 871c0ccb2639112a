"""The cluster bed as tests see it (testbed/cluster): the hosts `login`, `node1` and `node2`,
each with its own mount, UTS, PID and network namespaces on this machine, and how to act on
one of them, as root or as a test user.

Tests run on this machine (as root) and step into a host for everything a person or a daemon
would do there: a user's CLI on login, curl from login, doctor on a node, the portal, the hub
and the browser on login. A host's network is reachable only from inside it (no route leads
out of the cluster), so even the tests' own HTTP requests are made from a host's network.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bed
import hub_bed

REPO = Path(__file__).resolve().parents[1]
CLUSTER = str(REPO / "testbed" / "cluster")
CLUSTER_DIR = "/var/lib/sh-jupyter-testbed-cluster"
CLUSTER_RUN = "/run/sh-jupyter-testbed-cluster"
HOSTS = ("login", "node1", "node2")
NODES = ("node1", "node2")
ADDRESS = {"login": "10.77.0.1", "node1": "10.77.0.11", "node2": "10.77.0.12"}
HOSTNAME = {"login": "login", "node1": "node1", "node2": "node2.shj.test"}
CONFIGS = f"{CLUSTER_DIR}/configs"
PORTS = "[network]\nport_min = 35000\nport_max = 35999\n"

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def host_pid(host: str) -> int:
    """The host's init (this machine's view of pid 1 of its namespaces)."""
    with open(f"{CLUSTER_RUN}/{host}.pid", encoding="ascii") as fh:
        pid = int(fh.read().strip())
    with open(f"/proc/{pid}/comm", encoding="ascii") as fh:
        assert fh.read().strip() == "catatonit", f"host {host} is not running (pid {pid})"
    return pid


def running(host: str) -> bool:
    try:
        host_pid(host)
    except (OSError, ValueError, AssertionError):
        return False
    return True


def _nsenter(host: str) -> list[str]:
    return ["nsenter", "--target", str(host_pid(host)), "--mount", "--uts", "--pid", "--net",
            "--"]


def _user_argv(user: str | None, argv: list[str], env: dict[str, str] | None) -> list[str]:
    if user is None:
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        return ["env", "-i", "-C", "/", *[f"{k}={v}" for k, v in base.items()], *argv]
    return ["runuser", "-u", user, "--", "env", "-i", "-C", "/tmp",
            *[f"{k}={v}" for k, v in bed.user_env(user, env).items()], *argv]


def on(host: str, argv: list[str], user: str | None = None, env: dict[str, str] | None = None,
       timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """argv on the host, as root or as the user (with a job-like environment)."""
    return subprocess.run([*_nsenter(host), *_user_argv(user, argv, env)], capture_output=True,
                          text=True, check=False, timeout=timeout, **kwargs)


def popen_on(host: str, argv: list[str], user: str | None = None,
             env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """A long-running process on the host (nsenter forks it into the host's PID namespace:
    stop it with stop(), which signals the process itself)."""
    return subprocess.Popen([*_nsenter(host), *_user_argv(user, argv, env)], **kwargs)


def _leaf(pid: int) -> int:
    """The process nsenter (and env, runuser) stand in front of."""
    while True:
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
                kids = fh.read().split()
        except OSError:
            return pid
        if not kids:
            return pid
        with open(f"/proc/{kids[0]}/comm", encoding="ascii") as fh:
            comm = fh.read().strip()
        pid = int(kids[0])
        if comm not in ("nsenter", "runuser", "env"):
            return pid


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(_leaf(proc.pid), sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_leaf(proc.pid), signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def network_of(host: str) -> Iterator[None]:
    """This thread's sockets (and threads it starts) in the host's network: the tests' own
    HTTP clients reach the cluster only from inside it. Names do not resolve here (the
    host's /etc/hosts is not this machine's): use ADDRESS or loopback."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{host_pid(host)}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {host}'s network")
        yield
    finally:
        _libc.setns(own, _CLONE_NEWNET)
        os.close(own)
        os.close(target)


def cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """testbed/cluster itself (up, crash)."""
    return subprocess.run([CLUSTER, *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def write_config(text: str) -> str:
    """A site config every host can read (each has its own /tmp)."""
    fd, path = tempfile.mkstemp(prefix="config-", suffix=".toml", dir=CONFIGS)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o644)
    return path


def shared_dir(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix, dir=CONFIGS)
    os.chmod(path, 0o755)
    return path


def sh(user: str, cfg: str, *args: str, host: str = "login",
       timeout: float = 300) -> subprocess.CompletedProcess:
    """`sh-jupyter --config CFG ARGS` as the user on a host (login: where users are)."""
    return on(host, [bed.SH, "--config", cfg, *args], user=user, timeout=timeout)


def submit(user: str, cfg: str, cleanup: list[str], *args: str) -> tuple[dict, dict]:
    """`submit --wait --json` as the user on login; the submit record and the final card."""
    out = sh(user, cfg, "submit", "--wait", "--json", *args)
    got = bed.docs(out.stdout) if out.stdout.strip() else []
    if got:
        cleanup.append(got[0]["job_id"])
    assert out.returncode == 0, out.stdout + out.stderr
    return got[0], got[-1]


def card(user: str, session_id: str, cfg: str) -> dict:
    out = sh(user, cfg, "status", "--json", session_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def connection(user: str, session_id: str, cfg: str) -> dict:
    out = sh(user, cfg, "connect", "--json", session_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def squeue(*args: str) -> str:
    return on("login", ["squeue", "-h", *args]).stdout.strip()


def job_state(job: str) -> str:
    return squeue("-t", "all", "-j", job, "-o", "%T") or "GONE"


def job_node(job: str) -> str:
    return squeue("-t", "all", "-j", job, "-o", "%N")


def http_status(url: str, host: str = "login", token: str = "") -> int:
    """The HTTP status GET url answers with, asked with curl on the host (0: no answer)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "--noproxy", "*"]
    if token:
        argv += ["-H", f"Authorization: token {token}"]
    out = on(host, [*argv, url])
    return int(out.stdout or 0) if out.stdout.strip().isdigit() else 0


def hooks_log(node: str) -> str:
    """The node's own /var/log/sh-jupyter/hooks.log (each node has its own)."""
    try:
        return Path(CLUSTER_DIR, node, "log-sh-jupyter", "hooks.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def ensure_runtime_dir(user: str, node: str) -> None:
    """/run/user/UID and NODE_DIR/USER on the node, as the prolog makes them before any podman
    runs as the user: without the first rootless Podman falls back to /tmp for its run root and
    records that in the user's storage for good; the second holds the user's storage."""
    from sh_jupyter.paths import NODE_DIR

    pw = pwd.getpwnam(user)
    owner = ["-o", str(pw.pw_uid), "-g", str(pw.pw_gid)]
    for argv in (["install", "-d", "-m", "0700", *owner, f"/run/user/{pw.pw_uid}"],
                 ["install", "-d", "-m", "0755", "-o", "root", "-g", "root", NODE_DIR],
                 ["install", "-d", "-m", "0700", *owner, f"{NODE_DIR}/{user}"]):
        out = on(node, argv)
        assert out.returncode == 0, out.stderr


def containers(user: str, node: str) -> list[str]:
    """The user's session containers on a node, in the storage the site config gives them."""
    ensure_runtime_dir(user, node)
    out = on(node, ["podman", "--storage-opt", f"additionalimagestore={bed.STORE}", "--root",
                    bed.graphroot(user), "ps", "-a", "--format", "{{.Names}}"], user=user)
    assert out.returncode == 0, out.stderr
    return [n for n in out.stdout.split() if n.startswith("epcc-ces-jupyter-")]


def exists_on(host: str, path: str) -> bool:
    return on(host, ["test", "-e", path]).returncode == 0


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def missing() -> list[str]:
    """What the cluster tier needs that is not in place."""
    problems = [f"host {h} is not running (testbed/cluster up)" for h in HOSTS if not running(h)]
    if problems:
        return problems
    out = on("login", ["sinfo", "-h", "-N", "-o", "%N %T"])
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    for node in NODES:
        if states.get(node, "").rstrip("+") not in ("idle", "mixed", "allocated"):
            problems.append(f"{node} is {states.get(node, 'unknown')} in the cluster's Slurm")
    return problems


class ClusterHub(hub_bed.Hub):
    """The test bed's hub and proxy, run on login: the hub's API listens on login's address on
    the cluster network (`login`), which containers on the nodes connect to."""

    def start(self) -> None:
        if self.proxy is None:
            chp = hub_bed.hub_env()["CHP"]
            log = open(os.path.join(self.workdir, "proxy.log"), "ab")  # noqa: SIM115
            self.proxy = popen_on(
                "login", [chp, "--ip", "127.0.0.1", "--port", str(self.public_port),
                          "--api-ip", "127.0.0.1", "--api-port", str(self.api_port),
                          "--default-target", self.hub_url, "--error-target",
                          f"{self.hub_url}/hub/error", "--log-level", "warn"],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT)
            log.close()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the hub owns it while it runs
        self.proc = popen_on("login", ["sh", "-c", f"cd {self.workdir} && exec "
                                          f"{self.jupyterhub} -f {self.config}"],
                                env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited:\n{self.log()[-4000:]}")
            with contextlib.suppress(OSError), network_of("login"):
                return hub_bed.http("GET", f"{self.url}/hub/api", timeout=5)[0] == 200
            return False
        bed.wait_for(up, 90, "JupyterHub on login to answer", interval=0.2)

    def stop_hub(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=60)
        self.proc = None

    def close(self) -> None:
        self.stop_hub()
        if self.proxy is not None:
            stop(self.proxy)
        self.proxy = None

    def api(self, method: str, path: str, body: dict | None = None,
            timeout: float = 30) -> tuple[int, dict]:
        with network_of("login"):
            return super().api(method, path, body, timeout)

    def spawn(self, user: str) -> tuple[list[dict], float]:
        with network_of("login"):
            return super().spawn(user)
