"""The sbatch wrapper refuses bad requests before anything exists; hooks leave other jobs be."""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

import bed

USER = bed.USERS[0]
CAPS = "[limits]\nmax_cpus = 4\nmax_memory_gib = 8\n"


def _queue(user: str) -> str:
    return subprocess.run(["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True,
                          text=True, check=False).stdout


def _sessions(user: str) -> set[str]:
    root = os.path.join(pwd.getpwnam(user).pw_dir,
                        "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output")
    return set(os.listdir(root)) if os.path.isdir(root) else set()


@pytest.mark.parametrize(("args", "field", "allowed"), [
    (["--time", "6:00:01"], "--time", "must not exceed 06:00:00"),
    (["--time", "1-00:00:00"], "--time", "must not exceed 06:00:00"),
    (["--time", "soon"], "--time", "Slurm time"),
    (["--cpus", "5"], "--cpus", "between 1 and 4"),
    (["--cpus", "two"], "--cpus", "whole number"),
    (["--memory", "9"], "--memory", "between 1 and 8"),
    (["--memory", "0"], "--memory", "between 1 and 8"),
    (["--gpus", "1"], "--gpus", "allows no GPUs in sessions (limits.max_gpus = 0)"),
    (["--partition", "bad;name"], "--partition", "Slurm name"),
])
def test_requests_over_the_caps_are_refused_before_submission(testbed, args, field, allowed):
    cfg = bed.write_config(CAPS)
    queued, sessions = _queue(USER), _sessions(USER)
    out = bed.submit(USER, *args, config=cfg)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and args[1] in lines[0] \
        and allowed in lines[0], out.stderr
    assert out.stdout == ""
    assert _queue(USER) == queued and _sessions(USER) == sessions


def test_a_plain_job_passes_prolog_and_epilog_untouched(testbed):
    out_dir = bed.shared_tempdir()
    os.chmod(out_dir, 0o777)
    out = bed.as_user(USER, ["sbatch", "--parsable", "--wait", "-o", f"{out_dir}/%j.out",
                             "--wrap", "echo plain"], timeout=120)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    with open("/var/log/sh-jupyter/hooks.log", encoding="utf-8") as fh:
        mine = [line for line in fh if f" job={job_id} " in line]
    assert len(mine) == 2 and all("session=-" in line for line in mine), mine
    assert bed.job_state(job_id) == "COMPLETED"
