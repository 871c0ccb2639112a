"""`sh-jupyter doctor`: checks a node, or the current user on it, for what a session needs.

Each finding says what is wrong and how to fix it. Exit status follows the monitoring
(Nagios) convention, 0 ok, 1 warning, 2 error, so a probe can run it as it is.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
from collections.abc import Callable

from sh_jupyter import config as config_mod
from sh_jupyter.container import oci_runtime, podman_args
from sh_jupyter.container.cgroups import own_paths
from sh_jupyter.container.spec import cgroups_mode, network_mode
from sh_jupyter.doctor import gpu as gpu_doctor
from sh_jupyter.doctor import store as store_doctor
from sh_jupyter.doctor.report import ERROR, OK, WARN, Finding
from sh_jupyter.errors import SessionFailure, UsageError
from sh_jupyter.paths import NODE_DIR, TemplateContext, expand_path
from sh_jupyter.runner import NOT_FOUND, Result, run
from sh_jupyter.slurm import config as slurm_config

NETWORK_FS = {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "beegfs", "ceph", "glusterfs",
              "fuse.sshfs", "afs"}


def _run(argv: list[str], timeout: float = 20, env: dict[str, str] | None = None,
         ) -> Result | None:
    """A probe's result; None when the program is not installed."""
    out = run(argv, timeout=timeout, env=env)
    return None if out.returncode == NOT_FOUND else out


def fs_type(path: str, mounts_text: str) -> str:
    """The filesystem type holding path, from /proc/mounts text (longest mount point wins)."""
    best, kind = "", ""
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def subid_range(name: str, uid: int, text: str) -> int:
    """How many subordinate ids /etc/subuid (or subgid) text grants this user."""
    total = 0
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(uid)) and parts[2].isdigit():
            total += int(parts[2])
    return total




class Doctor:
    def __init__(self, cfg_path: str | None) -> None:
        self.cfg_path = cfg_path
        self.cfg: config_mod.Config | None = None
        self.choice: oci_runtime.Choice | None = None
        self.me = pwd.getpwuid(os.getuid())
        # Node checks concern no particular session: placeholders stand in for its ids.
        self.ctx = TemplateContext(self.me.pw_name, self.me.pw_dir, self.me.pw_uid, "x", "x")
        self.findings: list[Finding] = []
        self.podman_version = ""  # from `podman --version`; decides podman.network = "auto"

    @functools.cached_property
    def slurm_conf(self) -> tuple[dict[str, str] | None, str]:
        """slurmctld's configuration (asked once), or None and why not."""
        return slurm_config.show()

    def add(self, check: str, status: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, status, message, fix))

    def run(self) -> list[Finding]:
        checks: list[Callable[[], None]] = [self.config, self.podman, self.runtime,
                                            self.tun, self.rootless_tools]
        if self.me.pw_uid != 0:
            checks += [self.subids, self.runtime_dir, self.storage]
        checks += [self.image, self.store]
        if self.me.pw_uid != 0:
            checks.append(self.keep_groups)
        checks += [self.slurm, self.cgroups, self.gpus]
        for check in checks:
            check()
        return self.findings

    # -- checks --------------------------------------------------------------------------
    def config(self) -> None:
        try:
            self.cfg = config_mod.load(self.cfg_path)
        except UsageError as exc:
            self.add("config", ERROR, str(exc), "fix the named key (sh-jupyter config "
                     "--reference lists every key)")
            self.cfg = config_mod.default()
            return
        self.add("config", OK, f"{self.cfg.path} is valid")

    def podman(self) -> None:
        if not shutil.which("podman"):
            self.add("podman", ERROR, "podman is not installed", "install podman (>= 4.3)")
            return
        version, shown = podman_args.installed_version()
        self.podman_version = ".".join(map(str, version))
        status = OK if version >= (4, 3) else ERROR
        self.add("podman", status, shown, "" if status == OK else "install podman 4.3 or newer")

    def runtime(self) -> None:
        """The OCI runtime sessions will use here, chosen exactly as the supervisor does."""
        cfg = self.cfg or config_mod.default()
        try:
            self.choice = oci_runtime.choose(cfg["podman.runtime"], cfg["podman.keep_groups"],
                                             oci_runtime.node_facts())
        except SessionFailure as exc:
            self.add("oci-runtime", ERROR, str(exc), 'install crun (or set podman.runtime = '
                     '"auto"); on cgroup v1 hybrid hosts bind the controllers that sit on the '
                     "cgroup2 mount to v1 hierarchies (docs/admin-guide.md, Installing, step 3)")
            return
        if self.choice.warning:
            self.add("oci-runtime", WARN, f"sessions use {self.choice.why}: "
                     f"{self.choice.warning}", "install crun; on cgroup v1 hybrid hosts bind "
                     "the controllers on the cgroup2 mount to v1 hierarchies (docs/admin-guide.md, "
                     "Installing, step 3)" if self.choice.runtime == "runc"
                     else "set podman.keep_groups = true")
        else:
            self.add("oci-runtime", OK, f"sessions use {self.choice.why}")

    def _podman_as_me_is_safe(self, check: str) -> bool:
        """Rootless Podman run without the user's runtime directory falls back to /tmp for its
        run root and records that in the user's container storage for good, so every later
        session on this node runs from /tmp. Where no job made /run/user/UID yet (a node this
        user never ran on), the checks that run Podman as the user are skipped."""
        path = f"/run/user/{self.me.pw_uid}"
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and st.st_uid == self.me.pw_uid:
            return True
        self.add(check, WARN, f"not checked: {path} is missing, and Podman run as "
                 f"{self.me.pw_name} without it would pin its run root to /tmp in the "
                 "container storage", "run doctor inside a job (the prolog creates it), or "
                 "create it as root first (see runtime-dir)")
        return False

    def keep_groups(self) -> None:
        """A real trial container: do this user's groups reach a session's container?"""
        names = ", ".join(_group_name(g) for g in oci_runtime.user_groups()) or "none"
        choice = self.choice
        if choice is None:
            return
        if choice.keep_groups and not self._podman_as_me_is_safe("keep-groups"):
            return
        if not choice.keep_groups:
            status = WARN if oci_runtime.user_groups() else OK
            self.add("keep-groups", status, f"your supplementary groups ({names}) will not "
                     f"reach session containers ({choice.why})")
            return
        cfg = self.cfg or config_mod.default()
        argv = ["podman", *podman_args.for_user(cfg, self.ctx), "--runtime", choice.runtime,
                "run", "--rm", "--read-only", "--network", "none", "--tmpfs", "/run",
                "--tmpfs", "/tmp", "--annotation", f"{oci_runtime.KEEP_GROUPS_ANNOTATION}=1",
                "--entrypoint", "cat", cfg["image.name"], "/proc/self/status"]
        env = {**os.environ, "XDG_RUNTIME_DIR": f"/run/user/{self.me.pw_uid}"}
        out = _run(argv, timeout=60, env=env)
        if out is None or out.returncode != 0:
            detail = out.stderr.strip().splitlines()[-1:] if out is not None else []
            self.add("keep-groups", ERROR, "a trial container with keep-groups failed"
                     + (f": {detail[0]}" if detail else ""),
                     "run `sh-jupyter doctor` as root for the node's checks")
            return
        inside = groups_in_status(out.stdout)
        want = len(set(os.getgroups()))
        if inside < want:
            self.add("keep-groups", ERROR, f"a trial container saw {inside} of your {want} "
                     "groups", "use crun 1.0 or newer")
            return
        self.add("keep-groups", OK, f"keep-groups works: your groups reach session "
                 f"containers (supplementary: {names})")

    def tun(self) -> None:
        if not os.path.exists("/dev/net/tun"):
            self.add("dev-net-tun", ERROR, "/dev/net/tun does not exist",
                     "modprobe tun (slirp4netns needs it)")
        elif (os.stat("/dev/net/tun").st_mode & 0o666) != 0o666:
            self.add("dev-net-tun", ERROR, "/dev/net/tun is not readable and writable by all "
                     f"(mode {os.stat('/dev/net/tun').st_mode & 0o777:o})",
                     "chmod 0666 /dev/net/tun (persist with a udev rule)")
        else:
            self.add("dev-net-tun", OK, "/dev/net/tun is usable")

    def rootless_tools(self) -> None:
        """The helpers rootless Podman needs, with the network tool sessions will use here
        (podman.network = "auto": pasta on Podman 5 where installed, else slirp4netns)."""
        cfg = self.cfg or config_mod.default()
        mode = network_mode(cfg["podman.network"], self.podman_version,
                            podman_args.pasta_installed({"PATH": "/usr/bin:/usr/sbin:/bin"}))
        tools = [mode, "newuidmap", "newgidmap", "conmon"]
        missing = [t for t in tools
                   if not shutil.which(t, path="/usr/bin:/usr/sbin:/usr/libexec/podman:/bin")]
        if missing:
            self.add("rootless-tools", ERROR, f"missing {', '.join(missing)}",
                     f"install {'passt' if mode == 'pasta' else mode}, uidmap (shadow-utils "
                     "on RHEL) and conmon")
        else:
            self.add("rootless-tools", OK, f"{', '.join(tools)} present (network {mode})")

    def subids(self) -> None:
        name, uid = self.me.pw_name, self.me.pw_uid
        for kind in ("subuid", "subgid"):
            count = subid_range(name, uid, _read(f"/etc/{kind}"))
            if count < 65536:
                self.add(kind, ERROR, f"{name} has {count} subordinate ids in /etc/{kind}",
                         f"usermod --add-{kind}s START-END {name} (65536 ids)")
            else:
                self.add(kind, OK, f"{name} has {count} subordinate ids")

    def runtime_dir(self) -> None:
        path = f"/run/user/{self.me.pw_uid}"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.add("runtime-dir", ERROR, f"{path} does not exist",
                     "the Slurm prolog creates it for jobs; for a login shell: mkdir -m 0700 "
                     f"{path} && chown {self.me.pw_name} {path} (as root)")
            return
        if st.st_uid != self.me.pw_uid or st.st_mode & 0o077:
            self.add("runtime-dir", ERROR, f"{path} is not owned by {self.me.pw_name} with "
                     "mode 0700", f"chown {self.me.pw_name} {path}; chmod 0700 {path}")
        else:
            self.add("runtime-dir", OK, f"{path} is private to {self.me.pw_name}")

    def storage(self) -> None:
        cfg = self.cfg or config_mod.default()
        graphroot = (expand_path(cfg["podman.graphroot"], self.ctx) if cfg["podman.graphroot"]
                     else os.path.join(self.me.pw_dir, ".local/share/containers/storage"))
        kind = fs_type(graphroot, _read("/proc/mounts"))
        fix = (f'set podman.graphroot to node-local disk, e.g. "{NODE_DIR}/{{user}}/storage" (the '
               f'Slurm prolog creates {NODE_DIR}/USER for the user, under a directory only root '
               'can write)')
        home = self.me.pw_dir.rstrip("/") + "/"
        if kind in NETWORK_FS or kind.startswith("fuse."):
            self.add("storage", ERROR, f"container storage {graphroot} is on {kind}", fix)
        elif graphroot.startswith(home):
            self.add("storage", WARN, f"container storage {graphroot} is in the home directory "
                     f"(on {kind or 'local disk'}): where other nodes share it, their Podman "
                     "reads this node's container records and fails on them", fix)
        else:
            self.add("storage", OK, f"container storage {graphroot} is on {kind or 'local disk'}")

    def image(self) -> None:
        cfg = self.cfg or config_mod.default()
        name, store = cfg["image.name"], cfg["image.store"]
        if not os.path.isdir(os.path.join(store, "overlay-images")):
            self.add("image", ERROR, f"the shared image store {store} holds no images",
                     "build and publish the image: /usr/share/sh-jupyter/image/build "
                     f"--store {store}")
            return
        if self.me.pw_uid == 0:
            argv = ["podman", "--root", store, "image", "exists", name]
            env = None
        else:
            if not self._podman_as_me_is_safe("image"):
                return
            argv = ["podman", *podman_args.for_user(cfg, self.ctx), "image", "exists", name]
            env = {**os.environ, "XDG_RUNTIME_DIR": f"/run/user/{self.me.pw_uid}"}
        out = _run(argv, timeout=60, env=env)
        if out is not None and out.returncode == 0:
            self.add("image", OK, f"{name} is in {store}")
        else:
            detail = out.stderr.strip() if out is not None and out.stderr.strip() else ""
            self.add("image", ERROR, f"{name} is not in the shared store {store}"
                     + (f" ({detail})" if detail else ""),
                     f"publish it: /usr/share/sh-jupyter/image/build --store {store} "
                     f"--tag {name}")

    def store(self) -> None:
        """The store's content and mount, as any local user can reach them on the host."""
        store_doctor.check((self.cfg or config_mod.default())["image.store"], self.add)

    def slurm(self) -> None:
        conf, why = self.slurm_conf
        if conf is None:
            self.add("slurm", ERROR, f"Slurm is not reachable: {why}",
                     "install the Slurm client and make slurm.conf readable (SLURM_CONF)")
            return
        self.add("slurm", OK, f"slurmctld answers (Slurm {conf.get('SLURM_VERSION', '?')})")
        for key, script in (("Prolog", "prolog"), ("Epilog", "epilog")):
            value = conf.get(key, "")
            if "sh-jupyter" not in value:
                self.add(key.lower(), ERROR, f"{key} is {value or '(none)'}: containers "
                         "would outlive scancel", f"{key}=/usr/libexec/sh-jupyter/{script} "
                         "in slurm.conf")
            else:
                self.add(key.lower(), OK, f"{key}={value}")
        if "Alloc" not in conf.get("PrologFlags", ""):
            self.add("prologflags", WARN, "PrologFlags lacks Alloc: the prolog runs only when "
                     "the first step starts", "PrologFlags=Alloc in slurm.conf")
        batch = (self.cfg or config_mod.default())["session.batch_script"]
        if not os.access(batch, os.X_OK):
            self.add("batch-script", ERROR, f"{batch} is missing or not executable",
                     "install the sh-jupyter package (it ships the batch script)")
        else:
            self.add("batch-script", OK, f"{batch} is executable")


    def cgroups(self) -> None:
        """Do session containers stay in their Slurm job's cgroup (its limits, its end)?"""
        cfg = self.cfg or config_mod.default()
        setting = cfg["podman.cgroups"]
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        in_job = cgroups_mode(setting, True, v2)
        if in_job == "enabled" and v2:
            self.add("cgroups", ERROR, f'podman.cgroups = "{setting}" on cgroup v2: a '
                     "session's container gets a cgroup of Podman's (with systemd a scope "
                     "under user@UID.service), outside its Slurm job: outside the job's memory "
                     "and CPU limits, and scancel does not end it",
                     'podman.cgroups = "auto" (disabled in Slurm jobs)')
            return
        where = ("in its Slurm job's cgroup (podman.cgroups: disabled in jobs), under the "
                 "job's limits and ended with it") if in_job == "disabled" else (
                 "in its Slurm job's cgroup v1 hierarchies (rootless Podman makes none)")
        if in_job == "disabled" and self.me.pw_uid != 0 and self.choice is not None:
            problem = self._cgroup_trial(cfg, self.choice.runtime)
            if problem:
                self.add("cgroups", ERROR, problem, "run `sh-jupyter doctor` as root for the "
                         "node's checks; see docs/admin-guide.md, cgroup v2")
                return
            where += " (a trial container stayed in the cgroup that started it)"
        proctrack = (self.slurm_conf[0] or {}).get("ProctrackType", "")
        if proctrack and proctrack != "proctrack/cgroup":
            self.add("cgroups", WARN, f"ProctrackType is {proctrack}: Slurm may not end "
                     "every process of a session's job", "ProctrackType=proctrack/cgroup in "
                     "slurm.conf")
            return
        self.add("cgroups", OK, f"cgroup {'v2' if v2 else 'v1'}: a session's container stays "
                 + where)

    def _cgroup_trial(self, cfg: config_mod.Config, runtime: str) -> str:
        """A real container started as a session's is: does it stay in the cgroup of what
        started it (in a job: the job's)? "" when it does, else what went wrong."""
        argv = ["podman", *podman_args.for_user(cfg, self.ctx), "--runtime", runtime,
                *podman_args.cgroup_manager_args("disabled"), "run", "--rm", "--read-only",
                "--network", "none", "--tmpfs", "/run", "--tmpfs", "/tmp", "--cgroups",
                "disabled", "--cgroupns", "host", "--entrypoint", "cat", cfg["image.name"],
                "/proc/self/cgroup"]
        env = {**os.environ, "XDG_RUNTIME_DIR": f"/run/user/{self.me.pw_uid}",
               **podman_args.stay_in_cgroup_env("disabled")}
        out = _run(argv, timeout=60, env=env)
        if out is None or out.returncode != 0:
            detail = out.stderr.strip().splitlines()[-1:] if out is not None else []
            return "a trial container with cgroups disabled failed" + (
                f": {detail[0]}" if detail else "")
        mine = own_paths(_read("/proc/self/cgroup")).get("", "?")
        theirs = own_paths(out.stdout).get("", "?")
        if theirs != mine:
            return (f"a trial container with cgroups disabled ran in {theirs}, not in the "
                    f"cgroup that started it ({mine}): in a Slurm job it would leave the job")
        return ""

    def gpus(self) -> None:
        gpu_doctor.check(self.cfg or config_mod.default(), self.add, self.slurm_conf[0])


def groups_in_status(status_text: str) -> int:
    """How many groups a process holds, from its /proc/PID/status text."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return len(line.split()[1:])
    return 0


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name}({gid})"
    except KeyError:
        return str(gid)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""
