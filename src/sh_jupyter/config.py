"""The site configuration: one TOML file, typed, validated strictly, with documented defaults.

Like pyxis, unknown keys are errors (a typo must not silently fall back to a default). Every
error names the file, the key, the value and what is allowed. The schema below is also the
source of the configuration reference in docs/configuration.md (`sh-jupyter config --reference`).
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

from sh_jupyter.durations import format_walltime, parse_walltime
from sh_jupyter.errors import UsageError
from sh_jupyter.paths import NODE_DIR, check_path_template
from sh_jupyter.session import check_connect_host

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on RHEL 9's Python 3.9
    import tomli as tomllib

DEFAULT_PATH = "/etc/sh-jupyter/config.toml"
ENV_VAR = "SH_JUPYTER_CONFIG"

# Targets a mount may never cover: the container would not start or would be subverted.
_RESERVED_TARGETS = ("/", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib",
                     "/lib64", "/run", "/tmp", "/root", "/opt", "/var")
_CAPABILITIES = {
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "SETFCAP", "AUDIT_WRITE", "MKNOD", "NET_RAW",
}


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, check and one line of documentation."""

    kind: str  # "str", "int", "bool", "list[str]", "walltime"
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns what is allowed when invalid


def _range(lo: int, hi: int) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _one_of(*options: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of: {', '.join(options)}"


def _network_mode(v: str) -> str | None:
    """Host networking is refused: the session port would be JupyterLab's own socket on the
    node, so another user who binds it first (its number is in ps) would get the readiness
    probe's token and every browser's password. Podman's rootless networks hold the port in
    the session's own helper from before JupyterLab starts."""
    allowed = ("auto", "slirp4netns", "pasta")
    if v in allowed:
        return None
    why = (" (host networking would hand the session's token to whichever user listens on "
           "the port first)") if v == "host" else ""
    return f"must be one of: {', '.join(allowed)}{why}"


def _path_template(v: str) -> str | None:
    """An optional path template: empty means "not set" (Podman's default)."""
    return None if v == "" else _required_path_template(v)


def _required_path_template(v: str) -> str | None:
    try:
        check_path_template(v)
    except ValueError as exc:
        return f"must be an absolute path template ({exc})"
    return None


def _abs_path(v: str) -> str | None:
    ok = v.startswith("/") and ".." not in v.split("/")
    return None if ok else "must be an absolute path without '..'"


def _name(v: str) -> str | None:
    ok = v and all(c.isalnum() or c in "._-" for c in v) and not v.startswith((".", "-"))
    return None if ok else "must be letters, digits, '.', '_' or '-'"


def check_base_url(v: str) -> str | None:
    """What is wrong with a base URL (None when it is fine)."""
    if not (v.startswith("/") and v.endswith("/")):
        return "must start and end with '/'"
    rest = v.replace("{host}", "").replace("{port}", "")
    return "only {host} and {port} may be used as placeholders" if "{" in rest or "}" in rest \
        else None


# Variables sh-jupyter sets in the container itself: site config and launchers cannot override.
OWN_ENV = {"JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH", "HOME", "PATH", "PYTHONUSERBASE",
           "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
           "JUPYTERLAB_WORKSPACES_DIR", "SH_JUPYTER_SESSION_ID", "SLURM_JOB_ID",
           "SH_JUPYTER_JOB_END", "JUPYTER_PATH"}
# The job's GPU variables number the host's view (renumbered or not): never copied in.
_GPU_ENV = {"CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
            "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "NVIDIA_VISIBLE_DEVICES",
            "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"}


def _copyable_env(v: list[str]) -> str | None:
    bad = [n for n in v if n in OWN_ENV | _GPU_ENV or not _is_variable(n)]
    return f"cannot copy {bad}: set by sh-jupyter itself or not a variable name" if bad else None


def _is_variable(name: str) -> bool:
    return bool(name) and not name[0].isdigit() and name.replace("_", "a").isalnum() \
        and name.isascii()


def _gpu_variables(v: list[str]) -> str | None:
    bad = [n for n in v if not _is_variable(n) or n in OWN_ENV or n == "NVIDIA_VISIBLE_DEVICES"]
    return f"cannot set {bad}: not a variable name, or set by sh-jupyter itself" if bad else None


_CDI_VENDOR = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CDI_CLASS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$")


def valid_cdi_kind(kind: str) -> bool:
    """A CDI kind, VENDOR/CLASS as the CDI specification spells them (e.g. nvidia.com/gpu)."""
    vendor, slash, cls = kind.partition("/")
    return bool(slash and _CDI_VENDOR.match(vendor) and _CDI_CLASS.match(cls))


def _cdi_kind(v: str) -> str | None:
    return None if valid_cdi_kind(v) else "must be a CDI kind VENDOR/CLASS, e.g. nvidia.com/gpu"


def _address(v: str) -> str | None:
    rest = v.replace("{user}", "")
    ok = bool(v) and "{" not in rest and "}" not in rest and not any(
        c.isspace() or c in ",;<>\"'\\" for c in v)
    return None if ok else "must be one mail address; {user} is the only placeholder"


def _card_url(v: str) -> str | None:
    rest = v.replace("{session_id}", "").replace("{job_id}", "")
    if v and not v.startswith(("https://", "http://")):
        return "must be an http(s) URL (or empty)"
    if "{" in rest or "}" in rest or any(c.isspace() for c in v):
        return "only {session_id} and {job_id} may be used as placeholders, no spaces"
    return None


def _partition_names(v: list[str]) -> str | None:
    bad = [p for p in v if _name(p)]
    return f"{bad}: each must be a Slurm partition name" if bad else None


def _abs_paths(v: list[str]) -> str | None:
    bad = [p for p in v if _abs_path(p)]
    return f"{bad}: each must be an absolute path without '..'" if bad else None


def _nonempty(v: list[str]) -> str | None:
    return None if v and all(v) else "must be a non-empty list of non-empty strings"


def _caps(v: list[str]) -> str | None:
    bad = [c for c in v if c.upper().removeprefix("CAP_") not in _CAPABILITIES]
    return f"unknown or disallowed capabilities {bad}" if bad else None


SCHEMA: dict[str, dict[str, Key]] = {
    "session": {
        "job_name": Key("str", "jupyter_app", "Slurm job name of sessions", _name),
        "container_prefix": Key("str", "epcc-ces-jupyter",
                                "container name is PREFIX-SESSION_ID", _name),
        "connection_timeout": Key("int", 180, "seconds JupyterLab has to answer after the "
                                  "container starts; then the session fails (and the job "
                                  "cancels itself)", _range(10, 3600)),
        "max_walltime": Key("walltime", 6 * 3600, "longest walltime a user may ask for"),
        "default_walltime": Key("walltime", 6 * 3600, "walltime when the user asks for none"),
        "sessions_dir": Key("str", "{home}/ondemand/data/sys/dashboard/batch_connect/sys/"
                            "jupyter_app/output", "where session directories are created "
                            "(template)", _required_path_template),
        "batch_script": Key("str", "/usr/libexec/sh-jupyter/jupyter_app.sbatch", "the batch "
                            "script sessions run (it execs `sh-jupyter run`)", _abs_path),
        "idle_timeout": Key("int", 0, "seconds without activity (no kernel, no open terminal, "
                            "no use of JupyterLab) after which the session ends; kernels no "
                            "notebook is connected to are culled after the same time; checked "
                            "every health_interval (0: never)", _range(0, 7 * 86400)),
        "stop_timeout": Key("int", 5, "seconds between SIGTERM and SIGKILL when stopping the "
                            "container (keep well below Slurm's KillWait)", _range(1, 60)),
        "health_interval": Key("int", 60, "seconds between HTTP health checks of a running "
                               "session", _range(5, 3600)),
        "health_failures": Key("int", 3, "health checks failed in a row after which the session "
                               "ends, with what was found dead on the card; after a failure the "
                               "next check comes within 5 s, so a session nobody can reach "
                               "shows Running for at most health_interval + (health_failures "
                               "- 1) x 5 s + 10 s", _range(1, 100)),
    },
    "image": {
        "name": Key("str", "localhost/sh-jupyter/jupyterlab:latest",
                    "JupyterLab image; must already be in the shared store (never pulled)"),
        "store": Key("str", "/var/lib/sh-jupyter/images", "the shared read-only image store, "
                     "passed to Podman as an additional image store", _abs_path),
        "command": Key("list[str]", ["jupyter-lab"], "start command; sh-jupyter appends "
                       "the server options (--port, --ServerApp.*) to it (`jupyter-lab`, not "
                       "`jupyter lab`, which starts a second interpreter to exec it)", _nonempty),
        "base_url": Key("str", "/", "JupyterLab base URL; {host} and {port} are filled in (OOD's "
                        "node proxy: /node/{host}/{port}/)",
                        check_base_url),
        "root_dir": Key("str", "/", "JupyterLab root directory: '/' so the file browser "
                        "reaches every mount", _abs_path),
        "preferred_dir": Key("str", "/mnt/jupyter_host", "directory the file browser opens in",
                             _abs_path),
    },
    "network": {
        "bind_address": Key("str", "0.0.0.0", "host address the session port is published on"),
        "connect_host": Key("str", "", "host name portals, hubs and users connect to, in "
                            "connection.yml and every URL shown: a name, or a template with "
                            "{node} (the Slurm node name) and {hostname} (the name the node "
                            "gives itself), e.g. \"{node}.ib\" (empty: the hostname)",
                            check_connect_host),
        "port_min": Key("int", 20000, "lowest port for sessions", _range(1024, 65535)),
        "port_max": Key("int", 29999, "highest port for sessions", _range(1024, 65535)),
        "port_attempts": Key("int", 5, "ports tried before giving up", _range(1, 50)),
    },
    "podman": {
        "graphroot": Key("str", NODE_DIR + "/{user}/storage", "container storage of "
                         "the user (template; empty: Podman's default, in the home directory). "
                         "Keep it on node-local disk: never NFS, never a home directory that "
                         "other nodes share (their Podman would read this node's records)",
                         _path_template),
        "runroot": Key("str", "", "Podman run root (template; empty: Podman's default)",
                       _path_template),
        "socket_dir": Key("str", "/run/user/{uid}/sh-jupyter", "where the supervisor's "
                          "Podman API socket lives (template; keep it short)",
                          _required_path_template),
        "api_timeout": Key("int", 30, "seconds for one Podman API call", _range(5, 600)),
        "runtime": Key("str", "auto", "OCI runtime of session containers: auto (crun where it "
                       "can run on this node, else runc), crun, runc",
                       _one_of("auto", "crun", "runc")),
        "keep_groups": Key("bool", True, "hand the user's supplementary groups to the container "
                           "(crun only), so group-shared project data is readable"),
        "network": Key("str", "auto", "container network mode. auto: Podman's own rootless "
                       "default, pasta from Podman 5 (slirp4netns is deprecated there) when it "
                       "is installed, else slirp4netns. Never host: the session's port would "
                       "be JupyterLab's own socket, which any user can take first",
                       _network_mode),
        "pids_limit": Key("int", 4096, "most processes in the container (a limit of its own "
                          "cgroup: only with podman.cgroups enabled)", _range(64, 1 << 22)),
        "shm_size": Key("str", "1g", "size of /dev/shm"),
        "cap_add": Key("list[str]", [], "capabilities added back after dropping all "
                       "(JupyterLab needs none)", _caps),
        "devices": Key("list[str]", [], "host devices passed into every session (never GPUs: "
                       "a session gets its job's GPUs through CDI, see [gpu])"),
        "limits": Key("str", "auto", "apply the job's CPUs and memory to the container: auto "
                      "(only where cgroup v2 is delegated), always, never. Only with cgroups "
                      "enabled: with podman.cgroups disabled the job's own cgroup limits it",
                      _one_of("auto", "always", "never")),
        "cgroups": Key("str", "auto", "where the container's processes live (Podman's "
                       "--cgroups). auto: disabled in a Slurm job on cgroup v2, else Podman's "
                       "default. disabled: in the job's own cgroup, under its memory and CPU "
                       "limits and ended with the job. enabled: a cgroup of Podman's, which on "
                       "cgroup v2 with systemd is a scope under user@UID.service, outside the "
                       "job (on cgroup v1 rootless Podman makes none: the job's holds it)",
                       _one_of("auto", "disabled", "enabled")),
    },
    "proxy": {
        "variables": Key("list[str]", ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                                       "HTTPS_PROXY", "NO_PROXY"],
                         "environment variables copied from the job into JupyterLab",
                         _copyable_env),
    },
    "limits": {
        "max_cpus": Key("int", 32, "most CPUs a session may ask for", _range(1, 4096)),
        "max_memory_gib": Key("int", 256, "most memory (GiB) a session may ask for",
                              _range(1, 65536)),
        "max_gpus": Key("int", 0, "most GPUs a session may ask for (and hold: a job with more "
                        "fails); 0: no GPU sessions", _range(0, 64)),
        "default_cpus": Key("int", 1, "CPUs when the user asks for none", _range(1, 4096)),
        "default_memory_gib": Key("int", 4, "memory (GiB) when the user asks for none",
                                  _range(1, 65536)),
        "partitions": Key("list[str]", [], "Slurm partitions a session may ask for (empty: "
                          "any; the first is the default when the user names none). `submit "
                          "--test-only` suggests the others when the asked one is busy",
                          _partition_names),
    },
    "walltime": {
        "first_warning": Key("int", 600, "seconds before the job's end at which JupyterLab "
                             "shows the time left (and an opted-in ready notice mails it); 0: "
                             "no notice", _range(0, 86400)),
        "last_warning": Key("int", 120, "seconds before the job's end of the second notice "
                            "in JupyterLab; 0: none", _range(0, 86400)),
        "save_before": Key("int", 60, "seconds before the job's end at which JupyterLab "
                           "saves every open document with unsaved changes; 0: never",
                           _range(0, 3600)),
    },
    "notify": {
        "sendmail": Key("str", "/usr/sbin/sendmail", "the system's sendmail interface, run "
                        "as the user with -t for opted-in notices", _abs_path),
        "address": Key("str", "{user}", "where a user's notices go; {user} is the login "
                       "name (the default delivers to the local mailbox)", _address),
        "card_url": Key("str", "", "link to a session's card in the notices; {session_id} and "
                        "{job_id} are filled in (empty: the notice names `sh-jupyter status "
                        "ID`)", _card_url),
    },
    "gpu": {
        "cdi_kind": Key("str", "nvidia.com/gpu", "CDI kind (VENDOR/CLASS) of the node's GPUs; a "
                        "session gets the devices of this kind whose device nodes its job may "
                        "open, named by UUID where the spec has UUID names", _cdi_kind),
        "cdi_spec_dirs": Key("list[str]", [], "CDI spec directories read after /etc/cdi and "
                             "/var/run/cdi (a later one wins a device name). Podman before 5.5 "
                             "reads only those two: list nothing here with it", _abs_paths),
        "visible_variables": Key("list[str]", ["CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
                                               "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"],
                                 "GPU variables set to the container's own view, 0..n-1 (the "
                                 "job's host-numbered values are never copied in)",
                                 _gpu_variables),
    },
}

MOUNT_SCHEMA: dict[str, Key] = {
    "source": Key("str", None, "host path (template)", _path_template),
    "target": Key("str", None, "path inside the container", _abs_path),
    "read_only": Key("bool", False, "mount read-only"),
    "create": Key("bool", False, "create the source (owned by the user) if missing"),
    "required": Key("bool", True, "fail the session if the source is missing"),
    "ephemeral": Key("bool", False, "per-session directory: created at start, deleted at the "
                     "end (source must contain {session_id} or {job_id})"),
}


IMAGE_SCHEMA: dict[str, Key] = {
    "name": Key("str", None, "what users choose (`submit --image NAME`, the portal's and the "
                "hub's forms); letters, digits, '.', '_', '-'", _name),
    "description": Key("str", "", "one line shown beside the name in the forms"),
    "reference": Key("str", None, "the image in the shared store (never pulled), e.g. "
                     "localhost/site/r:4.4"),
    "gpu": Key("bool", False, "the image needs GPUs: a request without --gpus is refused"),
}


@dataclass(frozen=True)
class SiteImage:
    """An image users may choose; the first listed is the default."""

    name: str
    reference: str
    description: str = ""
    gpu: bool = False


DEFAULT_IMAGE_NAME = "default"


@dataclass(frozen=True)
class Mount:
    """A host directory mounted into JupyterLab."""

    source: str
    target: str
    read_only: bool = False
    create: bool = False
    required: bool = True
    ephemeral: bool = False


DEFAULT_MOUNTS = (
    Mount("/safe_data", "/safe_data"),
    Mount("/safe_outputs", "/safe_outputs"),
    Mount(NODE_DIR + "/{user}/scratch/{session_id}", "/scratch",
          create=True, ephemeral=True),
    Mount("{home}/.local/share/ondemand/apps/jupyter_app", "/mnt/jupyter_host", create=True),
)


@dataclass(frozen=True)
class Config:
    """The validated site configuration: sections as dicts of checked values, plus mounts."""

    values: dict[str, dict[str, Any]]
    mounts: tuple[Mount, ...] = DEFAULT_MOUNTS
    path: str = ""
    site_images: tuple[SiteImage, ...] = ()  # [[images]]; none: image.name alone

    def __getitem__(self, dotted: str) -> Any:
        section, key = dotted.split(".")
        return self.values[section][key]

    @property
    def images(self) -> tuple[SiteImage, ...]:
        """The images users may choose, the default first: [[images]], or image.name alone
        (named "default") when the site lists none."""
        return self.site_images or (SiteImage(DEFAULT_IMAGE_NAME, self["image.name"],
                                              "JupyterLab"),)

    def image(self, name: str) -> SiteImage | None:
        return next((i for i in self.images if i.name == name), None)


def normalize(path: str) -> str:
    """normpath that also folds a leading "//" (which POSIX lets normpath keep, and Podman
    reads as "/"), so "//etc" cannot slip past the reserved-target check."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _coerce(kind: str, value: Any) -> Any:
    """Return the value as the kind, or raise TypeError with what was expected."""
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if kind == "walltime":
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str):
            try:
                return parse_walltime(value)
            except ValueError:
                pass
        raise TypeError("a Slurm time such as \"6:00:00\" or seconds")
    raise TypeError(f"must be of type {kind}")


def _check(keys: dict[str, Key], table: dict[str, Any], prefix: str, src: str) -> dict[str, Any]:
    out = {}
    for name, raw in table.items():
        if name not in keys:
            allowed = ", ".join(sorted(keys))
            raise UsageError(f"{prefix}{name}", raw, f"unknown key; allowed: {allowed}", src)
        key = keys[name]
        try:
            value = _coerce(key.kind, raw)
        except TypeError as exc:
            raise UsageError(f"{prefix}{name}", raw, str(exc), src) from None
        problem = key.check(value) if key.check else None
        if problem:
            raise UsageError(f"{prefix}{name}", value, problem, src)
        out[name] = value
    return out


def _mount(table: Any, index: int, src: str) -> Mount:
    prefix = f"mounts[{index}]."
    if not isinstance(table, dict):
        raise UsageError(f"mounts[{index}]", table, "must be a table", src)
    values = _check(MOUNT_SCHEMA, table, prefix, src)
    for required in ("source", "target"):
        if required not in values:
            raise UsageError(f"{prefix}{required}", None, "is required", src)
    mount = Mount(**values)
    target = normalize(mount.target)
    if any(target == r or target.startswith(r + "/") for r in _RESERVED_TARGETS if r != "/") \
            or target == "/":
        raise UsageError(f"{prefix}target", mount.target,
                         "must not be / or under a system directory "
                         f"({', '.join(_RESERVED_TARGETS[1:])})", src)
    names = check_path_template(mount.source)
    if mount.ephemeral and not names & {"session_id", "job_id"}:
        raise UsageError(f"{prefix}source", mount.source, "an ephemeral mount's source must "
                         "contain {session_id} or {job_id} so cleanup removes only one "
                         "session's directory", src)
    return mount


def _image(table: Any, index: int, src: str) -> SiteImage:
    if not isinstance(table, dict):
        raise UsageError(f"images[{index}]", table, "must be a table", src)
    values = _check(IMAGE_SCHEMA, table, f"images[{index}].", src)
    for required in ("name", "reference"):
        if not values.get(required):
            raise UsageError(f"images[{index}].{required}", None, "is required", src)
    return SiteImage(**values)


def parse(text: str, src: str = "<config>") -> Config:
    """Parse and validate config text; UsageError on anything wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError("file", src, f"is not valid TOML ({exc})") from None
    values = {s: {k: copy.deepcopy(key.default) for k, key in keys.items()}
              for s, keys in SCHEMA.items()}
    mounts = DEFAULT_MOUNTS
    images: tuple[SiteImage, ...] = ()
    for section, table in data.items():
        if section == "images":
            if not isinstance(table, list) or not table:
                raise UsageError("images", table, "must be a non-empty array of tables "
                                 "([[images]])", src)
            images = tuple(_image(t, i, src) for i, t in enumerate(table))
            names = [i.name for i in images]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise UsageError("images.name", dup, "each image name may be listed only once",
                                 src)
            continue
        if section == "mounts":
            if not isinstance(table, list):
                raise UsageError("mounts", table, "must be an array of tables ([[mounts]])", src)
            mounts = tuple(_mount(t, i, src) for i, t in enumerate(table))
            continue
        if section not in SCHEMA:
            allowed = ", ".join([*sorted(SCHEMA), "images", "mounts"])
            raise UsageError(section, "...", f"unknown section; allowed: {allowed}", src)
        if not isinstance(table, dict):
            raise UsageError(section, table, "must be a table", src)
        values[section].update(_check(SCHEMA[section], table, f"{section}.", src))
    _cross_check(values, mounts, src)
    return Config(values=values, mounts=mounts, path=src, site_images=images)


def _cross_check(values: dict[str, dict[str, Any]], mounts: tuple[Mount, ...], src: str) -> None:
    net, session, limits = values["network"], values["session"], values["limits"]
    if net["port_min"] > net["port_max"]:
        raise UsageError("network.port_min", net["port_min"],
                         f"must not exceed network.port_max ({net['port_max']})", src)
    if session["default_walltime"] > session["max_walltime"]:
        raise UsageError("session.default_walltime", format_walltime(session["default_walltime"]),
                         f"must not exceed session.max_walltime "
                         f"({format_walltime(session['max_walltime'])})", src)
    for what in ("cpus", "memory_gib"):
        if limits[f"default_{what}"] > limits[f"max_{what}"]:
            raise UsageError(f"limits.default_{what}", limits[f"default_{what}"],
                             f"must not exceed limits.max_{what}", src)
    _check_devices(values, src)
    targets = [normalize(m.target) for m in mounts]
    for t in targets:
        if targets.count(t) > 1:
            raise UsageError("mounts.target", t, "each target may be mounted only once", src)


def _check_devices(values: dict[str, dict[str, Any]], src: str) -> None:
    """GPUs reach a session only from its job's allocation: a GPU in podman.devices would
    reach every session of every user."""
    kind = values["gpu"]["cdi_kind"]
    for dev in values["podman"]["devices"]:
        name = dev.split(":", 1)[0]
        is_cdi = "=" in name and "/" in name.split("=", 1)[0]
        gpu_node = name.startswith("/dev/nvidia") and name[len("/dev/nvidia"):].isdigit()
        if (is_cdi and (name.startswith(kind + "=") or name.endswith("=all"))) or gpu_node \
                or name.startswith("/dev/dri"):
            raise UsageError("podman.devices", dev, "GPUs reach a session only through its "
                             "job's allocation (the [gpu] section), never podman.devices", src)


def image_choices(cfg: Config) -> str:
    """The site's images as one line, for a refusal."""
    return "; ".join(i.name + (f" ({i.description})" if i.description else "")
                     + (" [needs GPUs]" if i.gpu else "") for i in cfg.images)


def choose_image(cfg: Config, name: object, gpus: int) -> SiteImage:
    """The site image of that name (the default, first listed, when none is given);
    UsageError naming the value and the site's list for anything else: users choose among
    the site's images, never an image reference of their own."""
    if name in (None, ""):
        return cfg.images[0]
    chosen = cfg.image(name) if isinstance(name, str) else None
    if chosen is None:
        raise UsageError("--image", name, f"must be one of the site's images: "
                         f"{image_choices(cfg)}")
    if chosen.gpu and gpus < 1:
        raise UsageError("--image", name, "needs GPUs: ask for --gpus 1 or more")
    return chosen


def default() -> Config:
    """The built-in defaults (what an empty config file gives)."""
    return parse("", "<defaults>")


def config_path(cli_path: str | None = None, environ: dict[str, str] | None = None) -> str:
    """Which file to read: the CLI flag, else $SH_JUPYTER_CONFIG, else the default path."""
    environ = os.environ if environ is None else environ
    return cli_path or environ.get(ENV_VAR) or DEFAULT_PATH


def load(cli_path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the site config; a missing default file means the built-in defaults.

    A file named explicitly (flag or environment) must exist: a typo there is bad input.
    """
    path = os.path.abspath(config_path(cli_path, environ))
    explicit = bool(cli_path or (environ if environ is not None else os.environ).get(ENV_VAR))
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if explicit:
            raise UsageError("config file", path, "does not exist") from None
        return default()
    except OSError as exc:
        raise UsageError("config file", path, f"cannot be read ({exc.strerror})") from None
    return parse(text, path)


def reference_markdown() -> str:
    """The configuration reference as a Markdown table (kept in docs/configuration.md)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            default_text = (format_walltime(key.default) if key.kind == "walltime"
                            else str(key.default).lower() if key.kind == "bool"
                            else repr(key.default).replace("'", '"'))
            rows.append(f"| `{section}.{name}` | {key.kind} | `{default_text}` | {key.doc} |")
    for table, schema in (("images", IMAGE_SCHEMA), ("mounts", MOUNT_SCHEMA)):
        for name, key in schema.items():
            default_text = "required" if key.default is None else \
                repr(key.default).lower().replace("'", '"')
            rows.append(f"| `[[{table}]].{name}` | {key.kind} | {default_text} | {key.doc} |")
    return "\n".join(rows)


__all__ = ["DEFAULT_MOUNTS", "SCHEMA", "Config", "Mount", "SiteImage", "default", "load", "parse",
           "reference_markdown"]
