"""sh-jupyter's CLI run as the hub user's system account: argv, a clean environment, JSON in
and out (the argv and environment are pure; `call` and `follow` are the asyncio shell).

Why a process as the user rather than the library inside the hub: the hub runs as root (or a
service account with sudo rights), but a session is the user's: its directory lives in the
user's 0700 home (which a root-squashed NFS home hides even from root), its files must be the
user's, and sbatch must submit as the user. batchspawner does the same with `sudo -E -u`; here
nothing secret rides along:
  * the request and the hub's token go on standard input (argv is visible to every user in ps,
    and sudo logs it); the user's process writes them into the session's 0600 file;
  * the process gets a small fixed environment, never the hub's own (which holds the proxy's
    auth token and the cookie secret; `-E` would hand them to the user, who can read their own
    process's environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PATH = "/usr/local/bin:/usr/bin:/bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _tool(name: str) -> str:
    """A system tool by absolute path (runuser lives in sbin, often not on a service's PATH)."""
    return shutil.which(name) or shutil.which(name, path=SYSTEM_PATH) or name


def default_run_as(euid: int) -> tuple[str, ...]:
    """Root switches user with setpriv (no password, no tty, no PAM session) and anyone else
    with sudo, which needs a sudoers rule for exactly the sh-jupyter command
    (docs/integrators.md). setpriv execs the command itself, so ending it is one signal to
    sh-jupyter: util-linux's runuser forwards a SIGTERM and then sleeps 2 s before it exits,
    which every spawn that closes its `wait` helper would pay."""
    if euid == 0:
        return (_tool("setpriv"), "--reuid={uid}", "--regid={gid}", "--init-groups", "--")
    return (_tool("sudo"), "-n", "-u", "{username}", "--")


class CLIError(Exception):
    """The user-side command failed: its own one-line message (sh-jupyter's errors name the
    field, the value and what is allowed) and exit status."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UserCLI:
    """How to run `sh-jupyter ARGS` as one user."""

    username: str
    home: str
    run_as: tuple[str, ...]
    executable: tuple[str, ...]
    config_file: str = ""
    pass_env: tuple[tuple[str, str], ...] = ()  # (name, value) from the hub, never secrets

    def argv(self, *args: str) -> list[str]:
        """The command line; {username}, {uid} and {gid} in `run_as` name the user."""
        names = {"{username}": self.username}
        if any("{uid}" in part or "{gid}" in part for part in self.run_as):
            pw = pwd.getpwnam(self.username)
            names.update({"{uid}": str(pw.pw_uid), "{gid}": str(pw.pw_gid)})
        prefix = []
        for part in self.run_as:
            expanded = part
            for key, value in names.items():
                expanded = expanded.replace(key, value)
            prefix.append(expanded)
        config = ["--config", self.config_file] if self.config_file else []
        return [*prefix, *self.executable, *config, *args]

    def environ(self) -> dict[str, str]:
        env = {"PATH": PATH, "HOME": self.home, "USER": self.username,
               "LOGNAME": self.username, "LANG": "C.UTF-8"}
        env.update(dict(self.pass_env))
        return env


def pass_env(names: Sequence[str], environ: Mapping[str, str] | None = None,
             ) -> tuple[tuple[str, str], ...]:
    environ = os.environ if environ is None else environ
    return tuple((n, environ[n]) for n in names if n in environ)


def _message(stderr: bytes, status: int | None) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    text = lines[-1] if lines else f"exited with status {status}"
    return text.removeprefix("sh-jupyter: ")


async def _start(cli: UserCLI, args: Sequence[str], stdin: bool):
    argv = cli.argv(*args)
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli.environ(),
            cwd="/")
    except OSError as exc:
        raise CLIError(f"could not run {argv[0]}: {exc.strerror}", None) from None


async def _end(proc, grace: float = 5.0) -> None:
    """End a user-side process we no longer need (ours: we started it). SIGTERM first: under
    setpriv it reaches sh-jupyter itself, and sudo passes it on to the user's process, while a
    SIGKILL would end only sudo and leave that process behind."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):  # the pipes are ours to drop
            await proc.wait()


async def call(cli: UserCLI, *args: str, stdin: str | None = None,
               timeout: float = 120) -> dict:
    """Run one command that prints one JSON object (`--json`); CLIError when it fails."""
    proc = await _start(cli, args, stdin is not None)
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    except asyncio.TimeoutError:
        raise CLIError(f"`sh-jupyter {args[0]}` did not finish within {timeout:.0f} s",
                       None) from None
    finally:
        await _end(proc)
    if proc.returncode != 0:
        raise CLIError(_message(err, proc.returncode), proc.returncode)
    try:
        return json.loads(out)
    except ValueError:
        raise CLIError(f"`sh-jupyter {args[0]}` printed no JSON: {out[:200]!r}",
                       proc.returncode) from None


class Follower:
    """A long-running `sh-jupyter wait --json` as the user: its cards, one per line, on a
    queue (a reader task fills it, so waiting on it with a timeout never loses half a line)."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.cards: asyncio.Queue = asyncio.Queue()
        self.error = ""
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.cards.put_nowait(json.loads(line))
        err = await self.proc.stderr.read()
        status = await self.proc.wait()
        self.error = _message(err, status) if status else ""
        self.cards.put_nowait(None)  # the end

    async def next(self, timeout: float) -> dict | bool | None:
        """The next card; None when the command has ended; False when none came in time."""
        try:
            return await asyncio.wait_for(self.cards.get(), timeout)
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        await _end(self.proc)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


async def follow(cli: UserCLI, session_id: str) -> Follower:
    """Follow the session's status file as the user (no scheduler queries: the hub's poller
    watches the job)."""
    return Follower(await _start(cli, ["wait", session_id, "--json", "--no-scheduler"], False))
