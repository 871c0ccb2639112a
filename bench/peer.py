#!/opt/sh-jupyter/venv/bin/python
"""bench/hub.py's peer, batchspawner's SlurmSpawner behind a second JupyterHub, installed.

bench/hub.py installs it on demand (ensure()); this script does the same on its own.

Installed once, and again only when what it is built from changes (or with --force), under
/opt/sh-jupyter/bench-peer (root's, readable by everyone):

  hub/         a venv with JupyterHub at our hub's version and batchspawner (the newest release
               on PyPI when this was written: 1.3.0), every other package constrained to the
               version our hub's venv (/opt/sh-jupyter/venv) has;
  singleuser/  the native single-user environment the jobs run: the image's package set
               exactly (its /opt/jupyter/pip-freeze.txt, read by running the image as a test
               user, installed with --no-deps) plus batchspawner for `batchspawner-singleuser`,
               with the image's start-up trims (no rfc3987-syntax, as in the freeze;
               notebook_shim disabled; the read-only extension manager) and byte-code compiled,
               so the comparison is of the spawners, not of the JupyterLab installs.

Each venv records what it was built from in .bench-peer.json; a run whose inputs hash the
same does nothing (a second or so: it reads the image's freeze and our venv's versions).

The peer hub (PeerHub, tests/hub_bed.py's Hub with another spawner) runs batchspawner's
SlurmSpawner at its documented defaults (its batch script with `srun`, `sbatch --parsable`,
`squeue -h -j ID -o '%T %B'`, `scancel`), except: `exec_prefix` is `runuser -u {username} --`
(the hub runs as root and the bed has no sudo; runuser keeps the environment as `sudo -E`
does), `startup_poll_interval` 0.5 s (its default, written out), the same CPUs, memory and
time as our spawner's jobs, the same start and HTTP timeouts, PATH leading to the single-user
venv, and log level INFO (at DEBUG batchspawner logs the environment it submits with, the
server's token included).

Run as root: `/opt/sh-jupyter/venv/bin/python bench/peer.py` installs (or checks) the peer and
prints its versions; `--show-config` prints the peer hub's configuration (secrets masked);
bench/hub.py calls ensure() itself.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl
from benchlib import bed, say

import hub_bed  # tests/, on the path through benchlib

ROOT = "/opt/sh-jupyter/bench-peer"
HUB_VENV = f"{ROOT}/hub"
SINGLEUSER_VENV = f"{ROOT}/singleuser"
STAMP = ".bench-peer.json"
BATCHSPAWNER = "1.3.0"  # the newest release on PyPI when this was written
PYTHON = "/usr/bin/python3"  # Debian's, as in the image
FREEZE = "/opt/jupyter/pip-freeze.txt"  # written by packaging/image/Containerfile
SCHEMA = 1  # bump when the build steps below change: every peer is rebuilt
PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;#]+")
OURS = {"sh-jupyter", "sh_jupyter"}
# How sessions run the image (tests/podman/test_image.py): read-only root, tmpfs where it writes;
# no network (reading a file needs none).
IMAGE_RUN = ("run", "--rm", "--read-only", "--tmpfs", "/root", "--tmpfs", "/tmp", "--tmpfs",
             "/run", "--network", "none")
SERVER_CONFIG = """# Written by bench/peer.py: the image's start-up trim of the extension manager
# (packaging/image/jupyter_server_config.py), so the peer starts the same server.
c = get_config()  # noqa: F821
c.LabApp.extension_manager = "readonly"
"""


@dataclass
class Installed:
    """The peer as installed: where, and the versions it runs."""

    hub_venv: str
    singleuser_venv: str
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def jupyterhub(self) -> str:
        return f"{self.hub_venv}/bin/jupyterhub"

    def label(self) -> str:
        return f"batchspawner {self.versions.get('batchspawner', '?')}"


# -- what the peer is built from ---------------------------------------------------------------
def pins(text: str, drop: set[str] = frozenset()) -> list[str]:
    """The `name==version` lines of a freeze (no editable, local or URL installs), without
    the names in `drop`."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if PIN.fullmatch(line) and line.split("==")[0].lower() not in drop:
            out.append(line)
    return out


def image_freeze(image: str, store: str) -> tuple[list[str], str]:
    """The image's installed packages (its build's pip freeze) and Python version, read by
    running the image as a test user the way sessions do."""
    script = (f"import pathlib, platform; print('#python', platform.python_version()); "
              f"print(pathlib.Path({FREEZE!r}).read_text())")
    out = bed.as_user(bed.USERS[0], ["podman", "--storage-opt", f"additionalimagestore={store}",
                                     *IMAGE_RUN, image, "python3", "-c", script], timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"reading {FREEZE} in {image}: {bl.tail(out.stderr)}")
    first, _, rest = out.stdout.partition("\n")
    found = pins(rest)
    if not first.startswith("#python ") or not found:
        raise RuntimeError(f"{image} printed no package list: {out.stdout[:200]!r}")
    return found, first.split()[1]


def hub_versions(python: str = bed.PYTHON) -> list[str]:
    """`name==version` of every package in our hub's venv except sh-jupyter itself (read with
    importlib.metadata: the venv need not have pip)."""
    script = ("import importlib.metadata as m\n"
              "for d in m.distributions():\n"
              "    print(f\"{d.metadata['Name']}=={d.version}\")\n")
    out = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"listing the packages of {python}: {bl.tail(out.stderr)}")
    return sorted(set(pins(out.stdout, OURS)))


def python_version(python: str) -> str:
    out = subprocess.run([python, "-I", "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{python} does not run: {bl.tail(out.stderr)}")
    return out.stdout.strip()


def digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_stamp(venv: str) -> dict:
    try:
        with open(os.path.join(venv, STAMP), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


# -- building --------------------------------------------------------------------------------------
def run(argv: list[str], what: str, timeout: float = 1800) -> str:
    say(f"  {what}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                         cwd="/", env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                                       "PIP_NO_INPUT": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}): {bl.tail(out.stderr, 8)}")
    return out.stdout


def write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o644)
    return path


def fresh_venv(venv: str, python: str) -> str:
    """An empty venv (whatever was there is removed: a half-built one has no stamp)."""
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", venv], f"{python} -m venv {venv}")
    return f"{venv}/bin/python"


def open_to_all(venv: str) -> None:
    """Readable by every user, writable by root only (the jobs run as the test users)."""
    for top, dirs, files in os.walk(venv):
        for name in dirs + files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode & 0o755 | 0o444
            if os.path.isdir(path) or mode & 0o100:
                mode |= 0o111
            os.chmod(path, mode)
    os.chmod(venv, 0o755)


def build_hub(venv: str, python: str, hub_version: str, batchspawner: str,
              constraints: list[str], tmp: str) -> None:
    py = fresh_venv(venv, python)
    pinned = write(os.path.join(tmp, "hub-constraints.txt"), "\n".join(constraints) + "\n")
    run([py, "-m", "pip", "install", "-c", pinned, f"jupyterhub=={hub_version}",
         f"batchspawner=={batchspawner}"],
        f"pip install jupyterhub=={hub_version} batchspawner=={batchspawner} (constrained to "
        f"our hub's {len(constraints)} package versions)")


def build_singleuser(venv: str, python: str, batchspawner: str, image_pins: list[str],
                     tmp: str) -> None:
    py = fresh_venv(venv, python)
    reqs = write(os.path.join(tmp, "image-freeze.txt"), "\n".join(image_pins) + "\n")
    run([py, "-m", "pip", "install", "--no-deps", "-r", reqs],
        f"pip install --no-deps the image's {len(image_pins)} packages")
    run([py, "-m", "pip", "install", "--no-deps", f"batchspawner=={batchspawner}"],
        f"pip install --no-deps batchspawner=={batchspawner} (jupyterhub and requests are in "
        "the image's set)")
    if any(p.lower().startswith(("notebook_shim==", "notebook-shim==")) for p in image_pins):
        run([f"{venv}/bin/jupyter", "server", "extension", "disable", "--sys-prefix",
             "notebook_shim"], "notebook_shim disabled (as in the image)")
    os.makedirs(f"{venv}/etc/jupyter", exist_ok=True)
    write(f"{venv}/etc/jupyter/jupyter_server_config.py", SERVER_CONFIG)
    subprocess.run([py, "-m", "compileall", "-q", f"{venv}/lib"], capture_output=True,
                   timeout=1800, check=False)  # as the image: test files may not compile


def versions_in(python: str, names: tuple[str, ...]) -> dict[str, str]:
    script = ("import importlib.metadata as m, json, platform, sys\n"
              "out = {'python': platform.python_version()}\n"
              "for n in sys.argv[1:]:\n"
              "    try:\n"
              "        out[n] = m.version(n)\n"
              "    except m.PackageNotFoundError:\n"
              "        pass\n"
              "print(json.dumps(out))\n")
    out = subprocess.run([python, "-I", "-c", script, *names], capture_output=True, text=True,
                         timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{python}: {bl.tail(out.stderr)}")
    return json.loads(out.stdout)


def check_singleuser(venv: str) -> None:
    """As a test user: batchspawner-singleuser is there and runnable, and so is the server."""
    script = ("import batchspawner.singleuser, jupyterhub, jupyterlab, os, sys\n"
              "assert os.access(sys.argv[1], os.X_OK), sys.argv[1]\n")
    out = bed.as_user(bed.USERS[0], [f"{venv}/bin/python", "-c", script,
                                     f"{venv}/bin/batchspawner-singleuser"], timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{bed.USERS[0]} cannot use {venv}: {bl.tail(out.stderr)}")
    out = bed.as_user(bed.USERS[0], [f"{venv}/bin/jupyterhub-singleuser", "--version"],
                      timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{bed.USERS[0]} cannot run jupyterhub-singleuser: "
                           f"{bl.tail(out.stderr)}")


def ensure(force: bool = False, batchspawner: str = BATCHSPAWNER, python: str = PYTHON,
           root: str = ROOT) -> Installed:
    """The peer, installed or rebuilt as needed (idempotent; one installer at a time)."""
    env = hub_bed.hub_env()
    hub_venv, su_venv = f"{root}/hub", f"{root}/singleuser"
    os.umask(0o022)  # whatever the caller's: the test users read (never write) the venvs
    os.makedirs(root, mode=0o755, exist_ok=True)
    os.chmod(root, 0o755)
    with open(os.path.join(root, ".lock"), "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        host_python = python_version(python)
        image_pins, image_python = image_freeze(env["HUB_IMAGE"], env["HUB_STORE"])
        if host_python.split(".")[:2] != image_python.split(".")[:2]:
            say(f"  note: {python} is Python {host_python}, the image's is {image_python}: the "
                "image's exact versions may lack wheels for it (--python another)")
        hub_inputs = {"schema": SCHEMA, "python": [python, host_python],
                      "jupyterhub": env["JUPYTERHUB_VERSION"], "batchspawner": batchspawner,
                      "constraints": hub_versions()}
        su_inputs = {"schema": SCHEMA, "python": [python, host_python],
                     "batchspawner": batchspawner, "image": env["HUB_IMAGE"],
                     "packages": image_pins}
        tmp = tempfile.mkdtemp(prefix="shj-bench-peer-")
        try:
            for venv, inputs, build in (
                    (hub_venv, hub_inputs, lambda: build_hub(
                        hub_venv, python, env["JUPYTERHUB_VERSION"], batchspawner,
                        hub_inputs["constraints"], tmp)),
                    (su_venv, su_inputs, lambda: build_singleuser(
                        su_venv, python, batchspawner, image_pins, tmp))):
                key = digest(inputs)
                if not force and read_stamp(venv).get("inputs") == key \
                        and os.access(f"{venv}/bin/python", os.X_OK):
                    say(f"peer: {venv} is current")
                    continue
                say(f"peer: building {venv}")
                build()
                open_to_all(venv)
                names = ("jupyterhub", "batchspawner", "jupyterlab", "jupyter_server")
                write(os.path.join(venv, STAMP), json.dumps(
                    {"inputs": key, "versions": versions_in(f"{venv}/bin/python", names)},
                    indent=1) + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        check_singleuser(su_venv)
    hub_stamp, su_stamp = read_stamp(hub_venv), read_stamp(su_venv)
    versions = {**{f"singleuser {k}": v for k, v in su_stamp.get("versions", {}).items()},
                **hub_stamp.get("versions", {})}
    return Installed(hub_venv, su_venv, versions)


# -- the peer's hub ------------------------------------------------------------------------------
@dataclass
class PeerHub(hub_bed.Hub):
    """tests/hub_bed.py's hub and proxy (other ports, the same authenticator, service and poll
    interval) with batchspawner's SlurmSpawner instead of ours."""

    singleuser: str = SINGLEUSER_VENV

    def _spawner_config(self) -> str:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # sbin: not on the jobs' PATH
        path = f"{self.singleuser}/bin:/usr/local/bin:/usr/bin:/bin"
        return f"""# batchspawner's SlurmSpawner at its documented defaults (batch script with srun,
# sbatch --parsable, squeue -h -j ID -o '%T %B', scancel), except as set here (bench/peer.py).
import batchspawner  # noqa: E402,F401 - registers its API handler (batchspawner's README)
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.SlurmSpawner.exec_prefix = "{runuser} -u {{username}} --"  # a root hub, no sudo
c.SlurmSpawner.startup_poll_interval = 0.5
c.SlurmSpawner.req_nprocs = "{hub_bed.CPUS}"
c.SlurmSpawner.req_memory = "{hub_bed.MEMORY_GIB}G"
c.SlurmSpawner.req_runtime = "{hub_bed.WALLTIME}"
c.SlurmSpawner.start_timeout = 180
c.SlurmSpawner.http_timeout = 60
c.SlurmSpawner.environment = {{"PATH": {path!r}}}  # the native single-user venv first
"""


def peer_hub(installed: Installed, poll_interval: int) -> PeerHub:
    """The peer's hub and proxy, configured (not started: start() them)."""
    return PeerHub("", poll_interval=poll_interval, jupyterhub=installed.jupyterhub,
                   log_level="INFO", singleuser=installed.singleuser_venv)


def show_config(installed: Installed) -> str:
    """The peer hub's configuration with every secret masked."""
    masked = "<secret>"
    hub = PeerHub("", poll_interval=30, jupyterhub=installed.jupyterhub, log_level="INFO",
                  singleuser=installed.singleuser_venv, token=masked, password=masked,
                  proxy_token=masked)
    try:
        return hub._config()
    finally:
        shutil.rmtree(hub.workdir, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    installed = ensure(args.force, args.batchspawner, args.python)
    rows = [[name, version] for name, version in sorted(installed.versions.items())]
    sys.stdout.write(bl.table(["peer package", "version"], rows))
    sys.stdout.write(f"\nhub: {installed.jupyterhub}\nsingle-user venv: "
                     f"{installed.singleuser_venv}\n")
    if args.show_config:
        sys.stdout.write("\n" + show_config(installed))
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild both venvs")
    parser.add_argument("--batchspawner", default=BATCHSPAWNER,
                        help=f"batchspawner version (default {BATCHSPAWNER})")
    parser.add_argument("--python", default=PYTHON,
                        help=f"interpreter for both venvs (default {PYTHON}, as the image's)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the peer hub's jupyterhub_config.py (secrets masked)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse()
    raise SystemExit(bl.main_wrapper(lambda: main(options)))
