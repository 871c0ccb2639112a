"""A user's session request (cluster, partition, CPUs, memory, walltime, GPUs), validated
against the site's caps before anything is created or submitted (pure)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sh_jupyter.config import Config, choose_image
from sh_jupyter.durations import format_walltime, parse_walltime
from sh_jupyter.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A Slurm node list: names and bracketed ranges, comma-separated (node1, node[1-4,7],gpu01).
# Nothing else gets through to sbatch's command line.
_RANGE = r"[0-9]+(?:-[0-9]+)?"
_NODE = rf"[A-Za-z0-9][A-Za-z0-9_.-]*(?:\[{_RANGE}(?:,{_RANGE})*\][A-Za-z0-9_.-]*)?"
_NODELIST = re.compile(rf"^{_NODE}(?:,{_NODE})*$")


@dataclass(frozen=True)
class SessionRequest:
    cpus: int
    memory_gib: int
    walltime: int
    partition: str = ""
    cluster: str = ""
    gpus: int = 0
    nodelist: str = ""
    image: str = ""  # a name from the site's list (config.images), never a reference
    notify: bool = False  # mail the user when the session is ready, fails or nears its end

    def to_dict(self) -> dict:
        return asdict(self)


def _int(flag: str, text: str | int | None, default: int, lo: int, hi: int, what: str) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(flag, text, f"must be a whole number of {what}") from None
    if not lo <= value <= hi:
        raise UsageError(flag, text, f"must be between {lo} and {hi} {what} (site limit)")
    return value


def validate(cfg: Config, cpus: str | int | None = None, memory_gib: str | int | None = None,
             walltime: str | None = None, partition: str = "", cluster: str = "",
             gpus: str | int | None = None, *, nodelist: str = "", image: str | None = None,
             notify: object = False) -> SessionRequest:
    """Check every field against the config; UsageError names the flag, value and limit."""
    cpus_v = _int("--cpus", cpus, cfg["limits.default_cpus"], 1, cfg["limits.max_cpus"], "CPUs")
    mem_v = _int("--memory", memory_gib, cfg["limits.default_memory_gib"], 1,
                 cfg["limits.max_memory_gib"], "GiB")
    if cfg["limits.max_gpus"] == 0 and gpus not in (None, "", 0, "0"):
        raise UsageError("--gpus", gpus, "this site allows no GPUs in sessions "
                         "(limits.max_gpus = 0)")
    gpus_v = _int("--gpus", gpus, 0, 0, cfg["limits.max_gpus"], "GPUs")
    cap = cfg["session.max_walltime"]
    if walltime in (None, ""):
        wall = cfg["session.default_walltime"]
    else:
        try:
            wall = parse_walltime(str(walltime))
        except ValueError:
            raise UsageError("--time", walltime, "must be a Slurm time such as 2:00:00, 90 "
                             "(minutes) or 0-06:00:00") from None
        if wall > cap:
            raise UsageError("--time", walltime, f"must not exceed {format_walltime(cap)} "
                             "(site maximum)")
    for flag, name in (("--partition", partition), ("--cluster", cluster)):
        if name and not _NAME.match(name):
            raise UsageError(flag, name, "must be a Slurm name (letters, digits, '_', '.', '-')")
    if nodelist and (len(nodelist) > 1024 or not _NODELIST.match(nodelist)):
        raise UsageError("--nodelist", nodelist, "must be Slurm node names or ranges, e.g. "
                         "node1 or node[1-4],gpu01")
    allowed = cfg["limits.partitions"]
    if allowed and partition and partition not in allowed:
        raise UsageError("--partition", partition, f"must be one of: {', '.join(allowed)} "
                         "(limits.partitions)")
    partition = partition or (allowed[0] if allowed else "")
    chosen = choose_image(cfg, image, gpus_v)
    if not isinstance(notify, bool):
        raise UsageError("notify", notify, "must be true or false")
    return SessionRequest(cpus_v, mem_v, wall, partition, cluster, gpus_v, nodelist, chosen.name,
                          notify)
