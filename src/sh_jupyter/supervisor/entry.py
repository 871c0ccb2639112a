"""The supervisor side's entry (`sh-jupyter run`, `api.run`): who, where and which session, from
the job's environment, then the supervisor. Kept apart from the submit side's modules so the path
to Connect loads only what the supervisor needs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Union

from sh_jupyter import config as config_mod
from sh_jupyter import launch as launch_mod
from sh_jupyter.config import Config
from sh_jupyter.errors import UsageError
from sh_jupyter.paths import TemplateContext, expand_path
from sh_jupyter.session import is_session_id, new_session_id
from sh_jupyter.users import session_user

ConfigArg = Union[str, Config, None]


def _slurm_int(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "")
    return int(text) if text.isdigit() else 0


def run(*, local: bool = False, session_dir: str | None = None, session_id: str | None = None,
        cpus: int = 0, memory_gib: int = 0, command: Sequence[str] = (), base_url: str = "",
        auth: str = "token", environment: Mapping[str, str] | None = None,
        config: ConfigArg = None, environ: Mapping[str, str] | None = None) -> int:
    """Run a session's supervisor here, as the current user, until the session ends; returns
    the exit status (0: ended as asked, 3: failed, with the reason in status.json).

    In a Slurm job (SLURM_JOB_ID set), the session directory is `session_dir` or the job's
    working directory, and its name is the session id: the prolog and epilog recognise a
    session job by its working directory, so a launcher's own batch script must `cd` (or
    `sbatch --chdir`) into a directory named by a new session id (a UUID) under
    `session.sessions_dir` before calling this. `local=True` runs without Slurm.

    `command`, `base_url`, `auth` and `environment` are a launcher's, as for `submit`; given
    here they replace what request.json records, and `environment` never touches a file.
    """
    return supervise(local=local, session_dir=session_dir, session_id=session_id, cpus=cpus,
                     memory_gib=memory_gib, command=command, base_url=base_url, auth=auth,
                     environment=environment, config=config, environ=environ)


def supervise(*, handoff: bool = False, **kwargs) -> int:
    """`run`, and for the CLI's own process (`handoff`) the long idle wait in a smaller
    program that replaces this one (supervisor.idle)."""
    from sh_jupyter.supervisor.lifecycle import Supervisor  # the heavy imports only when running

    cfg, req = _request(**kwargs)
    return Supervisor(cfg, replace(req, handoff=handoff)).run()


def _request(*, local: bool = False, session_dir: str | None = None,
             session_id: str | None = None, cpus: int = 0, memory_gib: int = 0,
             command: Sequence[str] = (), base_url: str = "", auth: str = "token",
             environment: Mapping[str, str] | None = None, config: ConfigArg = None,
             environ: Mapping[str, str] | None = None):
    """The site's config and the session's RunRequest, from the arguments and the job."""
    from sh_jupyter.supervisor.phase import RunRequest, job_callbacks

    cfg = config if isinstance(config, Config) else config_mod.load(config)
    env = dict(os.environ if environ is None else environ)
    options = launch_mod.validate(command, base_url, auth)
    extra_env = launch_mod.check_env(environment or {})
    given = options != launch_mod.LaunchOptions() or bool(extra_env)
    user = session_user()
    job_id = env.get("SLURM_JOB_ID", "")
    if not local and not job_id:
        raise UsageError("SLURM_JOB_ID", "", "not in a Slurm job; use `sh-jupyter run --local`")
    if session_id is not None and not is_session_id(session_id):
        raise UsageError("--session-id", session_id, "must be a UUID")
    session_dir = os.path.abspath(session_dir) if session_dir else ""
    if local:
        session_id = session_id or new_session_id()
        job_id = "local"
        if not session_dir:
            ctx = TemplateContext(user.pw_name, user.pw_dir, user.pw_uid, session_id, job_id)
            session_dir = os.path.join(expand_path(cfg["session.sessions_dir"], ctx), session_id)
    else:
        session_dir = session_dir or os.getcwd()
        session_id = session_id or os.path.basename(session_dir)
        if not is_session_id(session_id):
            raise UsageError("session directory", session_dir,
                             "its name must be the session id (a UUID)")
    cpus = cpus or _slurm_int(env, "SLURM_CPUS_ON_NODE")
    memory_gib = memory_gib or _slurm_int(env, "SLURM_MEM_PER_NODE") // 1024
    job_lookup, on_timeout = job_callbacks(job_id) if not local else (None, None)
    req = RunRequest(session_id=session_id, session_dir=session_dir, user=user.pw_name,
                     uid=user.pw_uid, home=user.pw_dir, job_id=job_id, cpus=cpus,
                     memory_gib=memory_gib, job_lookup=job_lookup, job_env=env,
                     on_timeout=on_timeout)
    if given:
        req = replace(req, launch=options, extra_env=extra_env)
    return cfg, req
