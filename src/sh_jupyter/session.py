"""A session's identity and the files that describe it (pure: no I/O here).

A session is one JupyterLab run: a UUID like the portals use, a directory holding the job's files,
a machine-readable status file (the job card's source) and, once JupyterLab answers, the
OOD-compatible connection file.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

STATUS_FILE = "status.json"
CONNECTION_FILE = "connection.yml"
LOG_FILE = "output.log"
REQUEST_FILE = "request.json"
LOCAL_JOB_ID = "local"  # the job id of a `run --local` session (no Slurm job)

PHASES = ("Queued", "Starting", "Running", "Completed")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_session_id() -> str:
    """A fresh session id (a UUID, as Open OnDemand uses)."""
    return str(uuid.uuid4())


def is_session_id(text: str) -> bool:
    return bool(_UUID.fullmatch(text))


def new_secret() -> str:
    """The session's password/token: 256 bits from `secrets`, 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def epoch_iso(epoch: float) -> str:
    """An epoch in the status file's ISO form (UTC); "" for Slurm's "no time" (0)."""
    if epoch <= 0:
        return ""
    return datetime.fromtimestamp(int(epoch), timezone.utc).isoformat(timespec="seconds")


def container_name(prefix: str, session_id: str) -> str:
    return f"{prefix}-{session_id}"


def running_message(name: str) -> str:
    """The sentence the app's documentation promises on the job card."""
    return f"JupyterLab is running in Podman container {name}"


@dataclass(frozen=True)
class Status:
    """The job card's data: written by the supervisor, read by `status`, `list` and portals."""

    session_id: str
    phase: str = "Queued"
    job_id: str = ""
    created_at: str = ""
    started_at: str = ""
    ready_at: str = ""
    checked_at: str = ""  # the last health check that found JupyterLab answering
    ended_at: str = ""
    host: str = ""
    port: int = 0
    base_url: str = "/"
    container: str = ""
    message: str = ""
    failed: bool = False
    reason: str = ""
    cpus: int = 0
    memory_gib: int = 0
    gpus: int = 0
    walltime: int = 0
    connection_timeout: int = 0
    image: str = ""  # the site image's name (config [[images]])
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Status:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def advance(self, phase: str, **changes: Any) -> Status:
        """A copy in a later phase; phases never go backwards."""
        if PHASES.index(phase) < PHASES.index(self.phase):
            raise ValueError(f"cannot go from {self.phase} to {phase}")
        return replace(self, phase=phase, **changes)

    def fail(self, reason: str) -> Status:
        """The final state of a session that did not end as the user asked."""
        return replace(self, phase="Completed", failed=True, reason=one_line(reason),
                       ended_at=self.ended_at or now_iso())


REASON_MAX = 240


def one_line(text: str, limit: int = REASON_MAX) -> str:
    """A card reason is one short line: whitespace folded, long text cut (details belong in
    output.log, where the supervisor writes them)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def connection_yaml(host: str, port: int, password: str) -> str:
    """connection.yml as Open OnDemand's batch-connect reads it (YAML.safe_load).

    JSON string quoting is valid YAML double-quoted scalar syntax, so no value can break out.
    """
    def quote(value: str) -> str:  # DEL is ASCII, so json leaves it raw; YAML refuses it
        return json.dumps(value).replace("\x7f", "\\u007f")
    return f"host: {quote(host)}\nport: {int(port)}\npassword: {quote(password)}\n"


CONNECT_HOST_FIELDS = ("node", "hostname")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.-]*$")


def check_connect_host(template: str) -> str | None:
    """What is wrong with a connect_host template (None when it is fine): a host name, or
    {node} and {hostname} with host-name characters around them."""
    rest = template
    for name in CONNECT_HOST_FIELDS:
        rest = rest.replace("{" + name + "}", "")
    if "{" in rest or "}" in rest:
        return "only {node} and {hostname} may be used as placeholders"
    if not _HOST_CHARS.match(rest):
        return "must be a host name (letters, digits, '.' and '-') or a template of one"
    return None


def connect_host(template: str, node: str, hostname: str) -> str:
    """The host name a portal, a hub or a user connects to: the template with {node} (the
    Slurm node name) and {hostname} (the name the node gives itself) filled in; empty: the
    hostname, which is what a portal's own `hostname` call would have said."""
    if not template:
        return hostname
    return template.replace("{node}", node or hostname.split(".", maxsplit=1)[0]) \
        .replace("{hostname}", hostname)


def resolve_base_url(template: str, host: str, port: int) -> str:
    """The base URL with {host} and {port} filled in (portals proxy /node/HOST/PORT/)."""
    return template.replace("{host}", host).replace("{port}", str(int(port)))


def lab_url(host: str, port: int, base_url: str, token: str | None = None) -> str:
    """The URL a browser opens; with a token it logs in automatically."""
    url = f"http://{host}:{port}{base_url}lab"
    return f"{url}?token={token}" if token else url
