"""Slurm's running configuration, as `scontrol show config` prints it (doctor and the tests)."""

from __future__ import annotations

import re

from sh_jupyter.runner import run

_LINE = re.compile(r"^(\w+)(?:\[\d+\])?\s+=\s+(.*)$", re.M)


def parse(text: str) -> dict[str, str]:
    """`scontrol show config` output as key -> value.

    Slurm 23.02+ allows several Prolog/Epilog scripts and 24.11 prints them indexed
    (`Prolog[0] = ...`, 22.05: `Prolog = ...`); an indexed key's values are joined with commas,
    the way slurm.conf lists them.
    """
    conf: dict[str, str] = {}
    for key, value in _LINE.findall(text):
        conf[key] = f"{conf[key]},{value}" if key in conf else value
    return conf


def show() -> tuple[dict[str, str] | None, str]:
    """slurmctld's configuration now, or None and why it could not be had."""
    out = run(["scontrol", "show", "config"], timeout=20)
    if not out.ok:
        return None, out.why
    return parse(out.stdout), ""
