"""Who runs a command: sessions always run as the user they belong to, never root."""

from __future__ import annotations

import os
import pwd

from sh_jupyter.errors import UsageError


def current_user() -> pwd.struct_passwd:
    return pwd.getpwuid(os.getuid())


def session_user() -> pwd.struct_passwd:
    """The invoking user, who must not be root: sessions run as the user they belong to."""
    me = current_user()
    if me.pw_uid == 0:
        raise UsageError("user", "root", "sessions run as the user they belong to, never root")
    return me
