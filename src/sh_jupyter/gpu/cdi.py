"""CDI spec files, read the way Podman's CDI registry reads them, so the device sh-jupyter
checks is the device Podman injects.

Like the registry: every `*.json` and `*.yaml` file directly in each spec directory, the
directories in priority order (a later one wins a name), two definitions of one name at the
same priority cancel each other. Unlike it, nothing is skipped quietly: Podman logs a spec it
cannot read only at debug level and goes on without it, while here an unreadable or malformed
spec fails the session with its file and reason (it may be the one holding the job's GPU).
YAML (what `nvidia-ctk cdi generate` writes by default) needs PyYAML; JSON needs nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sh_jupyter.config import valid_cdi_kind as valid_kind
from sh_jupyter.errors import SessionFailure

DEFAULT_DIRS = ("/etc/cdi", "/var/run/cdi")  # what every Podman reads; before 5.5 only these
SUFFIXES = (".json", ".yaml")
# Highest CDI spec version each Podman reads (its vendored container-device-interface).
_PODMAN_MAX_SPEC = (((5, 5), "1.0.0"), ((5, 2), "0.8.0"), ((5, 1), "0.7.0"), ((4, 7), "0.6.0"),
                    ((4, 1), "0.5.0"))
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_SPEC_KEYS = {"cdiVersion", "kind", "devices", "containerEdits", "annotations"}
_DEVICE_KEYS = {"name", "containerEdits", "annotations"}
_EDIT_KEYS = {"env", "deviceNodes", "hooks", "mounts", "intelRdt", "additionalGids",
              "netDevices"}
_NODE_KEYS = {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid",
              "gid"}
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")


class CdiError(SessionFailure):
    """A CDI spec that cannot be trusted to say what Podman will inject."""


@dataclass(frozen=True)
class SpecNode:
    """A deviceNodes entry as written."""

    path: str
    host_path: str = ""
    type: str = ""
    major: int | None = None
    minor: int | None = None


@dataclass(frozen=True)
class SpecDevice:
    kind: str
    name: str
    nodes: tuple[SpecNode, ...]
    spec: str  # file
    priority: int  # index of its directory


@dataclass(frozen=True)
class Spec:
    path: str
    priority: int
    version: str
    kind: str
    devices: tuple[SpecDevice, ...] = ()
    common_nodes: tuple[SpecNode, ...] = ()  # spec-level edits: injected with every device


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def max_spec_version(podman_version: tuple[int, ...]) -> str | None:
    """The newest CDI spec version this Podman reads (None: it has no CDI support)."""
    for since, version in _PODMAN_MAX_SPEC:
        if podman_version[:2] >= since:
            return version
    return None


def podman_reads_extra_dirs(podman_version: tuple[int, ...]) -> bool:
    """Podman 5.5 added containers.conf cdi_spec_dirs; before, only DEFAULT_DIRS."""
    return podman_version[:2] >= (5, 5)


# -- parsing (pure) ------------------------------------------------------------------------

def _strict_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in items]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate key(s) {sorted(dup)}")
        return dict(items)
    return json.loads(text, object_pairs_hook=pairs)


def _strict_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ValueError("is YAML, and reading YAML needs PyYAML (python3-pyyaml), which is "
                         "not installed; install it, or write the spec as JSON "
                         "(nvidia-ctk cdi generate --format=json)") from None

    class Loader(yaml.SafeLoader):
        """SafeLoader refusing duplicate keys, as Podman's strict unmarshalling does."""

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dup = {str(k) for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"duplicate key(s) {sorted(dup)}")
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ValueError(f"is not valid YAML ({' '.join(str(exc).split())})") from None


def _node(raw: Any, where: str) -> SpecNode:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise ValueError(f"{where}: a device node needs a string 'path'")
    unknown = set(raw) - _NODE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    path, host = raw["path"], raw.get("hostPath") or ""
    if not path.startswith("/") or not isinstance(host, str) or (host and host[0] != "/"):
        raise ValueError(f"{where}: device node paths must be absolute ({path!r}, {host!r})")
    numbers = []
    for key in ("major", "minor"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{where}: {key} must be a number")
        numbers.append(value)
    kind = raw.get("type") or ""
    if kind not in ("", "c", "b", "u", "p"):
        raise ValueError(f"{where}: type {kind!r} is not c, b, u or p")
    return SpecNode(path, host, "c" if kind == "u" else kind, numbers[0], numbers[1])


def _edits(raw: Any, where: str) -> tuple[SpecNode, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: containerEdits must be a mapping")
    unknown = set(raw) - _EDIT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown containerEdits field(s) {sorted(unknown)}")
    nodes = raw.get("deviceNodes") or []
    if not isinstance(nodes, list):
        raise ValueError(f"{where}: deviceNodes must be a list")
    return tuple(_node(n, f"{where}, deviceNodes[{i}]") for i, n in enumerate(nodes))


def parse_spec(text: str, path: str, priority: int = 0) -> Spec:
    """One spec file's content; CdiError naming the file on anything Podman would refuse."""
    try:
        raw = _strict_yaml(text) if path.endswith(".yaml") else _strict_json(text)
    except ValueError as exc:
        problem = str(exc)
        if not path.endswith(".yaml") and not problem.startswith("duplicate"):
            problem = f"is not valid JSON ({problem})"
        raise CdiError(f"CDI spec {path} {problem}") from None
    try:
        return _spec(raw, path, priority)
    except ValueError as exc:
        raise CdiError(f"CDI spec {path} is malformed: {exc}") from None


def _spec(raw: Any, path: str, priority: int) -> Spec:
    if not isinstance(raw, dict):
        raise ValueError("its top level must be a mapping")
    version, kind = raw.get("cdiVersion"), raw.get("kind")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"cdiVersion {version!r} is not a version such as \"0.5.0\"")
    if not isinstance(kind, str) or not valid_kind(kind):
        raise ValueError(f"kind {kind!r} is not VENDOR/CLASS (e.g. nvidia.com/gpu)")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    devices_raw = raw.get("devices")
    if not isinstance(devices_raw, list):
        raise ValueError("'devices' must be a list")
    devices, seen = [], set()
    for i, d in enumerate(devices_raw):
        where = f"devices[{i}]"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ValueError(f"{where} needs a string 'name'")
        if set(d) - _DEVICE_KEYS:
            raise ValueError(f"{where}: unknown field(s) {sorted(set(d) - _DEVICE_KEYS)}")
        name = d["name"]
        if not _NAME.match(name):
            raise ValueError(f"{where}: name {name!r} is not a valid CDI device name")
        if name in seen:
            raise ValueError(f"device {name!r} is defined twice")
        seen.add(name)
        devices.append(SpecDevice(kind, name, _edits(d.get("containerEdits"), where), path,
                                  priority))
    return Spec(path, priority, version, kind, tuple(devices),
                _edits(raw.get("containerEdits"), "containerEdits"))


def resolve(specs: Sequence[Spec], kind: str, default_dirs: int = len(DEFAULT_DIRS)
            ) -> list[SpecDevice]:
    """The devices of `kind` as Podman's registry resolves their names.

    A later directory wins a name; two files in one directory naming one device cancel it
    (Podman then cannot resolve it either). A name that a directory after the first
    `default_dirs` wins must be defined the same way in the directories before it: a Podman
    that reads only the default directories would inject that other definition.
    """
    chosen: dict[str, SpecDevice] = {}
    all_defs: dict[str, list[SpecDevice]] = {}
    conflicts: dict[str, list[str]] = {}
    for spec in sorted(specs, key=lambda s: (s.priority, s.path)):
        if spec.kind != kind:
            continue
        for dev in spec.devices:
            all_defs.setdefault(dev.name, []).append(dev)
            old = chosen.get(dev.name)
            if old is not None and old.priority == dev.priority:
                conflicts.setdefault(dev.name, [old.spec]).append(dev.spec)
            chosen[dev.name] = dev
    if conflicts:
        name, files = sorted(conflicts.items())[0]
        raise CdiError(f"CDI device {kind}={name} is defined in {' and '.join(files)} (same "
                       "directory): Podman cannot resolve it; remove one")
    for name, dev in chosen.items():
        if dev.priority < default_dirs:
            continue
        others = [d for d in all_defs[name] if d.priority < default_dirs and d.nodes != dev.nodes]
        if others:
            raise CdiError(f"CDI device {kind}={name} in {dev.spec} differs from its definition "
                           f"in {others[0].spec}, which a Podman reading only "
                           f"{' and '.join(DEFAULT_DIRS)} would inject instead")
    return [chosen[name] for name in sorted(chosen)]


# -- files (the only I/O here) -------------------------------------------------------------

def spec_files(directory: str) -> list[str]:
    """The spec files directly in a directory, in name order (a missing one has none)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CdiError(f"CDI spec directory {directory} cannot be read "
                       f"({exc.strerror})") from None
    return [os.path.join(directory, n) for n in names
            if n.endswith(SUFFIXES) and not os.path.isdir(os.path.join(directory, n))]


def read_specs(dirs: Sequence[str]) -> list[Spec]:
    """Every spec in the directories (priority = position); CdiError on the first bad one."""
    specs = []
    for priority, directory in enumerate(dirs):
        for path in spec_files(directory):
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise CdiError(f"CDI spec {path} cannot be read ({exc.strerror}); specs must "
                               "be readable by every user (chmod 0644)") from None
            except UnicodeDecodeError:
                raise CdiError(f"CDI spec {path} is not UTF-8 text") from None
            specs.append(parse_spec(text, path, priority))
    return specs
