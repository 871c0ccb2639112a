"""What another launcher (a JupyterHub spawner, a portal) may change about the server a session
runs, and how its secrets reach the container (pure validation; `write_env`/`take_env` are the
thin file shell).

A launcher's secrets (e.g. the hub's API token) never travel in argv, the sbatch environment,
the job script, scheduler records, spawner state or logs: the submit side writes them to a 0600
file in the session's 0700 directory, and the supervisor reads that file into the container's
environment through the Podman API and deletes it before the container starts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sh_jupyter.config import OWN_ENV, check_base_url
from sh_jupyter.errors import SessionFailure, UsageError
from sh_jupyter.files import write_private

ENV_FILE = "launch-env.json"
AUTH_MODES = ("token", "launcher")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class LaunchOptions:
    """A launcher's changes to the session's server; the defaults change nothing."""

    # Replaces image.command (e.g. ["jupyterhub-singleuser"]); the server options sh-jupyter
    # appends (--port, --ServerApp.*) still follow it.
    command: tuple[str, ...] = ()
    # Replaces image.base_url (e.g. JupyterHub's /user/NAME/).
    base_url: str = ""
    # "token": sh-jupyter's secret logs in and readiness checks it. "launcher": the command
    # authenticates by itself (JupyterHub OAuth); readiness then needs only an HTTP answer.
    auth: str = "token"

    def to_dict(self) -> dict:
        return {"command": list(self.command), "base_url": self.base_url, "auth": self.auth}


def validate(command: object = (), base_url: object = "", auth: object = "token") -> LaunchOptions:
    """Check a launcher's options; UsageError names the field, the value and what is allowed."""
    if isinstance(command, str) or not isinstance(command, (list, tuple)) or not all(
            isinstance(part, str) and part and "\0" not in part for part in command):
        raise UsageError("command", command, "must be a list of non-empty strings")
    if not isinstance(base_url, str) or (base_url and check_base_url(base_url)):
        raise UsageError("base_url", base_url, check_base_url(str(base_url)) or
                         "must be a string")
    if auth not in AUTH_MODES:
        raise UsageError("auth", auth, f"must be one of: {', '.join(AUTH_MODES)}")
    return LaunchOptions(tuple(command), base_url, str(auth))


def from_dict(data: object) -> LaunchOptions:
    """The options as request.json records them (absent: the defaults)."""
    if not data:
        return LaunchOptions()
    if not isinstance(data, dict):
        raise UsageError("request.json launch", data, "must be an object")
    unknown = set(data) - {"command", "base_url", "auth"}
    if unknown:
        raise UsageError("request.json launch", sorted(unknown), "unknown keys; allowed: "
                         "auth, base_url, command")
    return validate(data.get("command", ()), data.get("base_url", ""),
                    data.get("auth", "token"))


def check_env(environment: Mapping[str, str]) -> dict[str, str]:
    """A launcher's extra environment: variable names, string values, none of our own."""
    out = {}
    for name, value in environment.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise UsageError("environment", name, "must be a variable name (letters, digits, "
                             "'_', not starting with a digit)")
        if name in OWN_ENV:
            raise UsageError("environment", name, "is set by sh-jupyter itself")
        if not isinstance(value, str) or "\0" in value:
            raise UsageError(f"environment[{name}]", "...", "must be a string without NUL")
        out[name] = value
    return out


def write_env(session_dir: str, environment: Mapping[str, str]) -> None:
    """Hand secrets to the session: 0600, in the 0700 session directory, never logged."""
    if environment:
        write_private(os.path.join(session_dir, ENV_FILE),
                      json.dumps(check_env(environment)) + "\n")


def take_env(session_dir: str) -> dict[str, str]:
    """Read the launcher's environment and delete the file at once (it holds secrets)."""
    path = os.path.join(session_dir, ENV_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    finally:
        if os.path.lexists(path):
            os.unlink(path)
    try:
        data = json.loads(text)
    except ValueError:
        raise SessionFailure(f"{ENV_FILE} is not valid JSON") from None
    if not isinstance(data, dict):
        raise SessionFailure(f"{ENV_FILE} must hold an object")
    try:
        return check_env(data)
    except UsageError as exc:
        raise SessionFailure(f"{ENV_FILE}: {exc}") from None
