"""Submitting a session (as the user): its directory, files and batch job; undone on refusal."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sh_jupyter.config import DEFAULT_PATH, ENV_VAR, Config
from sh_jupyter.durations import format_walltime
from sh_jupyter.errors import SessionFailure
from sh_jupyter.files import ensure_private_dir, ensure_user_dir, read_text, write_private
from sh_jupyter.launch import ENV_FILE, LaunchOptions, write_env
from sh_jupyter.paths import TemplateContext, expand_path
from sh_jupyter.session import LOG_FILE, REQUEST_FILE, STATUS_FILE, Status, new_session_id, now_iso
from sh_jupyter.slurm.scheduler import Scheduler
from sh_jupyter.submitter.request import SessionRequest


@dataclass(frozen=True)
class Submitted:
    session_id: str
    job_id: str
    session_dir: str


def sessions_root(cfg: Config, user: str, home: str, uid: int) -> str:
    ctx = TemplateContext(user, home, uid, "none", "none")
    return expand_path(cfg["session.sessions_dir"], ctx)


def sbatch_options(cfg: Config, req: SessionRequest, session_dir: str) -> list[str]:
    """The job's sbatch options; the script itself is a fixed file, never generated."""
    opts = [
        f"--job-name={cfg['session.job_name']}",
        f"--chdir={session_dir}",
        f"--output={os.path.join(session_dir, LOG_FILE)}",
        "--open-mode=append",
        f"--time={format_walltime(req.walltime)}",
        # An interactive session that lost its node ends (NODE_FAIL): rerun in the same
        # session directory it would restart behind the user's back.
        "--no-requeue",
        "--nodes=1", "--ntasks=1", f"--cpus-per-task={req.cpus}",
        f"--mem={req.memory_gib}G",
    ]
    if req.partition:
        opts.append(f"--partition={req.partition}")
    if req.gpus:
        opts.append(f"--gres=gpu:{req.gpus}")
    if req.nodelist:
        opts.append(f"--nodelist={req.nodelist}")
    if cfg.path.startswith("/") and cfg.path != DEFAULT_PATH:
        # The job's supervisor must read the same config the request was checked against.
        opts.append(f"--export=ALL,{ENV_VAR}={cfg.path}")
    return opts


def submit(cfg: Config, req: SessionRequest, scheduler: Scheduler, user: str, home: str,
           uid: int, launch: LaunchOptions | None = None,
           environment: Mapping[str, str] | None = None) -> Submitted:
    """Create the session directory, write its files, submit; undo the directory on refusal.

    A launcher's `environment` (its secrets) goes to a 0600 file the supervisor deletes on
    reading; nothing of it reaches sbatch's command line, environment or the job script.
    """
    session_id = new_session_id()
    root = sessions_root(cfg, user, home, uid)
    ensure_user_dir(root, uid)
    session_dir = os.path.join(root, session_id)
    ensure_private_dir(session_dir, uid)
    record = {**req.to_dict(), "config": cfg.path}
    if launch is not None and launch != LaunchOptions():
        record["launch"] = launch.to_dict()
    write_private(os.path.join(session_dir, REQUEST_FILE), json.dumps(record, indent=2) + "\n")
    write_env(session_dir, environment or {})
    status = Status(session_id=session_id, phase="Queued", created_at=now_iso(),
                    cpus=req.cpus, memory_gib=req.memory_gib, gpus=req.gpus,
                    walltime=req.walltime, image=req.image,
                    connection_timeout=cfg["session.connection_timeout"])
    write_private(os.path.join(session_dir, STATUS_FILE), status.to_json())
    try:
        job_id = scheduler.submit(sbatch_options(cfg, req, session_dir),
                                  cfg["session.batch_script"])
    except SessionFailure:
        for name in (REQUEST_FILE, STATUS_FILE, ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(session_dir, name))
        os.rmdir(session_dir)
        raise
    # The supervisor may already have written a newer status: only add the job id to ours.
    current = read_text(os.path.join(session_dir, STATUS_FILE))
    latest = Status.from_json(current) if current else status
    if not latest.job_id:
        write_private(os.path.join(session_dir, STATUS_FILE),
                      replace(latest, job_id=job_id).to_json())
    return Submitted(session_id, job_id, session_dir)
