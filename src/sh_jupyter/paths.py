"""Path templates such as "{home}/.local/share/ondemand/apps/jupyter_app", expanded safely.

Only the placeholders below exist; values are checked so a user name or session id can never
walk a path out of where the site put it.
"""

from __future__ import annotations

import posixpath
import re
import string
from dataclasses import dataclass

PLACEHOLDERS = ("user", "home", "uid", "session_id", "job_id")

# Node-local per-user directories (session scratch, and Podman storage where a site puts it
# off NFS homes) live in NODE_DIR/USER. NODE_DIR is root's (0755) and the Slurm prolog creates
# NODE_DIR/USER (0700, the user's): in world-writable /var/tmp any user could otherwise create
# another user's directory first and own or redirect everything in it.
NODE_DIR = "/var/tmp/sh-jupyter"
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class TemplateContext:
    """The values a template may use; home is an absolute path, the others single path parts."""

    user: str
    home: str
    uid: int
    session_id: str
    job_id: str


def placeholders_in(template: str) -> set[str]:
    """The placeholder names used in a template; ValueError on bad syntax or unknown names."""
    names = set()
    for _literal, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conv:
            raise ValueError(f"unknown placeholder {{{name}}}; allowed: {', '.join(PLACEHOLDERS)}")
        names.add(name)
    return names


def check_path_template(template: str) -> set[str]:
    """Validate an absolute path template; returns its placeholders."""
    names = placeholders_in(template)
    if not template.startswith(("/", "{home}")):
        raise ValueError("must be an absolute path (or start with {home})")
    if ".." in template.split("/"):
        raise ValueError("must not contain '..'")
    return names


def expand_path(template: str, ctx: TemplateContext) -> str:
    """Expand a checked template; ValueError if a value could escape its path component."""
    for name in ("user", "session_id", "job_id"):
        value = getattr(ctx, name)
        if not _SAFE_VALUE.fullmatch(value) or value in {".", ".."}:
            raise ValueError(f"{name} {value!r} is not a safe path component")
    if not ctx.home.startswith("/") or ".." in ctx.home.split("/"):
        raise ValueError(f"home {ctx.home!r} is not an absolute path")
    path = template.format(
        user=ctx.user, home=ctx.home, uid=ctx.uid, session_id=ctx.session_id, job_id=ctx.job_id
    )
    return posixpath.normpath(path)
