"""Prolog and epilog work for session jobs, run as root by slurmd (see entry.py).

Threat model: the job's user is not trusted here. So:
- everything that touches the user's Podman or files runs AS the user (runuser), by absolute
  paths and argument lists, with a timeout that ends the whole process group (runner.py);
- where root itself must touch a path in a directory the user controls, it walks it with
  O_NOFOLLOW and owner checks (safe_fs.py) and never follows the user's links;
- every step is isolated: its exception or timeout is logged, the other steps still run, and
  nothing the user can plant or break fails the hook (a failing epilog drains the node for
  everyone). The epilog fails only when a process of a container of THIS job is still alive
  after removal and a root SIGKILL were tried: then the node really is not clean.
Cleanup is keyed by this job's id label and re-listed to verify: an over-broad epilog
elsewhere killed the same user's other jobs; ours never does.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from sh_jupyter import config as config_mod
from sh_jupyter.container import podman_args
from sh_jupyter.container.spec import AUTH_FILE, LABEL_JOB
from sh_jupyter.node import procs, safe_fs
from sh_jupyter.node.jobmatch import Job
from sh_jupyter.paths import NODE_DIR, TemplateContext, expand_path
from sh_jupyter.runner import NOT_FOUND, TIMED_OUT, Result, run

PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
STEP_TIMEOUT = 30  # one podman command as the user
BUDGET = 120  # the whole hook: below Slurm's PrologEpilogTimeout, however the user's podman hangs

T = TypeVar("T")


class Node:
    """Acts for one job's user on this node."""

    def __init__(self, job: Job, cfg: config_mod.Config, log: Callable[[str], None]) -> None:
        self.job = job
        self.cfg = cfg
        self.log = log
        self.runtime = f"/run/user/{job.uid}"
        ctx = TemplateContext(job.user, job.home, job.uid, job.session_id, job.job_id)
        self.ctx = ctx
        self.storage = podman_args.for_user(cfg, ctx)
        self.deadline = time.monotonic() + BUDGET
        self.podman_unusable = ""  # why the user's podman is not worth asking again
        self.owner = procs.Owner(job.uid, procs.subuid_ranges(job.user, job.uid))

    def step(self, name: str, action: Callable[[], T], default: T) -> T:
        """Run one step; its failure is logged and never stops the hook."""
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - the next step must still run
            self.log(f"step {name} failed: {type(exc).__name__}: {exc}")
            return default

    def as_user(self, argv: list[str], timeout: float = STEP_TIMEOUT) -> Result:
        left = self.deadline - time.monotonic()
        if left < 1:
            return Result(tuple(argv), TIMED_OUT, "", "the hook's time budget is spent")
        env = [f"PATH={PATH}", f"HOME={self.job.home}", f"USER={self.job.user}",
               f"XDG_RUNTIME_DIR={self.runtime}"]
        return run(["/usr/sbin/runuser", "-u", self.job.user, "--", "/usr/bin/env", "-i", *env,
                    *argv], timeout=min(timeout, left), cwd="/")

    def podman(self, *args: str, timeout: float = STEP_TIMEOUT) -> Result:
        """The user's podman; after one timeout it is not asked again in this hook (each
        further call would only spend the hook's time budget)."""
        if self.podman_unusable:
            return Result(("podman", *args), NOT_FOUND, "", self.podman_unusable)
        out = self.as_user(["podman", *self.storage, *args], timeout=timeout)
        if out.returncode == TIMED_OUT:
            self.podman_unusable = f"the user's podman timed out ({out.why})"
            self.log(f"podman {args[0]} timed out: {out.why}; no more podman for this user in "
                     "this hook")
        return out

    # -- prolog ------------------------------------------------------------------------
    def ensure_runtime_dir(self) -> None:
        """/run/user/UID, which nothing creates without systemd-logind. Root creates it under
        root's /run/user only, never through a link; a foreign one is moved aside."""
        fd = safe_fs.ensure_path("/run", ["user", str(self.job.uid)], self.job.uid,
                                 self.job.gid, 0o700, self.log)
        os.close(fd)

    def node_dir_needed(self) -> bool:
        """True when the site puts a mount source or Podman storage under NODE_DIR."""
        paths = [expand_path(m.source, self.ctx) for m in self.cfg.mounts if m.create]
        paths += [expand_path(self.cfg[k], self.ctx) for k in ("podman.graphroot",
                                                               "podman.runroot")
                  if self.cfg[k]]
        return any(p.startswith(NODE_DIR + "/") for p in paths)

    def ensure_node_dir(self) -> None:
        """NODE_DIR (root, 0755) and NODE_DIR/USER (the user, 0700), made by root so nobody
        can own another user's directory first; anything foreign there is moved aside."""
        parent, name = os.path.split(NODE_DIR)
        fd = safe_fs.ensure_path(parent, [name, self.job.user], self.job.uid, self.job.gid,
                                 0o700, self.log)
        os.close(fd)

    def ensure_pause_process(self) -> None:
        """Start the user's rootless pause process here, outside the job's cgroups: one made
        inside the job dies with scancel and breaks that user's Podman on the node.

        This is the one process a hook deliberately leaves behind (Podman detaches it into a
        session of its own); every other program a hook runs ends with its step (runner.py).
        """
        out = self.podman("unshare", "true")
        if out.returncode != 0:
            self.log(f"podman unshare failed: {out.why}")

    def prepare_dirs(self) -> None:
        """Create the session's create-if-missing mount sources as the user (root may not
        write into a root-squashed NFS home), before the job can race another user for them."""
        for mount in self.cfg.mounts:
            if not mount.create:
                continue
            path = expand_path(mount.source, self.ctx)
            if os.path.isdir(path):  # only a shortcut: the user's mkdir decides
                continue
            out = self.as_user(["mkdir", "-p", "-m", "0700", "--", path])
            if out.returncode != 0:
                self.log(f"could not create {path}: {out.why}")

    # -- epilog (and prolog, for a requeued job) -----------------------------------------
    def job_containers(self) -> list[str] | None:
        """This job's containers (full ids), None when the user's podman cannot say."""
        out = self.podman("ps", "-a", "-q", "--no-trunc", "--filter",
                          f"label={LABEL_JOB}={self.job.job_id}")
        if out.returncode != 0:
            self.log(f"podman ps failed: {out.why}")
            return None
        return out.stdout.split()

    def container_pids(self, ids: list[str]) -> set[int]:
        """The processes of these containers: conmon and the container's init (as Podman
        records them, and conmon found by its `-c ID`), with all their descendants."""
        roots = procs.conmons_of(ids)
        if ids:
            out = self.podman("inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}",
                              *ids)
            roots |= {int(w) for w in out.stdout.split() if w.isdigit()}
        return procs.with_descendants(roots)

    def remove_containers(self, attempts: int = 3) -> bool:
        """Remove this job's containers; False only when a process of one of them is still
        alive after removal and a root SIGKILL were tried.

        When Slurm has already killed the job's processes (a SIGKILLed supervisor: the whole
        step goes), Podman 4.3 cannot stop a crun container whose process is gone ("kill
        container: No such process") and gives up, but marks it exited: the next attempt
        removes it. So cleanup re-checks its own work and tries again. Podman 5 before 5.6
        fails the same way when the job's conmon was killed ("conmon exited prematurely",
        podman#26640; seen on Debian 13's 5.4.2), and the retry removes it there too. A record
        whose processes are all gone is stale: logged, not a failure.
        """
        stop = str(self.cfg["session.stop_timeout"])
        left = self.job_containers()
        for _attempt in range(attempts):
            if not left:
                break
            out = self.podman("rm", "-f", "-t", stop, *left, timeout=STEP_TIMEOUT + 30)
            self.log(f"removed containers {' '.join(c[:12] for c in left)} (rc {out.returncode})"
                     + (f": {out.why}" if out.returncode else ""))
            left = self.job_containers()
        return self.end_leftovers(left)

    def end_leftovers(self, left: list[str] | None) -> bool:
        """SIGKILL (as root, verified) what is left of this job: its containers' processes
        and anything of the user's still in the job's cgroups. False when a container process
        survives that."""
        ids = left or []
        ours = self.container_pids(ids)
        stray = procs.in_job_cgroup(self.job.job_id) - ours
        _killed, alive = procs.kill(ours | stray, self.owner)
        if _killed:
            self.log(f"killed leftover processes {sorted(_killed)}")
        survivors = sorted(set(alive) & ours)
        if survivors:
            self.log(f"processes of this job's containers survive SIGKILL: {survivors}")
            return False
        if set(alive) - ours:
            self.log(f"job processes survive SIGKILL (not containers): {sorted(set(alive))}")
        if ids:
            out = self.podman("rm", "-f", "-t", "0", *ids)
            still = self.job_containers()
            if still:
                self.log(f"stale container records (no process left): "
                         f"{' '.join(c[:12] for c in still)} (rc {out.returncode})")
        elif left is None:
            self.log("podman could not list this job's containers; none of their processes "
                     "is left in the job's cgroups")
        return True

    def end_stray_processes(self) -> None:
        """End this session's own Podman API service if its supervisor was killed: a process
        of the user's that is `podman ... system service ... unix://<this session's socket>`,
        and nothing else (the socket path in any other command line is just text)."""
        uri = "unix://" + podman_args.service_socket(self.cfg, self.ctx)
        victims = []
        for proc in psutil.process_iter(["uids", "cmdline"]):
            info = proc.info
            argv = info["cmdline"] or []
            if info["uids"] and info["uids"].real == self.job.uid and argv \
                    and os.path.basename(argv[0]) == "podman" and uri in argv \
                    and "system" in argv and "service" in argv:
                victims.append(proc)
        for proc in victims:
            self.log(f"terminating stray {proc.pid}: {' '.join(proc.info['cmdline'])}")
            proc.send_signal(signal.SIGTERM)
        _gone, alive = psutil.wait_procs(victims, timeout=5)
        for proc in alive:
            proc.kill()

    def remove_runtime_files(self) -> None:
        """Delete this session's API socket, its log and the token's directory (a killed
        supervisor leaves them; on a
        node that runs for months nothing of a finished session may pile up). The directory
        is the user's: root opens it without following links, checks its owner, and unlinks
        names inside it (a link itself, never its target; a directory is left alone)."""
        socket_path = podman_args.service_socket(self.cfg, self.ctx)
        folder, name = os.path.split(socket_path)
        try:
            fd = safe_fs.open_dir(folder, (0, self.job.uid))
        except FileNotFoundError:
            return
        except safe_fs.Unsafe as exc:
            self.log(f"runtime files not removed: {exc}")
            return
        try:
            if os.fstat(fd).st_uid != self.job.uid:
                self.log(f"runtime files not removed: {folder} is not the user's")
                return
            for entry in (name, name + ".log"):
                what = safe_fs.remove_file(fd, entry)
                if what != "absent":
                    self.log(f"{folder}/{entry}: {what}")
            auth = os.path.basename(podman_args.auth_dir(self.cfg, self.ctx))
            what = safe_fs.remove_small_dir(fd, auth, (AUTH_FILE,), self.job.uid)
            if what != "absent":
                self.log(f"{folder}/{auth}: {what}")
        finally:
            os.close(fd)

    def remove_scratch(self) -> None:
        """Delete this session's ephemeral directories, as the user (podman unshare also
        removes files owned by the user's sub-ids), after checking each component is a real
        directory of root's or the user's: never through a link."""
        for mount in self.cfg.mounts:
            if not mount.ephemeral:
                continue
            path = expand_path(mount.source, self.ctx)
            why = safe_fs.check_tree(path, self.job.uid)
            if why:
                if not why.endswith("does not exist"):
                    self.log(f"scratch {path} not removed: {why}")
                continue
            rm = ["rm", "-rf", "--one-file-system", "--", path]
            out = self.podman("unshare", *rm)
            if out.returncode != 0:
                out = self.as_user(rm)  # without podman: at least the user's own files
            gone = not os.path.lexists(path)
            self.log(f"scratch {path} {'removed' if gone else 'NOT removed'}"
                     + ("" if gone else f": {out.why}"))


def prolog(job: Job, cfg: config_mod.Config, log: Callable[[str], None]) -> int:
    """Always 0: nothing here is worth draining the node for (the session reports its own
    failure if what the prolog prepares is missing)."""
    node = Node(job, cfg, log)
    node.step("runtime dir", node.ensure_runtime_dir, None)
    if node.node_dir_needed():
        node.step("node dir", node.ensure_node_dir, None)
    node.step("pause process", node.ensure_pause_process, None)
    node.step("mount sources", node.prepare_dirs, None)
    if node.step("list containers", node.job_containers, None):
        node.step("requeue leftovers", node.remove_containers, True)
    return 0


def epilog(job: Job, cfg: config_mod.Config, log: Callable[[str], None]) -> int:
    node = Node(job, cfg, log)
    start = time.monotonic()
    # After a reboot (maintenance) /run/user/UID is gone but the container's record is not:
    # recreate the runtime dir so the user's Podman can find and remove it.
    node.step("runtime dir", node.ensure_runtime_dir, None)
    ok = node.step("containers", node.remove_containers, True)
    node.step("stray processes", node.end_stray_processes, None)
    node.step("runtime files", node.remove_runtime_files, None)
    node.step("scratch", node.remove_scratch, None)
    log(f"cleanup {'done' if ok else 'FAILED'} in {time.monotonic() - start:.2f} s")
    return 0 if ok else 1
