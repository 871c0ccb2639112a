"""When would a request start, and which smaller one would start now (`submit --test-only`).

Nothing is created or queued: each question is one `sbatch --test-only` with the options the
real submission would use, so the answer is Slurm's own estimate for exactly that job. The
smaller requests stay within the site's limits and are few (at most MAX_TRIES questions to
slurmctld): fewer CPUs, less memory, each other allowed partition.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sh_jupyter.config import Config
from sh_jupyter.session import epoch_iso
from sh_jupyter.slurm.scheduler import Scheduler
from sh_jupyter.slurm.willrun import WillRun
from sh_jupyter.submitter.request import SessionRequest
from sh_jupyter.submitter.submission import sbatch_options

MAX_TRIES = 8  # sbatch --test-only calls for the smaller requests, at most
NOW_SLACK = 60  # seconds: a start within this is "now" (the scheduler's next cycle)


def _options(cfg: Config, req: SessionRequest, home: str) -> list[str]:
    """The real submission's options, with no session directory (none is created)."""
    opts = sbatch_options(cfg, req, home)
    return [o if not o.startswith("--output=") else "--output=/dev/null" for o in opts]


def smaller(cfg: Config, req: SessionRequest, partition_used: str) -> list[tuple[str,
                                                                                  SessionRequest]]:
    """Requests to try instead, closest first, each with what was changed."""
    out: list[tuple[str, SessionRequest]] = []
    for other in cfg["limits.partitions"]:
        if other not in (req.partition, partition_used):
            out.append(("partition", replace(req, partition=other)))
    cpus = req.cpus // 2
    while cpus >= 1 and cpus < req.cpus:
        out.append(("cpus", replace(req, cpus=cpus)))
        cpus //= 2
    memory = req.memory_gib // 2
    while memory >= 1 and memory < req.memory_gib:
        out.append(("memory_gib", replace(req, memory_gib=memory)))
        memory //= 2
    return out


def _answer(req: SessionRequest, will: WillRun, now: float) -> dict:
    return {"cpus": req.cpus, "memory_gib": req.memory_gib, "walltime": req.walltime,
            "gpus": req.gpus, "partition": will.partition or req.partition,
            "start_at": epoch_iso(will.start), "start_epoch": will.start,
            "starts_now": will.starts_by(now + NOW_SLACK), "refused": will.refused}


def estimate(cfg: Config, req: SessionRequest, scheduler: Scheduler, home: str,
             now: float | None = None) -> dict:
    """Slurm's start estimate for `req` and, when it would not start now, the largest smaller
    requests (one per changed field) that would. SchedulerUnavailable when Slurm gives no
    answer."""
    now = time.time() if now is None else now
    script = cfg["session.batch_script"]
    first = scheduler.will_run(_options(cfg, req, home), script)
    result = {**_answer(req, first, now), "submitted": False, "alternatives": []}
    if result["starts_now"]:
        return result
    done: set[str] = set()  # a field whose largest smaller value that starts now is found
    tries = 0
    for field, other in smaller(cfg, req, first.partition):
        if tries >= MAX_TRIES:
            break
        if field in done and field != "partition":
            continue
        tries += 1
        will = scheduler.will_run(_options(cfg, other, home), script)
        if will.starts_by(now + NOW_SLACK):
            done.add(field)
            result["alternatives"].append({**_answer(other, will, now), "changed": field})
    return result
