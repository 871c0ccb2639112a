"""The JupyterHub spawner: each user's server is an sh-jupyter session, a Slurm job whose
supervisor runs `jupyterhub-singleuser` in the user's rootless Podman container (the same
mounts and hardening as any session).

What it improves on batchspawner: a container; the hub's token never in
argv, the sbatch environment, the job script, spawner state or logs (it goes on the user-side
command's standard input into the session's 0600 file); a failing squeue is "unknown", never
"gone"; a job that ends before its server answers fails the spawn at once with the card's
reason; one shared poller for all spawners' jobs (jobs.py).

Every session operation runs as the user through sh-jupyter's CLI (usercli.py); the hub itself
only asks Slurm about job states.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import os
import pwd
import re
import shutil
import socket
import sys
import time

from jupyterhub.spawner import Spawner, SpawnException
from jupyterhub.traitlets import Command
from traitlets import Float, Integer, List, Unicode, default

from sh_jupyter import config as config_mod
from sh_jupyter.config import OWN_ENV
from sh_jupyter.errors import UsageError
from sh_jupyter.jupyterhub import jobs, usercli
from sh_jupyter.launch import check_env
from sh_jupyter.session import is_session_id
from sh_jupyter.slurm.squeue_json import JobInfo
from sh_jupyter.submitter.card import pending_words

# What a user may choose per spawn (user_options, e.g. from an options form).
USER_OPTIONS = ("cpus", "memory_gib", "walltime", "partition", "gpus", "nodelist", "image")

# What the user-side CLI prints is the user's to shape (it reads files in their home), so the
# hub checks every value before it passes one to squeue or routes its proxy to it.
_JOB_ID = re.compile(r"[0-9]{1,10}")  # Slurm job ids are 32-bit
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_CARD_URL = re.compile(r"http://(?P<host>[^/?#@\[\]]+):(?P<port>[0-9]{1,5})(?P<path>/[^?#]*)")


def check_job_id(value: object) -> str:
    """A Slurm job id: digits only (it goes to squeue and into the hub's state)."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _JOB_ID.fullmatch(text):
        raise SpawnException(f"the session's job id {str(value)[:40]!r} is not a Slurm job id "
                             "(digits only)", reason="bad-card")
    return text


def check_host(value: object) -> str:
    """A host name or IP address, nothing that could carry a path, a user or a port."""
    text = value if isinstance(value, str) else ""
    if len(text) <= 253 and _HOSTNAME.fullmatch(text):
        return text
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            pass
    raise SpawnException(f"the session's host {str(value)[:80]!r} is not a host name or IP "
                         "address", reason="bad-card")


def route_target(url: object, base_url: str, ports: tuple[int, int]) -> tuple[str, int]:
    """Host and port of a Running card's URL, which must be exactly what the supervisor
    writes for this server (`http://HOST:PORT{base_url}lab`, a port of the site's session
    range); anything else fails the spawn before the proxy routes to it."""
    text = url if isinstance(url, str) else ""
    found = _CARD_URL.fullmatch(text) if text.isascii() and text.isprintable() else None
    if not found or found["path"] != f"{base_url}lab":
        raise SpawnException(f"the session's URL {text[:120]!r} is not this server's "
                             f"(http://HOST:PORT{base_url}lab)", reason="bad-card")
    host, port = check_host(found["host"]), int(found["port"])
    if not ports[0] <= port <= ports[1]:
        raise SpawnException(f"the session's port {port} is outside the site's session ports "
                             f"{ports[0]}-{ports[1]}", reason="bad-card")
    return host, port


def _shown(host: object) -> str:
    """A card's host for a progress message: only a well-formed one is repeated."""
    try:
        return check_host(host)
    except SpawnException:
        return "its node"


def on_node(host: str, node: str) -> bool:
    """True when `host` names the job's node (per Slurm): the node's name, a domain name
    under it, or a name or address that resolves to one of the node's addresses."""
    host, node = host.lower().rstrip("."), node.lower()
    if not node or not _HOSTNAME.fullmatch(node):
        return False  # no node, or a node list: nothing to match
    if host == node or host.startswith(node + "."):
        return True

    def addresses(name: str) -> set[str]:
        try:
            return {info[4][0] for info in socket.getaddrinfo(name, None)}
        except (OSError, UnicodeError):
            return set()
    mine = addresses(host)
    return bool(mine) and bool(mine & addresses(node))


def queue_message(view: JobInfo, now: float | None = None) -> str:
    """The spawn page's line for a pending job: Slurm's reason and its start estimate."""
    words = pending_words(view.reason)
    why = f" ({view.reason}: {words})" if words and words != view.reason else \
        (f" ({view.reason})" if words else "")
    line = f"Queued: waiting in Slurm's queue{why}"
    if view.start_time > 0:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(view.start_time))
        left = view.start_time - (time.time() if now is None else now)
        rel = "any moment now" if left <= 60 else f"in about {round(left / 60)} min"
        line += f"; Slurm expects it to start at {stamp} ({rel})"
    return line


def image_form(spawner: SHJupyterSpawner) -> str:
    """The options form: a choice among the site's images (none when it offers only one)."""
    try:
        images = config_mod.load(spawner.config_file or None).images
    except UsageError as exc:
        spawner.log.error("sh-jupyter config: %s", exc)
        return ""
    if len(images) < 2:
        return ""
    options = "".join(
        f'<option value="{html.escape(i.name)}"{" selected" if n == 0 else ""}>'
        f'{html.escape(i.name)}{" — " + html.escape(i.description) if i.description else ""}'
        f'{" (needs GPUs)" if i.gpu else ""}</option>' for n, i in enumerate(images))
    return ('<label for="sh-jupyter-image">Environment</label>'
            f'<select class="form-control" id="sh-jupyter-image" name="image">{options}</select>')


def _default_executable() -> str:
    """The sh-jupyter installed beside the hub's Python, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "sh-jupyter")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("sh-jupyter") or "/usr/bin/sh-jupyter"


class SHJupyterSpawner(Spawner):
    """Spawn each user's server as an sh-jupyter session on a Slurm compute node."""

    sh_jupyter = Command(
        help="The sh-jupyter command as the user runs it (every user must be able to execute "
        "it). Default: the one beside the hub's Python, else on PATH.",
    ).tag(config=True)

    @default("sh_jupyter")
    def _default_sh_jupyter(self) -> list[str]:
        return [_default_executable()]

    run_as = Command(
        help="Prefix that runs a command as the user; {username}, {uid} and {gid} are "
        "replaced. Default: `setpriv --reuid={uid} --regid={gid} --init-groups --` when the hub "
        "runs as root, else `sudo -n -u {username} --` (then sudoers must allow exactly the "
        "sh-jupyter command; see docs/integrators.md).",
    ).tag(config=True)

    @default("run_as")
    def _default_run_as(self) -> list[str]:
        return list(usercli.default_run_as(os.geteuid()))

    config_file = Unicode(
        "", help="sh-jupyter site config passed as --config (empty: the site default, "
        "/etc/sh-jupyter/config.toml).",
    ).tag(config=True)

    pass_env = List(
        Unicode(), default_value=["SLURM_CONF"],
        help="Variables of the hub's environment given to the user-side sh-jupyter commands "
        "(the rest of the hub's environment, which holds its secrets, never is).",
    ).tag(config=True)

    req_cpus = Integer(0, help="CPUs (0: the site default)").tag(config=True)
    req_memory_gib = Integer(0, help="memory in GiB (0: the site default)").tag(config=True)
    req_walltime = Unicode("", help="walltime, e.g. 2:00:00 (empty: the site default)"
                           ).tag(config=True)
    req_partition = Unicode("", help="Slurm partition").tag(config=True)
    req_cluster = Unicode("", help="Slurm cluster (-M)").tag(config=True)
    req_gpus = Integer(0, help="GPUs, where the site allows them").tag(config=True)
    req_nodelist = Unicode("", help="Slurm nodes the server may run on (sbatch --nodelist)"
                           ).tag(config=True)

    check_interval = Float(
        1.0, help="Seconds between looks at the job's state while the server starts (through "
        "the hub's shared poller).",
    ).tag(config=True)

    cancel_timeout = Float(
        120.0, help="Seconds stop() waits for the cancelled job to end (its container removed "
        "and its epilog done).",
    ).tag(config=True)

    @default("options_form")
    def _default_options_form(self):
        return image_form  # the site's images, when it offers more than one

    def options_from_form(self, formdata: dict) -> dict:
        """The image the user chose (checked against the site's list by `submit`, as the
        user: a name not in it fails the spawn with the list)."""
        chosen = (formdata.get("image") or [""])[0]
        return {"image": chosen} if chosen else {}

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        return []  # the hub's PATH or VIRTUAL_ENV mean nothing inside the container

    @default("ip")
    def _default_ip(self) -> str:
        return "0.0.0.0"  # inside the container; sh-jupyter publishes the port on the node

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return 300  # queue wait plus sh-jupyter's own connection timeout

    # -- state: only the job and session ids (never a token) ----------------------------------
    job_id = Unicode("")
    session_id = Unicode("")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._starting = False
        self._ports = (0, -1)  # the site's session ports, read at each start
        self._events: list[dict] = []
        self._news = asyncio.Event()
        self._next_look = 0.0  # seconds until the poller's next squeue, as of the last look

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.job_id = state.get("job_id", "")
        self.session_id = state.get("session_id", "")

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:
            state.update(job_id=self.job_id, session_id=self.session_id)
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = self.session_id = ""

    # -- helpers -----------------------------------------------------------------------------
    def _cli(self) -> usercli.UserCLI:
        name = self.user.name
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise SpawnException(f"there is no system user {name!r} to run the session as",
                                 reason="no-system-user") from None
        return usercli.UserCLI(name, pw.pw_dir, tuple(self.run_as), tuple(self.sh_jupyter),
                               self.config_file, usercli.pass_env(self.pass_env))

    def _jobs(self) -> jobs.JobStates:
        return jobs.shared(self.req_cluster)

    async def _view(self, hurry: bool = False) -> jobs.JobView:
        """The job's state from the shared poller; anything going wrong is "unknown".

        `hurry`: the poller asks Slurm at once and then every 0.1 s until the job is calmed or
        forgotten (a change is expected soon). Every call to the poller runs in a thread: one
        may wait for another spawner's squeue in progress. Afterwards `_next_look` holds the
        seconds until the poller's next squeue."""
        states, job_id, user = self._jobs(), self.job_id, self.user.name

        def look() -> jobs.JobView:
            states.watch(job_id, user)
            if hurry:
                states.hurry(job_id)
            view = states.view(job_id)
            self._next_look = states.seconds_to_next()
            return view
        try:
            return await asyncio.get_running_loop().run_in_executor(None, look)
        except Exception as exc:  # noqa: BLE001 - a poll must never drop a server over this
            self._next_look = self.check_interval
            return jobs.Unknown(f"{type(exc).__name__}: {exc}")

    async def _until_next_look(self) -> None:
        """Sleep until the poller's next squeue (at most check_interval, at least 10 ms)."""
        await asyncio.sleep(min(self.check_interval, max(0.01, self._next_look)))

    def _calm(self) -> None:
        """The job need no longer be hurried (the poller backs off again)."""
        try:
            self._jobs().calm(self.job_id)
        except Exception as exc:  # noqa: BLE001 - only a pace: never fail a spawn over it
            self.log.debug("%s: calming job %s: %s", self._log_name, self.job_id, exc)

    def _event(self, progress: int, message: str) -> None:
        self._events.append({"progress": progress, "message": message})
        self.log.info("%s: %s", self._log_name, message)
        news, self._news = self._news, asyncio.Event()
        news.set()

    def server_env(self) -> dict[str, str]:
        """The server's environment: JupyterHub's (with the API token), minus what
        sh-jupyter sets in the container itself; only names are logged."""
        env = {k: str(v) for k, v in self.get_env().items()}
        dropped = sorted(k for k in env if k in OWN_ENV)
        if dropped:
            self.log.debug("%s: not passing %s (set by sh-jupyter)", self._log_name, dropped)
        return check_env({k: v for k, v in env.items() if k not in OWN_ENV})

    def session_request(self) -> dict:
        """What `sh-jupyter submit --stdin` gets: resources, the single-user command, its base
        URL, JupyterHub's own authentication, and the environment (secrets included)."""
        options = dict(self.user_options or {})
        unknown = sorted(set(options) - set(USER_OPTIONS))
        if unknown:
            raise SpawnException(f"unknown options {unknown}; allowed: {', '.join(USER_OPTIONS)}",
                                 reason="bad-options")
        chosen = {"cpus": self.req_cpus or None, "memory_gib": self.req_memory_gib or None,
                  "walltime": self.req_walltime or None, "partition": self.req_partition,
                  "gpus": self.req_gpus or None, "nodelist": self.req_nodelist, **options}
        request = {k: v for k, v in chosen.items() if v not in (None, "")}
        if self.req_cluster:
            request["cluster"] = self.req_cluster
        try:
            environment = self.server_env()
        except UsageError as exc:
            raise SpawnException(f"the server's environment: {exc}",
                                 reason="bad-environment") from None
        request.update(command=[*self.cmd, *self.get_args()], base_url=self.server.base_url,
                       auth="launcher", environment=environment)
        return request

    # -- the Spawner API -------------------------------------------------------------------
    async def start(self) -> str:
        self._events = []
        cli = self._cli()
        self._ports = self._session_ports()
        try:
            done = await usercli.call(cli, "submit", "--stdin", "--json",
                                      stdin=json.dumps(self.session_request()))
        except usercli.CLIError as exc:
            raise SpawnException(f"the session was not submitted: {exc}",
                                 reason="submit") from None
        session_id = done.get("session_id") if isinstance(done, dict) else None
        if not isinstance(session_id, str) or not is_session_id(session_id):
            raise SpawnException(f"the submit printed no session id: {str(done)[:120]!r}",
                                 reason="bad-card")
        self.session_id = session_id
        try:
            self.job_id = check_job_id(done.get("job_id"))
        except SpawnException:
            await self._cancel(cli)  # a session was made: never leave it behind
            raise
        self._event(10, f"Queued: Slurm job {self.job_id} submitted "
                        f"(session {self.session_id})")
        self._starting = True
        try:
            return await self._until_running(cli)
        except BaseException:
            await self._cancel(cli)  # never leave an orphan job behind a failed spawn
            raise
        finally:
            self._starting = False

    def _session_ports(self) -> tuple[int, int]:
        """The site's session port range (the config the user-side commands get too)."""
        try:
            cfg = config_mod.load(self.config_file or None)
        except UsageError as exc:
            raise SpawnException(f"the sh-jupyter site config: {exc}", reason="config") from None
        return cfg["network.port_min"], cfg["network.port_max"]

    async def _route(self, card: dict, view: jobs.JobView) -> str | None:
        """Where the proxy may send this user's requests: the card's host and port once the
        host is shown to be the job's node per Slurm (None: Slurm has not said yet)."""
        host, port = route_target(card.get("url"), self.server.base_url, self._ports)
        if not isinstance(view, JobInfo) or view.state != "RUNNING":
            return None  # unknown, or the poller's last look predates the start: look again
        if not view.node:
            raise SpawnException(f"Slurm names no node for job {self.job_id}: the server's "
                                 f"host {host} cannot be checked", reason="bad-card")
        same = await asyncio.get_running_loop().run_in_executor(None, on_node, host, view.node)
        if not same:
            raise SpawnException(f"the session says its server is on {host}, but Slurm runs "
                                 f"job {self.job_id} on {view.node}", reason="bad-card")
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def _until_running(self, cli: usercli.UserCLI) -> str:
        """Follow the session's status file (as the user) and the job (through the poller)
        until the server answers; fail at once when the session or its job ends first.
        The server's address is the user's to write, so it is checked against Slurm's own
        record of the job's node before the proxy is routed to it."""
        follower = await usercli.follow(cli, self.session_id)
        said: set[str] = set()  # the steps already reported
        queued: tuple = ()  # the pending reason and estimate (to the minute) last reported
        running: dict | None = None  # the Running card, until Slurm confirms its node
        hurried = False
        try:
            while True:
                if running is not None:
                    # Only Slurm is waited on now, and no longer at the poller's pace: the
                    # poller's last look may predate the start (or squeue failed), so it is
                    # hurried: asked at once, then every 0.1 s, until it names the node.
                    view = await self._view(hurry=hurried)
                    if jobs.has_ended(view):
                        raise self._ended(await self._final_card(cli, view))
                    target = await self._route(running, view)
                    if target:
                        self._event(90, f"Running: {running.get('message', '')} on "
                                        f"{target.split('//', 1)[1]}")
                        return target
                    if hurried:
                        await self._until_next_look()
                    hurried = True
                    continue
                card = await follower.next(self.check_interval)
                if card is None:
                    raise SpawnException(f"following the session failed: {follower.error}",
                                         reason="follow")
                if isinstance(card, dict) and card.get("status") == "Running":
                    running = card
                    continue  # the poller's last look first: it may name the node already
                if card:
                    if card["status"] == "Completed":
                        raise self._ended(card)
                    if card["status"] == "Starting" and "container" not in said:
                        said.update(("job", "container"))
                        self._event(60, f"Starting: the container is starting on "
                                        f"{_shown(card.get('host'))}")
                    continue
                view = await self._view()
                if jobs.has_ended(view):
                    raise self._ended(await self._final_card(cli, view))
                if not isinstance(view, JobInfo):
                    continue  # unknown: the next look may know
                if view.state == "PENDING" and (view.reason, view.start_time // 60) != queued:
                    queued = (view.reason, view.start_time // 60)
                    self._event(10, queue_message(view))
                elif view.state == "RUNNING" and "job" not in said:
                    said.add("job")
                    self._event(40, f"Starting: job {self.job_id} runs on "
                                    f"{view.node or 'its node'}")
        finally:
            if hurried:
                self._calm()
            await follower.close()

    async def _final_card(self, cli: usercli.UserCLI, view: jobs.JobView) -> dict:
        """The card of a session whose job ended: the supervisor's reason, or the job's."""
        try:
            return await usercli.call(cli, "status", self.session_id, "--json")
        except usercli.CLIError as exc:
            state = view.state if isinstance(view, JobInfo) else "no longer in the queue"
            return {"reason": f"the job ended ({state}); its card could not be read: {exc}"}

    def _ended(self, card: dict) -> SpawnException:
        reason = card.get("reason") or "the session ended"
        message = f"the session ended before its server answered: {reason}"
        self.log.warning("%s: session %s, job %s: %r", self._log_name, self.session_id,
                         self.job_id, reason)  # the user's words: one escaped line
        return SpawnException(message, reason="session-ended")

    async def progress(self):
        sent = 0
        while True:
            news = self._news
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            await news.wait()

    async def poll(self) -> int | None:
        if not self.job_id:
            return 0
        if self._starting:
            return None
        view = await self._view()
        if jobs.is_unknown(view):
            self.log.warning("%s: job %s state unknown (%s); keeping the server",
                             self._log_name, self.job_id, getattr(view, "error", ""))
            return None
        if not jobs.has_ended(view):
            return None
        state = view.state if isinstance(view, JobInfo) else "no longer in the queue"
        self.log.info("%s: job %s ended (%s)", self._log_name, self.job_id, state)
        self._jobs().forget(self.job_id)
        code = view.exit_code if isinstance(view, JobInfo) else None
        return code if isinstance(code, int) else 0

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:
            return
        cli = self._cli()
        await self._cancel(cli)
        self.log.debug("%s: job %s cancelled", self._log_name, self.job_id)
        if not now:
            await self._until_gone()
        self._jobs().forget(self.job_id)

    async def _cancel(self, cli: usercli.UserCLI) -> None:
        try:
            await usercli.call(cli, "cancel", self.session_id, "--json")
        except usercli.CLIError as exc:
            self.log.warning("%s: cancelling session %s (job %s): %s", self._log_name,
                             self.session_id, self.job_id, exc)

    async def _until_gone(self) -> None:
        """Wait until Slurm has finished the job, epilog included: its container is gone.
        The poller is hurried (Slurm asked at once, then every 0.1 s): the job is expected to
        go within a second, and a backed-off poller would see it up to 5 s late."""
        deadline = time.monotonic() + self.cancel_timeout
        hurry = True
        while time.monotonic() < deadline:
            view = await self._view(hurry=hurry)
            self.log.debug("%s: job %s: %s", self._log_name, self.job_id,
                           getattr(view, "state", view))
            hurry = False
            if view is None or (isinstance(view, JobInfo) and view.finished
                                and view.state != "COMPLETING"):
                return
            await self._until_next_look()
        self.log.warning("%s: job %s still not ended %.0f s after cancelling",
                         self._log_name, self.job_id, self.cancel_timeout)
