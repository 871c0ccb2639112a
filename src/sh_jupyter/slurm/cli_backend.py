"""The Slurm command-line backend (`sbatch`, `squeue`, `scancel`), on 22.05 and 23.02+.

squeue's form (JSON or text) is chosen for the installed version, asked once per process.
Lookups never fetch the whole queue (`squeue --json` on 22.05 cost 420 MB and over a second
per call with 9,000 jobs of other users), and a lookup that gets no definite answer raises
SchedulerUnavailable ("unknown"), never reports a job as gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from sh_jupyter.errors import SchedulerUnavailable, SessionFailure, ShJupyterError
from sh_jupyter.runner import NOT_FOUND, TIMED_OUT, Result, run
from sh_jupyter.slurm import squeue, willrun
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.willrun import WillRun

SLURM_TIMEOUT = 30


def run_slurm(argv: list[str], env: Mapping[str, str] | None = None,
              error: type[ShJupyterError] = SessionFailure) -> Result:
    """A Slurm command; `error` when it is not installed or gives no answer in time."""
    out = run(argv, timeout=SLURM_TIMEOUT, env=env)
    if out.returncode == NOT_FOUND:
        raise error(f"{out.why} (Slurm client commands are needed)")
    if out.returncode == TIMED_OUT:
        raise error(f"{argv[0]} did not answer within {SLURM_TIMEOUT} s")
    return out


def _one_line(text: str) -> str:
    return " ".join(text.strip().split())


def squeue_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without the user's SQUEUE_* settings: SQUEUE_PARTITION, _ACCOUNT,
    _NAMES or _QOS would hide the user's own jobs from us (they would look gone), and
    SQUEUE_FORMAT would change the output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEUE_")}
    env.update(extra)
    return env


_VERSION: list[tuple[int, int, int]] = []  # the answer, once squeue gave one


def squeue_version() -> tuple[int, int, int] | None:
    """The installed squeue's version, asked once per process (a few ms); None when unknown
    (then the text form, which every version understands, is used). A failed probe is asked
    again next time: one transient failure must not pin a long-running hub to the text form."""
    if _VERSION:
        return _VERSION[0]
    try:
        out = run_slurm(["squeue", "--version"], error=SchedulerUnavailable)
    except SchedulerUnavailable:
        return None
    version = squeue.parse_version(out.stdout) if out.returncode == 0 else None
    if version is not None:
        _VERSION.append(version)
    return version


class SlurmCLI:
    """The Slurm command-line tools (`sbatch`, `squeue`, `scancel`)."""

    name = "slurm-cli"

    def __init__(self, cluster: str = "") -> None:
        self.cluster_args = ["-M", cluster] if cluster else []

    def submit(self, options: list[str], script: str) -> str:
        out = run_slurm(["sbatch", "--parsable", *self.cluster_args, *options, script])
        if out.returncode != 0:
            raise SessionFailure(f"sbatch refused the job: {_one_line(out.stderr)}")
        return out.stdout.strip().split(";")[0]

    def will_run(self, options: list[str], script: str) -> WillRun:
        """When Slurm would start this job (`sbatch --test-only`: nothing is queued).
        SchedulerUnavailable when Slurm gives neither an estimate nor a refusal."""
        out = run_slurm(["sbatch", "--test-only", *self.cluster_args, *options, script],
                        env=squeue_env(willrun.ENV), error=SchedulerUnavailable)
        answer = willrun.parse(out.returncode, out.stderr)
        if answer is None:
            raise SchedulerUnavailable(f"sbatch --test-only gave no estimate: {out.why}")
        return answer

    def _ask(self, job_ids: Iterable[str] = (), user: str | None = None) -> tuple[
            frozenset[str], list[JobInfo]]:
        """One squeue call; the ids asked for and the jobs in the answer."""
        try:
            query = squeue.plan(squeue_version(), job_ids, user, self.cluster_args)
        except ValueError as exc:
            raise SchedulerUnavailable(str(exc)) from None
        out = run_slurm(list(query.argv), env=squeue_env(query.env), error=SchedulerUnavailable)
        return query.job_ids, squeue.read(query, out.returncode, out.stdout, out.stderr)

    def states(self, job_ids: Iterable[str], user: str | None = None,
               ) -> dict[str, JobInfo | None]:
        """Every job id's state from one squeue call: its JobInfo, or None when it is
        definitely not in the queue. `user` (name or uid), when all the jobs are that user's,
        lets slurmctld filter by user. SchedulerUnavailable when the answer is not definite."""
        asked, jobs = self._ask(job_ids, user)
        found = {j.job_id: j for j in jobs}
        return {job_id: found.get(job_id) for job_id in asked}

    def job(self, job_id: str) -> JobInfo | None:
        return self.states([job_id])[job_id]

    def jobs(self, user: str) -> list[JobInfo]:
        """The user's jobs (name or uid), finished ones still in the queue included."""
        return self._ask(user=user)[1]

    def cancel(self, job_id: str) -> None:
        out = run_slurm(["scancel", *self.cluster_args, job_id])
        if out.returncode != 0:
            raise SessionFailure(f"scancel failed: {_one_line(out.stderr)}")
