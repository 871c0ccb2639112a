"""Slurm Prolog/Epilog entry point (`python -m sh_jupyter.node prolog|epilog`), run as root.

They run for EVERY job on the node, with no PATH, HOME or job name, and a failure drains the
node: so for a job that is not ours they import almost nothing and return at once, and for
ours they never raise (only an epilog that could not remove this job's container fails).
"""

from __future__ import annotations

import os
import sys
import time

LOG_DIR = "/var/log/sh-jupyter"


def _log(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    try:
        with open(os.path.join(LOG_DIR, "hooks.log"), "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {line}\n")
    except OSError:
        sys.stderr.write(f"{stamp} {line}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("prolog", "epilog"):
        sys.stderr.write("usage: python -m sh_jupyter.node prolog|epilog\n")
        return 2
    which, env = argv[0], os.environ
    head = f"{which} job={env.get('SLURM_JOB_ID', '?')} user={env.get('SLURM_JOB_USER', '?')}"
    from sh_jupyter.node.jobmatch import our_job  # cheap: stdlib only

    job = our_job(env)
    _log(f"{head} uid={env.get('SLURM_JOB_UID', '?')} euid={os.geteuid()} "
         f"session={job.session_id if job else '-'}")
    if job is None:
        return 0
    from sh_jupyter import config as config_mod
    from sh_jupyter.node.hooks import epilog, prolog

    def log(line: str) -> None:
        _log(f"{head} {line}")

    try:
        cfg = config_mod.load()
        return (prolog if which == "prolog" else epilog)(job, cfg, log)
    except Exception as exc:  # noqa: BLE001 - never drain the node over our own bug
        log(f"error: {type(exc).__name__}: {exc}")
        return 1 if which == "epilog" else 0

