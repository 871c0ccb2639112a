"""One-line reasons for the card (pure): what happened, never a guess, never a log dump."""

from __future__ import annotations

from datetime import datetime, timezone

from sh_jupyter.container.cgroups import oom_kill_count, own_paths
from sh_jupyter.container.exits import ExitFacts, reason
from sh_jupyter.session import REASON_MAX, Status, one_line
from sh_jupyter.supervisor.activity import idle_seconds, parse_time


def test_oom_is_said_only_when_recorded():
    oom = reason(ExitFacts("exited", 137, oom_killed=True), memory_gib=2)
    assert "out-of-memory killer" in oom and "2 GiB" in oom
    killed = reason(ExitFacts("exited", 137, oom_killed=False))
    assert "SIGKILL" in killed and "not out of memory" in killed
    assert "out-of-memory killer" not in killed


def test_plain_exit_and_unknown():
    assert reason(ExitFacts("exited", 3)).startswith("JupyterLab exited with status 3")
    assert "could not say" in reason(ExitFacts("exited", None))
    assert "SIGTERM" in reason(ExitFacts("exited", 143))
    assert "signal 100" in reason(ExitFacts("exited", 228))


def test_card_reasons_are_one_short_line():
    long = "JupyterLab exited during start-up: " + "x | " * 600 + "\nsecond line"
    line = one_line(long)
    assert "\n" not in line and len(line) <= REASON_MAX and line.endswith("…")
    assert Status("s").fail(long).reason == line
    assert one_line("a  b\n c") == "a b c"


NOW = datetime(2026, 11, 29, 0, 10, 0, tzinfo=timezone.utc)


def test_idle_seconds_counts_from_the_last_activity():
    report = {"kernels": 0, "last_activity": "2026-11-29T00:09:30.5Z"}
    assert idle_seconds(report, 0, NOW) == 29.5
    assert parse_time("2026-11-29T00:09:30.500000Z").microsecond == 500000


def test_kernels_terminals_or_no_answer_mean_not_idle():
    report = {"kernels": 0, "last_activity": "2026-11-29T00:00:00Z"}
    assert idle_seconds({**report, "kernels": 1}, 0, NOW) is None
    assert idle_seconds(report, 2, NOW) is None
    assert idle_seconds(report, None, NOW) is None
    assert idle_seconds({**report, "last_activity": "2026-11-29T00:20:00Z"}, 0, NOW) == 0.0


def test_start_up_reasons_carry_the_last_lines_only_for_plain_exits():
    plain = reason(ExitFacts("exited", 7), starting=True, last_lines="boom | bye")
    assert plain == "JupyterLab exited during start-up (status 7): boom | bye"
    killed = reason(ExitFacts("exited", 137, oom_killed=True), 1, starting=True,
                    last_lines="noise")
    assert "out-of-memory killer during start-up" in killed and "noise" not in killed


def test_no_record_of_oom_means_no_claim_either_way():
    unknown = reason(ExitFacts("exited", 137, oom_killed=None))
    assert "SIGKILL" in unknown and "memory" not in unknown


V1 = "12:memory:/slurm_vm/uid_1001/job_7/step_batch\n11:cpu,cpuacct:/slurm_vm\n0::/\n"
V2 = "0::/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0\n"


def test_oom_kill_count_reads_the_jobs_memory_cgroup():
    files = {
        "/sys/fs/cgroup/memory/slurm_vm/uid_1001/job_7/step_batch/memory.oom_control":
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0/"
        "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
    }
    assert oom_kill_count(V1, files.get) == 2
    assert oom_kill_count(V2, files.get) == 1
    assert oom_kill_count("3:cpu:/x\n", files.get) is None
    assert oom_kill_count("12:memory:/gone\n", files.get) is None
    assert own_paths(V1)["cpuacct"] == "/slurm_vm"


def test_oom_kill_count_on_v2_falls_back_to_the_nearest_memory_cgroup():
    """Where the memory controller stops above the task's cgroup, the step's (or job's)
    counter covers it: memory.events counts its whole subtree."""
    step = ("/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7/step_batch/memory.events")
    assert oom_kill_count(V2, {step: "oom 1\noom_kill 3\n"}.get) == 3
    assert oom_kill_count(V2, {}.get) is None
