"""When will it start: sbatch --test-only's answers, the smaller requests tried, the card."""

from __future__ import annotations

import pytest

from sh_jupyter import config
from sh_jupyter.cli.render import render
from sh_jupyter.errors import UsageError
from sh_jupyter.session import Status, epoch_iso
from sh_jupyter.slurm import willrun
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.willrun import WillRun
from sh_jupyter.submitter import estimate
from sh_jupyter.submitter.card import build
from sh_jupyter.submitter.request import validate

NOW = 1_796_600_000


def test_an_estimate_is_read_on_both_slurm_versions():
    said = ("sbatch: Job 53 to start at 1796609220 using 4 processors on nodes vm in "
            "partition debug\n")
    assert willrun.parse(0, said) == WillRun(1796609220, 4, "vm", "debug")


@pytest.mark.parametrize("stderr", [
    "allocation failure: Requested node configuration is not available\n",
    "sbatch: error: invalid partition specified: nope\n"
    "allocation failure: Invalid partition name specified\n",
])
def test_a_request_slurm_would_never_run_is_refused_with_its_reason(stderr):
    answer = willrun.parse(1, stderr)
    assert answer is not None and answer.refused and not answer.starts_by(NOW)
    assert not answer.refused.startswith(("sbatch", "allocation failure"))


@pytest.mark.parametrize("stderr", ["", "sbatch: error: Batch job submission failed: Unable to "
                                    "contact slurm controller (connect failure)\n"])
def test_no_answer_is_unknown_not_never(stderr):
    assert willrun.parse(1, stderr) is None


class FakeSlurm:
    """Starts a job now when it fits in `free` CPUs and `free_mem` GiB (or in partition
    `idle`), else in an hour."""

    name = "fake"

    def __init__(self, free: int, free_mem: int = 1000, idle: str = "") -> None:
        self.free, self.free_mem, self.idle = free, free_mem, idle
        self.asked: list[list[str]] = []

    def will_run(self, options, script):
        self.asked.append(options)
        opt = dict(o.split("=", 1) for o in options if "=" in o)
        cpus, mem = int(opt["--cpus-per-task"]), int(opt["--mem"].rstrip("G"))
        part = opt.get("--partition", "debug")
        fits = (cpus <= self.free and mem <= self.free_mem) or part == self.idle
        return WillRun(NOW if fits else NOW + 3600, cpus, "vm", part)


def _cfg(extra: str = ""):
    return config.parse("[limits]\nmax_cpus = 16\nmax_memory_gib = 64\n" + extra)


def test_a_busy_request_gets_the_largest_smaller_ones_that_start_now():
    cfg = _cfg()
    slurm = FakeSlurm(free=2, free_mem=4)
    est = estimate.estimate(cfg, validate(cfg, 8, 16), slurm, "/home/u", now=NOW)
    assert est["submitted"] is False and not est["starts_now"]
    assert est["start_at"] == epoch_iso(NOW + 3600)
    assert [(a["changed"], a["cpus"], a["memory_gib"]) for a in est["alternatives"]] == []
    slurm = FakeSlurm(free=2)
    est = estimate.estimate(cfg, validate(cfg, 8, 16), slurm, "/home/u", now=NOW)
    assert [(a["changed"], a["cpus"]) for a in est["alternatives"]] == [("cpus", 2)]
    assert all(a["starts_now"] for a in est["alternatives"])
    # Each question is the real submission's options, but with no session directory.
    assert all("--output=/dev/null" in q and "--chdir=/home/u" in q for q in slurm.asked)
    assert len(slurm.asked) <= 1 + estimate.MAX_TRIES


def test_another_allowed_partition_is_offered():
    cfg = _cfg('partitions = ["debug", "spare"]\n')
    req = validate(cfg, 4, 4)
    assert req.partition == "debug"  # the first listed is the default
    est = estimate.estimate(cfg, req, FakeSlurm(free=0, free_mem=0, idle="spare"), "/h",
                            now=NOW)
    assert [(a["changed"], a["partition"]) for a in est["alternatives"]] == [("partition",
                                                                              "spare")]


def test_a_request_that_starts_now_asks_nothing_more():
    cfg = _cfg()
    slurm = FakeSlurm(free=16)
    est = estimate.estimate(cfg, validate(cfg, 8, 16), slurm, "/h", now=NOW)
    assert est["starts_now"] and est["alternatives"] == [] and len(slurm.asked) == 1


def test_a_partition_outside_the_sites_list_is_refused():
    cfg = _cfg('partitions = ["debug"]\n')
    with pytest.raises(UsageError, match="--partition = 'gpu': must be one of: debug"):
        validate(cfg, 1, 1, partition="gpu")


def test_a_queued_card_shows_slurms_estimate_and_reason_in_words():
    status = Status(session_id="s", phase="Queued", job_id="7", created_at="t", walltime=3600)
    job = JobInfo("7", "jupyter_app", "u", "PENDING", "Resources", start_time=NOW + 1380)
    card = build(status, job, NOW)
    assert card["expected_start"] == epoch_iso(NOW + 1380) and card["reason"] == "Resources"
    assert card["queue_reason"].startswith("the CPUs, memory or GPUs")
    text = render(card)
    assert "Expected start:" in text and "Slurm's estimate" in text
    assert "Reason:                 Resources (the CPUs" in text
    none_yet = build(status, JobInfo("7", "", "", "PENDING", "None"), NOW)
    assert none_yet["expected_start"] == "" and "not yet estimated" in render(none_yet)
    running = build(status, JobInfo("7", "", "", "RUNNING", start_time=NOW), NOW)
    assert "expected_start" not in running


def test_the_estimate_asks_for_the_nodes_and_image_the_request_names():
    cfg = _cfg()
    req = validate(cfg, 2, 2, nodelist="node[1-2]")
    assert req.nodelist == "node[1-2]" and req.image == cfg.images[0].name
    slurm = FakeSlurm(free=4)
    estimate.estimate(cfg, req, slurm, "/home/u", now=NOW)
    assert all("--nodelist=node[1-2]" in q for q in slurm.asked)
    with pytest.raises(TypeError):
        validate(cfg, 1, 1, None, "", "", None, "node1")  # keywords only: no silent shift
