"""When will it start: with the node's CPUs held by another user's job, `submit --test-only`
gives Slurm's estimate and a smaller request that starts now without queueing anything, and
a queued session's card shows Slurm's expected start and pending reason."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time

import pytest

import bed

U1, U2 = bed.USERS
CFG = bed.E2E_PORTS + "[limits]\nmax_cpus = 16\nmax_memory_gib = 8\n"
HOG_MINUTES = 30
SESSIONS_REL = "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output"


def _node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[0])


def _queue(user: str) -> list[str]:
    return subprocess.run(["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True,
                          text=True, check=False).stdout.split()


def _sessions(user: str) -> set[str]:
    root = os.path.join(pwd.getpwnam(user).pw_dir, SESSIONS_REL)
    return set(os.listdir(root)) if os.path.isdir(root) else set()


@pytest.fixture(scope="module")
def hog(testbed):
    """Another user's job holding all but 2 of the node's CPUs for HOG_MINUTES."""
    cpus = _node_cpus() - 2
    out = bed.as_user(U2, ["sbatch", "--parsable", f"--cpus-per-task={cpus}", "--mem=1G",
                           f"--time={HOG_MINUTES}", "--job-name=hog", "--output=/dev/null",
                           "--chdir=/tmp", "--wrap=sleep 3600"])
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    try:
        bed.wait_for(lambda: bed.job_state(job) == "RUNNING", 60, f"hog job {job} running")
        yield {"job": job, "started": time.time(), "cpus": cpus}
    finally:
        subprocess.run(["scancel", job], check=False)
        bed.wait_for(lambda: bed.job_state(job) not in ("RUNNING", "COMPLETING"), 60,
                     "hog job ended")


def _sh(cfg: str, *args: str) -> subprocess.CompletedProcess:
    return bed.as_user(U1, [bed.SH, "--config", cfg, *args])


def test_test_only_gives_slurms_estimate_and_a_smaller_request_that_starts_now(hog):
    cfg = bed.write_config(CFG)
    queued, sessions = _queue(U1), _sessions(U1)
    out = _sh(cfg, "submit", "--test-only", "--json", "--cpus", "8", "--memory", "2",
              "--time", "10")
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)
    assert est["submitted"] is False and not est["starts_now"] and not est["refused"], est
    # Slurm expects the hog to end at its walltime: then this request starts.
    hog_end = hog["started"] + HOG_MINUTES * 60
    assert hog_end - 90 <= est["start_epoch"] <= hog_end + 90, (est, hog_end)
    cpus = [a["cpus"] for a in est["alternatives"] if a["changed"] == "cpus"]
    assert cpus == [2], est  # 8 -> 4 (busy) -> 2: the largest that fits in what is free
    assert all(a["starts_now"] and a["partition"] == "debug" for a in est["alternatives"])
    # Nothing was queued or created.
    assert _queue(U1) == queued and _sessions(U1) == sessions

    text = _sh(cfg, "submit", "--test-only", "--cpus", "8", "--memory", "2", "--time", "10")
    assert text.returncode == 0, text.stderr
    assert "would start this request (8 CPUs, 2 GiB, partition debug) at" in text.stdout
    assert "would start now: --cpus 2 (2 CPUs, 2 GiB, partition debug)" in text.stdout
    assert "Nothing was submitted (--test-only)." in text.stdout, text.stdout

    now = json.loads(_sh(cfg, "submit", "--test-only", "--json", "--cpus", "2").stdout)
    assert now["starts_now"] and now["alternatives"] == [], now
    never = _sh(cfg, "submit", "--test-only", "--json", "--partition", "nosuch")
    assert never.returncode == 0, never.stderr
    assert "partition" in json.loads(never.stdout)["refused"].lower()
    assert _queue(U1) == queued and _sessions(U1) == sessions


def test_a_queued_sessions_card_shows_slurms_expected_start_and_reason(hog):
    cfg = bed.write_config(CFG)
    out = bed.submit(U1, "--cpus", "8", "--memory", "2", "--time", "10", config=cfg)
    assert out.returncode == 0, out.stderr
    sub = json.loads(out.stdout)
    try:
        # Backfill estimates a pending job's start on its own cycle (bf_interval, 30 s).
        def estimated() -> dict | None:
            card = bed.card(U1, sub["session_id"], cfg)
            return card if card["expected_start"] else None
        card = bed.wait_for(estimated, 120, "an expected start on the card", interval=1)
        assert card["status"] == "Queued" and card["reason"] == "Resources", card
        assert card["queue_reason"].startswith("the CPUs, memory or GPUs"), card
        hog_end = hog["started"] + HOG_MINUTES * 60
        assert abs(bed.iso_time(card["expected_start"]) - hog_end) <= 90, (card, hog_end)
        text = _sh(cfg, "status", sub["session_id"]).stdout
        assert "[Queued]" in text and "Expected start:" in text and "Slurm's estimate" in text
        assert "Reason:                 Resources (the CPUs" in text, text
        listed = json.loads(_sh(cfg, "list", "--json").stdout)
        mine = next(c for c in listed if c["session_id"] == sub["session_id"])
        assert mine["expected_start"] == card["expected_start"], mine
    finally:
        subprocess.run(["scancel", sub["job_id"]], check=False)
