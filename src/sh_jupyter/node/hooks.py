"""Prolog and epilog work for `jupyter_app` jobs, run as root by slurmd (see hooks.py).

Everything that touches the user's Podman runs AS the user (runuser), by absolute paths and
argument lists, with a timeout. Cleanup is keyed by this job's id label and re-listed to
verify: an over-broad epilog elsewhere killed the same user's other jobs; ours never does.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import psutil

from sh_jupyter import config as config_mod
from sh_jupyter.container import podman_args
from sh_jupyter.container.spec import LABEL_JOB
from sh_jupyter.node.jobmatch import Job
from sh_jupyter.paths import TemplateContext, expand_path
from sh_jupyter.runner import Result, run

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
STEP_TIMEOUT = 30


class Node:
    """Acts for one job's user on this node."""

    def __init__(self, job: Job, cfg: config_mod.Config, log) -> None:
        self.job = job
        self.cfg = cfg
        self.log = log
        self.runtime = f"/run/user/{job.uid}"
        ctx = TemplateContext(job.user, job.home, job.uid, job.session_id, job.job_id)
        self.ctx = ctx
        self.storage = podman_args.for_user(cfg, ctx)

    def as_user(self, argv: list[str], timeout: float = STEP_TIMEOUT) -> Result:
        env = [f"PATH={PATH}", f"HOME={self.job.home}", f"USER={self.job.user}",
               f"XDG_RUNTIME_DIR={self.runtime}"]
        return run(["/usr/sbin/runuser", "-u", self.job.user, "--", "/usr/bin/env", "-i", *env,
                    *argv], timeout=timeout, cwd="/")

    def podman(self, *args: str, timeout: float = STEP_TIMEOUT) -> Result:
        return self.as_user(["podman", *self.storage, *args], timeout=timeout)

    # -- prolog ------------------------------------------------------------------------
    def ensure_runtime_dir(self) -> None:
        """/run/user/UID, which nothing creates without systemd-logind."""
        if not os.path.isdir(self.runtime):
            os.makedirs(self.runtime, mode=0o700, exist_ok=True)
            os.chown(self.runtime, self.job.uid, self.job.gid)
            self.log(f"created {self.runtime}")

    def ensure_pause_process(self) -> None:
        """Start the user's rootless pause process here, outside the job's cgroups: one made
        inside the job dies with scancel and breaks that user's Podman on the node."""
        out = self.podman("unshare", "true", timeout=60)
        if out.returncode != 0:
            self.log(f"podman unshare failed: {out.stderr.strip()}")

    def prepare_dirs(self) -> None:
        """Create the session's create-if-missing mount sources as the user (root may not
        write into a root-squashed NFS home), before the job can race another user for them."""
        for mount in self.cfg.mounts:
            if not mount.create:
                continue
            path = expand_path(mount.source, self.ctx)
            if os.path.isdir(path):
                continue
            out = self.as_user(["mkdir", "-p", "-m", "0700", "--", path])
            self.log(f"created {path}" if out.returncode == 0
                     else f"could not create {path}: {out.stderr.strip()}")

    # -- epilog (and prolog, for a requeued job) -----------------------------------------
    def job_containers(self) -> list[str]:
        out = self.podman("ps", "-a", "-q", "--filter", f"label={LABEL_JOB}={self.job.job_id}")
        if out.returncode != 0:
            raise RuntimeError(f"podman ps failed: {out.stderr.strip()}")
        return out.stdout.split()

    def remove_containers(self, attempts: int = 3) -> bool:
        """Remove this job's containers; True when a re-listing finds none left.

        When Slurm has already killed the job's processes (a SIGKILLed supervisor: the whole
        step goes), Podman 4.3 cannot stop a crun container whose process is gone ("kill
        container: No such process") and gives up, but marks it exited: the next attempt
        removes it. So cleanup re-checks its own work and tries again. Podman 5 before 5.6
        fails the same way when the job's conmon was killed ("conmon exited prematurely",
        podman#26640; seen on Debian 13's 5.4.2), and the retry removes it there too.
        """
        stop = str(self.cfg["session.stop_timeout"])
        left = self.job_containers()
        for _attempt in range(attempts):
            if not left:
                return True
            out = self.podman("rm", "-f", "-t", stop, *left, timeout=STEP_TIMEOUT + 30)
            why = out.stderr.strip().splitlines()[-1:] if out.returncode else []
            self.log(f"removed containers {' '.join(left)} (rc {out.returncode})"
                     + (f": {why[0]}" if why else ""))
            left = self.job_containers()
        self.log(f"containers still present: {' '.join(left)}")
        return not left

    def end_stray_processes(self) -> None:
        """End this session's own Podman API service if its supervisor was killed."""
        marker = podman_args.service_socket(self.cfg, self.ctx)
        victims = []
        for proc in psutil.process_iter(["uids", "cmdline"]):
            info = proc.info
            if info["uids"] and info["uids"].real == self.job.uid and \
                    any(marker in part for part in info["cmdline"] or ()):
                victims.append(proc)
        for proc in victims:
            self.log(f"terminating stray {proc.pid}: {' '.join(proc.info['cmdline'][:4])}")
            proc.send_signal(signal.SIGTERM)
        _gone, alive = psutil.wait_procs(victims, timeout=5)
        for proc in alive:
            proc.kill()

    def remove_runtime_files(self) -> None:
        """Delete this session's API socket and its log (a killed supervisor leaves them; on a
        node that runs for months nothing of a finished session may pile up)."""
        socket_path = podman_args.service_socket(self.cfg, self.ctx)
        for path in (socket_path, socket_path + ".log"):
            if os.path.lexists(path):
                os.unlink(path)
                self.log(f"removed {path}")

    def remove_scratch(self) -> None:
        """Delete this session's ephemeral directories, as the user (podman unshare also
        removes files owned by the user's sub-ids)."""
        for mount in self.cfg.mounts:
            if not mount.ephemeral:
                continue
            path = expand_path(mount.source, self.ctx)
            if not os.path.lexists(path):
                continue
            out = self.podman("unshare", "rm", "-rf", "--one-file-system", "--", path)
            gone = not os.path.lexists(path)
            self.log(f"scratch {path} {'removed' if gone else 'NOT removed'} "
                     f"(rc {out.returncode})")


def prolog(job: Job, cfg: config_mod.Config, log) -> int:
    node = Node(job, cfg, log)
    node.ensure_runtime_dir()
    node.ensure_pause_process()
    node.prepare_dirs()
    if node.job_containers():  # a requeued job's leftovers would collide with its name
        node.remove_containers()
    return 0


def epilog(job: Job, cfg: config_mod.Config, log) -> int:
    node = Node(job, cfg, log)
    start = time.monotonic()
    ok = True
    if shutil.which("podman", path=PATH):
        # After a reboot (maintenance) /run/user/UID is gone but the container's record is
        # not: recreate the runtime dir so the user's Podman can find and remove it.
        node.ensure_runtime_dir()
        ok = node.remove_containers()
    node.end_stray_processes()
    node.remove_runtime_files()
    node.remove_scratch()
    log(f"cleanup {'done' if ok else 'FAILED'} in {time.monotonic() - start:.2f} s")
    return 0 if ok else 1
