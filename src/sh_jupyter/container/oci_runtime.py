"""Which OCI runtime a session's container runs under, and whether the user's groups reach it.

Project data in a safe haven is shared through Unix groups (`/safe_data/PROJECT`, 2770). runc
drops the user's supplementary groups when it starts the container, so a member cannot read
their own project's files inside JupyterLab. crun keeps them when asked (`keep-groups`, the OCI
annotation `run.oci.keep_original_groups=1`), but crun refuses cgroup v1 "hybrid" hosts where a
controller sits on the cgroup2 mount. The choice is pure (facts in, decision out); `node_facts`
is the thin shell that reads the facts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from sh_jupyter.errors import SessionFailure
from sh_jupyter.files import read_kernel_file as _read

# What crun reads to skip setgroups(); Podman's CLI turns `--group-add keep-groups` into this
# annotation client-side, so through the REST API it must be passed as an annotation.
KEEP_GROUPS_ANNOTATION = "run.oci.keep_original_groups"
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/usr/libexec/podman"

_LOST = ("group-shared directories (e.g. a project's /safe_data/PROJECT) will be unreadable "
         "in the container: ")
GROUPS_LOST_RUNC = _LOST + ("runc drops the user's supplementary groups (crun with "
                            "podman.keep_groups keeps them)")
GROUPS_LOST_OFF = _LOST + "podman.keep_groups is off"


@dataclass(frozen=True)
class NodeFacts:
    """What the runtime choice depends on, read from the node."""

    crun: str  # path of crun, or "" when not installed
    runc: str  # path of runc, or ""
    cgroup: str  # "v2", "v1", or "hybrid" (a controller on the cgroup2 mount: crun refuses)


@dataclass(frozen=True)
class Choice:
    """The runtime for this session and what that means for the user's groups."""

    runtime: str
    keep_groups: bool
    why: str  # one line for the session log and doctor
    warning: str = ""  # set when the user's groups will not reach the container


def cgroup_mode(v2_controllers: str | None, hybrid_controllers: str | None) -> str:
    """Classify the node's cgroups from the two controller files' contents (None: absent)."""
    if v2_controllers is not None:
        return "v2"
    if hybrid_controllers and hybrid_controllers.split():
        return "hybrid"
    return "v1"


def crun_refusal(facts: NodeFacts) -> str:
    """Why crun cannot run containers here ("" when it can)."""
    if not facts.crun:
        return "crun is not installed"
    if facts.cgroup == "hybrid":
        return ("crun refuses cgroup v1 hybrid mode with controllers on the cgroup2 mount "
                "(bind them to v1 hierarchies: see docs/admin-guide.md)")
    return ""


def choose(setting: str, keep_groups: bool, facts: NodeFacts) -> Choice:
    """The runtime for a session: crun where it can run (it keeps groups), else runc."""
    refusal = crun_refusal(facts)
    if setting == "crun" or (setting == "auto" and not refusal):
        if refusal:
            raise SessionFailure(f"podman.runtime is \"crun\" but {refusal}")
        why = "crun" + (" with keep-groups (the user's groups reach the container)"
                        if keep_groups else " (podman.keep_groups is off)")
        return Choice("crun", keep_groups, why, "" if keep_groups else GROUPS_LOST_OFF)
    if not facts.runc:
        raise SessionFailure("no usable OCI runtime: runc is not installed"
                             + (f" and {refusal}" if refusal else ""))
    reason = "podman.runtime is \"runc\"" if setting == "runc" else refusal
    return Choice("runc", False, f"runc ({reason})", GROUPS_LOST_RUNC if keep_groups else "")


def node_facts(search_path: str = SEARCH_PATH) -> NodeFacts:
    """Read the facts from this node (cheap: two small files and two PATH lookups)."""
    return NodeFacts(
        crun=shutil.which("crun", path=search_path) or "",
        runc=shutil.which("runc", path=search_path) or "",
        cgroup=cgroup_mode(_read("/sys/fs/cgroup/cgroup.controllers"),
                           _read("/sys/fs/cgroup/unified/cgroup.controllers")),
    )


def user_groups() -> list[int]:
    """The supplementary groups this process holds (what keep-groups hands to the container)."""
    primary = os.getgid()
    return sorted(g for g in set(os.getgroups()) if g != primary)
