"""The job card: what a user (or a portal) sees about a session (pure).

It merges the supervisor's status file with the scheduler's view, so a job that died without
a word (walltime, node failure, SIGKILL) still shows as ended, with the reason.
Only a definite view ends a session here: when the scheduler's answer is unknown (squeue
failed), the card shows the status file as last written and says the job state is unknown.
"""

from __future__ import annotations

from sh_jupyter.session import Status, epoch_iso, lab_url
from sh_jupyter.slurm.jobs import JobInfo, JobView, Unknown

# What a job state means for a session the supervisor could not report on itself.
_STATE_WORDS = {
    "NODE_FAIL": "the session ended with its node (node failure, reboot or maintenance)",
    "BOOT_FAIL": "the session ended with its node (it failed to boot)",
    "CANCELLED": "the job was cancelled",
    "TIMEOUT": "the job's walltime ran out",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "PREEMPTED": "the job was preempted",
    "DEADLINE": "the job reached its deadline",
    # The supervisor writes its reason before it exits: a FAILED job whose card is not final
    # lost its supervisor (killed) or could not write (a full home or quota).
    "FAILED": "the job ended without a report from its supervisor",
}


# What Slurm's commonest pending reasons mean for someone waiting for a session.
_PENDING_WORDS = {
    "Resources": "the CPUs, memory or GPUs asked for are in use by other jobs",
    "Priority": "jobs of higher priority are ahead in the queue",
    "Dependency": "the job waits for another job to finish",
    "BeginTime": "the job was asked to start later",
    "ReqNodeNotAvail": "a node the job needs is unavailable (down, drained or reserved)",
    "PartitionTimeLimit": "the walltime exceeds the partition's limit: it will not start",
    "JobHeldUser": "the job is held (scontrol release lets it run)",
    "JobHeldAdmin": "the job is held by an administrator",
    "QOSMaxCpuPerUserLimit": "you already use as many CPUs as your QOS allows",
    "AssocGrpCpuLimit": "your group already uses as many CPUs as it may",
    "Reservation": "the job waits for its reservation to start",
}


def pending_words(reason: str) -> str:
    """Slurm's pending reason in words ("" for none); unknown codes are shown as they are."""
    if reason in ("", "None"):
        return ""
    return _PENDING_WORDS.get(reason, reason)


def ended_reason(state: str, phase: str) -> str:
    """Why a session ended, from the job's final state ("" when the job has left the queue)."""
    if not state:
        return f"the job is no longer in the queue; the session was {phase}"
    words = _STATE_WORDS.get(state, "the job ended")
    return f"{words} ({state}) while the session was {phase}"


def build(status: Status, job: JobView, now: float) -> dict:
    """The card's fields; `status` is one of Queued, Starting, Running, Completed.

    `job`: the scheduler's JobInfo, None when the job is definitely not in the queue, or
    Unknown (no answer, or no Slurm job to ask about).
    """
    phase, reason, failed = status.phase, status.reason, status.failed
    known = job if isinstance(job, JobInfo) else None
    if isinstance(job, Unknown):
        job_state = "unknown" if job.error else ""
    else:
        job_state = known.state if known else "gone"
    if phase != "Completed" and not isinstance(job, Unknown):
        if known is None or known.finished:
            phase, failed = "Completed", True
            reason = reason or ended_reason(known.state if known else "", status.phase)
        elif known.state == "PENDING":
            phase = "Queued"
            reason = known.reason if known.reason not in ("None", "") else ""
        elif phase == "Queued":
            phase = "Starting"
    fields: dict = {
        "session_id": status.session_id,
        "job_id": status.job_id,
        "status": phase,
        "failed": failed,
        "reason": reason,
        "created_at": status.created_at,
        "connection_timeout": status.connection_timeout,
        "cpus": status.cpus,
        "memory_gib": status.memory_gib,
        "gpus": status.gpus,
        "image": status.image,
        "host": (known.node if known and known.node else status.host)
        if phase != "Queued" else "",
        "message": status.message if phase == "Running" else "",
        "url": lab_url(status.host, status.port, status.base_url)
        if phase == "Running" and status.port else "",
        "job_state": job_state,  # Slurm's state, "gone", "unknown", or "" (no Slurm job)
        "scheduler_error": job.error if isinstance(job, Unknown) else "",
    }
    if phase == "Queued":
        # Slurm's own estimate (backfill's will-run test; none until it has looked): 0 and ""
        # when there is none. The queue reason in words beside Slurm's code.
        fields["expected_start"] = epoch_iso(known.start_time) if known else ""
        fields["queue_reason"] = pending_words(known.reason) if known else ""
    if phase in ("Starting", "Running") and known and known.start_time and known.time_limit:
        fields["time_remaining"] = max(0, known.start_time + known.time_limit - int(now))
    else:
        fields["time_requested"] = status.walltime
    return fields
