"""The test bed's Slurm is real: a test user's job runs, with our prolog and epilog as root."""

from __future__ import annotations

import os
import subprocess

import bed

HOOK_LOG = "/var/log/sh-jupyter/hooks.log"


def _hook_lines(job_id: str) -> list[str]:
    try:
        with open(HOOK_LOG, encoding="utf-8") as fh:
            return [line for line in fh if f" job={job_id} " in line]
    except FileNotFoundError:
        return []


def test_sbatch_as_test_user_runs_with_prolog_and_epilog_as_root(testbed):
    user = bed.USERS[0]
    out_dir = bed.shared_tempdir()
    os.chmod(out_dir, 0o777)
    out = bed.as_user(user, ["sbatch", "--parsable", "--wait", "-o", f"{out_dir}/%j.out",
                             "--wrap", "id -un; echo ran-on-$(hostname -s)"], timeout=120)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    with open(f"{out_dir}/{job_id}.out", encoding="utf-8") as fh:
        text = fh.read()
    assert user in text and "ran-on-" in text
    bed.wait_for(lambda: len(_hook_lines(job_id)) >= 2, 30, "prolog and epilog lines")
    lines = _hook_lines(job_id)
    assert any(" prolog " in f" {line}" and f"user={user}" in line and "euid=0" in line
               for line in lines), lines
    assert any(" epilog " in f" {line}" and "euid=0" in line for line in lines), lines
    state = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True,
                           check=False)
    assert "DRAIN" not in state.stdout
