"""The test bed as tests see it: what must be there, and how to act as a test user.

Tests run as root (they orchestrate); everything a user would do runs through `runuser` as
one of the unprivileged test users, with the same environment a Slurm job would give.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

USERS = ("shjuser1", "shjuser2")
VENV = "/opt/sh-jupyter/venv"
SH = f"{VENV}/bin/sh-jupyter"
PYTHON = f"{VENV}/bin/python"
IMAGE = "localhost/sh-jupyter/jupyterlab:latest"
STORE = "/var/lib/sh-jupyter/images"
SLURM_CONF = "/etc/slurm/slurm.conf"
E2E_PORTS = "[network]\nport_min = 32000\nport_max = 32999\n"


VERSIONS = "/var/lib/sh-jupyter-testbed/versions.env"


def versions() -> dict[str, str]:
    """What the bed runs (testbed/steps/10-packages.sh records it): PODMAN_MAJOR, SLURM_SERIES,
    DEBIAN_VERSION... Tests use it to know which of a version-dependent behaviour to expect."""
    out = {}
    with open(VERSIONS, encoding="utf-8") as fh:
        for line in fh:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                out[key] = value
    return out


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> object:
    """Poll a condition until it is truthy or the deadline passes (then fail, naming it)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def user_env(user: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    pw = pwd.getpwnam(user)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir, "USER": user, "LOGNAME": user,
        "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}",
        "LANG": "C.UTF-8",
    }
    if os.path.exists(SLURM_CONF):
        env["SLURM_CONF"] = SLURM_CONF
    env.update(extra or {})
    return env


def as_user(user: str, argv: list[str], env: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Run argv as the user (from /tmp, a cwd every user can read) and capture its output."""
    kwargs.setdefault("timeout", 120)
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i",
                           *[f"{k}={v}" for k, v in user_env(user, env).items()], *argv],
                          cwd="/tmp", capture_output=True, text=True, check=False, **kwargs)


def popen_as_user(user: str, argv: list[str], env: dict[str, str] | None = None,
                  **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["runuser", "-u", user, "--", "env", "-i",
                             *[f"{k}={v}" for k, v in user_env(user, env).items()], *argv],
                            cwd="/tmp", **kwargs)


def graphroot(user: str) -> str:
    """The user's container storage as the default site config places it (node-local)."""
    from sh_jupyter import config
    from sh_jupyter.paths import TemplateContext, expand_path

    pw = pwd.getpwnam(user)
    ctx = TemplateContext(user, pw.pw_dir, pw.pw_uid, "x", "x")
    return expand_path(config.default()["podman.graphroot"], ctx)


def podman(user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The user's podman, seeing the shared store and the storage as sh-jupyter passes them."""
    return as_user(user, ["podman", "--storage-opt", f"additionalimagestore={STORE}",
                          "--root", graphroot(user), *args], timeout=timeout)


def containers_of(user: str, name_filter: str = "epcc-ces-jupyter") -> list[str]:
    out = podman(user, "ps", "-a", "--format", "{{.Names}}", "--filter", f"name={name_filter}")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.split() if line]


TEMPDIRS: list[str] = []


def shared_tempdir() -> str:
    """A temp directory test users can read (pytest's tmp_path is root-only); removed at the
    end of the test session (conftest)."""
    path = tempfile.mkdtemp(prefix="shj-test-", dir="/tmp")
    os.chmod(path, 0o755)
    TEMPDIRS.append(path)
    return path


def write_config(text: str) -> str:
    path = os.path.join(shared_tempdir(), "config.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o644)
    return path


def missing() -> list[str]:
    """Everything the podman/slurm/e2e tests need that is not in place, as fix hints."""
    problems = []
    for tool in ("podman", "runc", "runuser", "sbatch", "squeue", "scancel", "curl"):
        if not shutil.which(tool):
            problems.append(f"{tool} is not installed")
    if not os.access(SH, os.X_OK):
        problems.append(f"{SH} is missing (testbed/steps/50-install.sh)")
    try:
        tun = os.stat("/dev/net/tun")
        if tun.st_mode & 0o666 != 0o666:
            problems.append("/dev/net/tun is not 0666 (testbed/steps/20-podman.sh)")
    except FileNotFoundError:
        problems.append("/dev/net/tun does not exist")
    for user in USERS:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            problems.append(f"test user {user} does not exist (testbed/steps/30-users.sh)")
            continue
        rdir = f"/run/user/{pw.pw_uid}"
        if not os.path.isdir(rdir) or os.stat(rdir).st_uid != pw.pw_uid:
            problems.append(f"runtime dir {rdir} missing or not owned by {user}")
    if not problems:
        out = podman(USERS[0], "image", "exists", IMAGE)
        if out.returncode != 0:
            problems.append(f"image {IMAGE} is not visible to {USERS[0]} from the shared store "
                            f"{STORE} (testbed/steps/40-image.sh): {out.stderr.strip()}")
    if shutil.which("sinfo"):
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             env={**os.environ, "SLURM_CONF": SLURM_CONF}, check=False)
        if out.returncode != 0 or not {"idle", "mix", "alloc"} & set(out.stdout.split()):
            problems.append(f"Slurm node is not up: {out.stdout.strip() or out.stderr.strip()} "
                            "(testbed/steps/60-slurm.sh)")
    return problems


@dataclass
class Session:
    """A `sh-jupyter run --local` supervisor started as a test user."""

    user: str
    session_id: str
    session_dir: str
    proc: subprocess.Popen
    log_path: str

    def status(self) -> dict:
        with open(os.path.join(self.session_dir, "status.json"), encoding="utf-8") as fh:
            return json.load(fh)

    def connection(self) -> dict[str, str]:
        """Parse connection.yml the strict way (three known keys, nothing else)."""
        out = {}
        with open(os.path.join(self.session_dir, "connection.yml"), encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.rstrip("\n").partition(": ")
                out[key] = json.loads(value)
        assert set(out) == {"host", "port", "password"}, out
        return out

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def container(self) -> str:
        return f"epcc-ces-jupyter-{self.session_id}"

    def wait_ready(self, timeout: float = 90) -> dict[str, str]:
        """Until the session is ready as a launcher sees it: connection.yml is written first,
        then status.json says Running (a card never says Running without a Connect)."""
        conn_file = os.path.join(self.session_dir, "connection.yml")

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited ({self.proc.returncode}):\n{self.log()}")
            return os.path.exists(conn_file) and self.status().get("phase") != "Starting"
        wait_for(ready, timeout, "connection.yml and a status past Starting")
        return self.connection()

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor still running after {timeout} s:\n"
                                 f"{self.log()}") from None

    def supervisor_pid(self) -> int:
        """The supervisor itself (runuser's child; `env -i` exec-ed into it)."""
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path, encoding="ascii") as fh:
            return int(fh.read().split()[0])

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Signal the supervisor directly, as slurmstepd signals a batch script.

        Not through runuser: it would SIGKILL its child two seconds after forwarding.
        """
        if self.proc.poll() is None:
            os.kill(self.supervisor_pid(), sig)


def start_session(user: str, config_path: str, *extra: str,
                  env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()) -> Session:
    pw = pwd.getpwnam(user)
    session_id = str(uuid.uuid4())
    session_dir = os.path.join(pw.pw_dir, "shj-test-sessions", session_id)
    log_dir = shared_tempdir()
    log_path = os.path.join(log_dir, "output.log")
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its whole life
    proc = popen_as_user(user, [*wrapper, SH, "--config", config_path, "run", "--local",
                                "--session-dir",
                                session_dir, "--session-id", session_id, *extra],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return Session(user, session_id, session_dir, proc, log_path)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")  # job states not (yet) ended


def job_state(job_id: str) -> str:
    """The job's state as Slurm itself prints it (finished jobs stay listed for MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "GONE"


def submit(user: str, *args: str, config: str | None = None, timeout: float = 300,
           ) -> subprocess.CompletedProcess:
    """`sh-jupyter submit` as the user (the sbatch wrapper's own path), JSON output."""
    argv = [SH, *(["--config", config] if config else []), "submit", "--json", *args]
    return as_user(user, argv, timeout=timeout)


def supervisor_of(user: str, session_id: str) -> int | None:
    """The pid of the session's supervisor (the batch script exec-ed into `sh-jupyter run`)."""
    uid = pwd.getpwnam(user).pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"run" in argv and any(a.endswith(b"sh-jupyter") for a in argv) \
                and cwd.endswith(session_id):
            return int(pid)
    return None


def docs(text: str) -> list[dict]:
    """The JSON documents `submit --json --wait` prints one after the other."""
    decoder, out, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        obj, end = decoder.raw_decode(text, i)
        out.append(obj)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def start(user: str, cfg: str, cleanup: list[str], *args: str) -> tuple[dict, dict]:
    """`submit --wait` as the user; returns the submit record and the final card (Running)."""
    out = submit(user, "--wait", *args, config=cfg)
    got = docs(out.stdout)
    if got:
        cleanup.append(got[0]["job_id"])
    assert out.returncode == 0, out.stdout + out.stderr
    return got[0], got[-1]


def card(user: str, session_id: str, cfg: str) -> dict:
    out = as_user(user, [SH, "--config", cfg, "status", "--json", session_id])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def connection(user: str, session_id: str, cfg: str) -> dict:
    out = as_user(user, [SH, "--config", cfg, "connect", "--json", session_id])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def iso_time(stamp: str) -> float:
    """Seconds since the epoch of a status.json time stamp."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def session_log(session_dir: str) -> str:
    with open(os.path.join(session_dir, "output.log"), encoding="utf-8", errors="replace") as fh:
        return fh.read()


def side_by_side(chains: list[list[tuple[str, Callable[[], object]]]]) -> dict[str, object]:
    """Run chains of named steps in parallel (the steps of one chain one after the other: they
    share something, a user or a filesystem); returns each step's result or the exception it
    raised, by name, so every step can be reported by a test of its own."""
    from concurrent.futures import ThreadPoolExecutor

    results: dict[str, object] = {}

    def one(chain: list[tuple[str, Callable[[], object]]]) -> None:
        for name, step in chain:
            try:
                results[name] = step()
            except BaseException as exc:  # noqa: BLE001 - the step's own test raises it
                results[name] = exc
    chains = [c for c in chains if c]
    if chains:
        with ThreadPoolExecutor(len(chains)) as pool:
            for future in [pool.submit(one, chain) for chain in chains]:
                future.result()
    return results


def selected_ids(request) -> set[str]:
    """The parameter ids of this module's tests that this run selected (-k, node ids)."""
    return {item.callspec.id for item in request.session.items
            if getattr(item, "callspec", None) and item.module is request.module}


def count_tasks(uid: int) -> int:
    """The user's processes and threads, as RLIMIT_NPROC counts them."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def scratch_dir(user: str, session_id: str) -> str:
    """Where the default config puts a session's scratch on the node (the prolog makes the
    root-owned parent and the user's own directory under it)."""
    from sh_jupyter.paths import NODE_DIR

    return f"{NODE_DIR}/{user}/scratch/{session_id}"
