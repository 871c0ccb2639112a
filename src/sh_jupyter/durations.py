"""Slurm-style time values ("6:00:00", "1-00:00:00", "90" minutes) as seconds, and back."""

from __future__ import annotations

import re

_SLURM_TIME = re.compile(
    r"^(?:(?P<days>\d+)-)?(?:(?P<a>\d+))(?::(?P<b>\d+))?(?::(?P<c>\d+))?$"
)


def parse_walltime(text: str) -> int:
    """Parse a Slurm --time value into seconds; ValueError if it is not one.

    Accepted as sbatch does: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
    """
    m = _SLURM_TIME.match(text.strip())
    if not m or text.strip() in {"", "0"}:
        raise ValueError(text)
    days = int(m["days"] or 0)
    parts = [int(p) for p in (m["a"], m["b"], m["c"]) if p is not None]
    if m["days"] is not None:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(text)
    return total


def format_walltime(seconds: int) -> str:
    """Seconds as Slurm's [D-]HH:MM:SS."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
