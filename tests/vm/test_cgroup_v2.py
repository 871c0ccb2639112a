"""Sessions on a node like the sites' own: cgroup v2, systemd, users with lingering, Slurm's
cgroup/v2 plugin, Podman 5 with crun and pasta. What only shows there: where the container's
processes live against the job's cgroup, whose limits hold them, and what scancel leaves.

Everything runs at about 16x here (QEMU's software emulation): few sessions, long deadlines.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import signal
import subprocess
import time

import lab

import bed
from vmbed import record

U1, U2 = bed.USERS
SLOW = 240  # deadline for anything that waits on a session's start or end in the guest
README = "/safe_data/shjproj/README.txt"
# Allocates 64 MiB a time (written, so really resident) until something stops it.
HOG = "a = [b'x' * (64 << 20) for _ in range(256)]"


def cgroup_of(pid: int) -> str:
    """The process's cgroup v2 path ("0::PATH")."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("0::"):
                return line[3:].strip()
    raise AssertionError(f"no cgroup v2 entry for pid {pid}")


def job_cgroup(supervisor_path: str, job_id: str) -> str:
    """The job's own cgroup, from the supervisor's (…/job_N/step_batch/…)."""
    marker = f"/job_{job_id}/"
    assert marker in supervisor_path, f"supervisor not in job {job_id}: {supervisor_path}"
    return supervisor_path[:supervisor_path.index(marker) + len(marker) - 1]


def container_pids(user: str, name: str) -> dict[str, int]:
    out = bed.podman(user, "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name)
    assert out.returncode == 0, out.stderr
    conmon, init = (int(x) for x in out.stdout.split())
    return {"conmon": conmon, "jupyterlab": init}


def pid_with(text: str) -> int:
    """The one process whose command line contains text (0 if none)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    return int(pid)
        except OSError:
            continue
    return 0


def pause_pid(user: str) -> int:
    uid = pwd.getpwnam(user).pw_uid
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().split(b"\0")[:2] == [b"catatonit", b"-P"]:
                    return int(pid)
        except OSError:
            continue
    return 0


def oom_kills(cgroup: str) -> int:
    with open(f"/sys/fs/cgroup{cgroup}/memory.events", encoding="ascii") as fh:
        return int(dict(line.split() for line in fh)["oom_kill"])


def session_cgroups(user: str, sub: dict, cfg: str) -> tuple[dict[str, int], dict[str, str]]:
    """Supervisor, conmon, JupyterLab and a kernel JupyterLab started: pids and cgroups."""
    sid = sub["session_id"]
    pids = {"supervisor": bed.supervisor_of(user, sid)}
    assert pids["supervisor"], "supervisor process not found"
    pids.update(container_pids(user, f"epcc-ces-jupyter-{sid}"))
    conn = bed.connection(user, sid, cfg)
    kernel = lab.api(int(conn["port"]), conn["password"], "POST", "api/kernels",
                     {"name": "python3"})
    pids["kernel"] = bed.wait_for(lambda: pid_with(kernel["id"]), SLOW, "the kernel's process")
    pids["pause process"] = pause_pid(user)
    return pids, {name: cgroup_of(pid) for name, pid in pids.items()}


def table(title: str, job: str, paths: dict[str, str]) -> str:
    return "\n".join([title, f"  {'job':14} {job}"]
                     + [f"  {name:14} {path}" for name, path in paths.items()])


def user_scopes(user: str) -> list[str]:
    uid = pwd.getpwnam(user).pw_uid
    base = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service"
    return [p for p in glob.glob(f"{base}/**/libpod*", recursive=True)]


def test_a_session_lives_and_dies_inside_its_job(cfg, cleanup):
    """Through Slurm to Running; every process of the session in the job's cgroup, under its
    memory limit (a kernel's memory hog is killed by it, JupyterLab lives on); the project's
    group data readable (crun keep-groups); scancel leaves no process, container, scope or
    cgroup behind, and the user's Podman still works."""
    sub, ready = bed.start(U1, cfg, cleanup, "--cpus", "1", "--memory", "1", "--time", "30")
    assert ready["status"] == "Running", ready
    job, sid = sub["job_id"], sub["session_id"]
    conn = bed.connection(U1, sid, cfg)
    port, token = int(conn["port"]), conn["password"]
    assert lab.api(port, token, "GET", "api/status")["started"]  # answers with the token
    log = bed.session_log(sub["session_dir"])
    assert "container cgroups: disabled" in log and "OCI runtime: crun with keep-groups" in log

    pids, paths = session_cgroups(U1, sub, cfg)
    jobcg = job_cgroup(paths["supervisor"], job)
    record("cgroups.txt", table(f"after the fix (podman.cgroups = \"auto\"), job {job}:",
                                jobcg, paths))
    for name in ("supervisor", "conmon", "jupyterlab", "kernel"):
        assert paths[name].startswith(jobcg + "/"), f"{name} outside job {job}: {paths[name]}"
    # The user's pause process is outside every job by design (it must outlive them).
    assert "/job_" not in paths["pause process"] and "podman-pause" in paths["pause process"]
    with open(f"/sys/fs/cgroup{jobcg}/memory.max", encoding="ascii") as fh:
        assert int(fh.read()) == 1 << 30  # --memory 1: the job's limit holds the container

    # Group-shared data, from a kernel JupyterLab started: keep-groups works on v2.
    out = lab.run_in_kernel(port, token, f"print(open({README!r}).read().strip())")
    assert "project shjproj data" in out, out

    # A memory hog in a kernel meets the job's limit: the kernel's own counters say so.
    before = oom_kills(jobcg)
    hog = lab.api(port, token, "POST", "api/kernels", {"name": "python3"})
    hog_pid = bed.wait_for(lambda: pid_with(hog["id"]), SLOW, "the hog kernel's process")
    lab.start_in_kernel(port, token, hog["id"], HOG)
    bed.wait_for(lambda: oom_kills(jobcg) > before, SLOW, "an OOM kill in the job's cgroup")
    bed.wait_for(lambda: not os.path.exists(f"/proc/{hog_pid}"), SLOW, "the hog's end")
    assert os.path.exists(f"/proc/{pids['jupyterlab']}")
    assert lab.api(port, token, "GET", "api/status")["started"]
    record("cgroups.txt", f"  memory hog in a kernel: job oom_kill {before} -> "
                          f"{oom_kills(jobcg)}, JupyterLab still answers")

    t0 = time.monotonic()
    subprocess.run(["scancel", job], check=True)
    session = {k: v for k, v in pids.items() if k != "pause process"}
    bed.wait_for(lambda: not [p for p in session.values() if os.path.exists(f"/proc/{p}")],
                 SLOW, "every process of the session to end")
    name = f"epcc-ces-jupyter-{sid}"
    bed.wait_for(lambda: name not in bed.containers_of(U1), SLOW, "the container's removal",
                 interval=1)
    bed.wait_for(lambda: not os.path.exists(f"/sys/fs/cgroup{jobcg}"), SLOW,
                 "the job's cgroup to go")
    record("cgroups.txt", f"  scancel to nothing left: {time.monotonic() - t0:.1f} s")
    assert not user_scopes(U1)
    assert os.path.exists(f"/proc/{pids['pause process']}")
    assert bed.podman(U1, "ps", "-q").returncode == 0


def test_podmans_own_cgroup_would_leave_the_job(guest, cleanup):
    """Why the fix: with Podman's default (a cgroup of its own) the container is a systemd
    scope under user@UID.service, outside the job, its limits and its scancel."""
    cfg = bed.write_config(bed.E2E_PORTS + '[limits]\ndefault_memory_gib = 1\n'
                           '[podman]\ncgroups = "enabled"\n')
    sub, ready = bed.start(U2, cfg, cleanup, "--memory", "1", "--time", "30")
    assert ready["status"] == "Running", ready
    _pids, paths = session_cgroups(U2, sub, cfg)
    jobcg = job_cgroup(paths["supervisor"], sub["job_id"])
    record("cgroups.txt", table(f"before the fix (podman.cgroups = \"enabled\", Podman's "
                                f"default), job {sub['job_id']}:", jobcg, paths))
    uid = pwd.getpwnam(U2).pw_uid
    for name in ("conmon", "jupyterlab", "kernel"):
        assert not paths[name].startswith(jobcg + "/"), paths
        assert f"/user@{uid}.service/" in paths[name], paths
    out = bed.as_user(U2, [bed.SH, "--config", cfg, "cancel", sub["session_id"]])
    assert out.returncode == 0, out.stderr
    bed.wait_for(lambda: f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U2),
                 SLOW, "the container's removal", interval=1)


def test_out_of_memory_is_on_the_card(guest, cleanup):
    """JupyterLab itself over the job's memory: the card says the out-of-memory killer ended
    it, from the job cgroup's own counter (Podman has no cgroup of the container to ask)."""
    cfg = bed.write_config(bed.E2E_PORTS + '[limits]\ndefault_memory_gib = 1\n'
                           f'[image]\ncommand = ["python3", "-c", "{HOG}"]\n')
    out = bed.submit(U1, "--wait", "--memory", "1", config=cfg, timeout=SLOW * 2)
    got = bed.docs(out.stdout)
    assert got, out.stdout + out.stderr
    cleanup.append(got[0]["job_id"])
    assert out.returncode == 3, out.stdout + out.stderr
    card = bed.card(U1, got[0]["session_id"], cfg)
    record("oom-card.txt", json.dumps(card, indent=2))
    assert card["failed"] and "out-of-memory" in card["reason"] and "1 GiB" in card["reason"], card


def test_an_idle_session_ends_itself(guest, cleanup):
    cfg = bed.write_config(bed.E2E_PORTS + "[limits]\ndefault_memory_gib = 1\n"
                           "[session]\nidle_timeout = 30\nhealth_interval = 10\n")
    sub, ready = bed.start(U2, cfg, cleanup, "--time", "30")
    assert ready["status"] == "Running", ready
    bed.wait_for(lambda: bed.job_state(sub["job_id"]) == "COMPLETED", SLOW, "the idle end",
                 interval=1)
    card = bed.card(U2, sub["session_id"], cfg)
    assert card["status"] == "Completed" and not card["failed"], card
    assert "without activity (session.idle_timeout = 30 s)" in card["reason"], card
    assert f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U2)


def test_the_epilog_cleans_up_after_a_killed_supervisor(cfg, cleanup):
    """SIGKILL the supervisor: Slurm ends the job and kills what is in its cgroup (conmon and
    JupyterLab too), which leaves Podman's record stale ("conmon exited prematurely"); the
    epilog still removes it, and the user's next Podman command works."""
    sub, _ = bed.start(U1, cfg, cleanup, "--time", "30")
    sid, job = sub["session_id"], sub["job_id"]
    name = f"epcc-ces-jupyter-{sid}"
    pids = container_pids(U1, name)
    sup = bed.supervisor_of(U1, sid)
    jobcg = job_cgroup(cgroup_of(sup), job)
    os.kill(sup, signal.SIGKILL)
    bed.wait_for(lambda: name not in bed.containers_of(U1), SLOW, "the epilog's removal",
                 interval=1)
    assert not [p for p in pids.values() if os.path.exists(f"/proc/{p}")]
    bed.wait_for(lambda: not os.path.exists(f"/sys/fs/cgroup{jobcg}"), SLOW,
                 "the job's cgroup to go")

    def epilog_lines() -> list[str]:
        with open("/var/log/sh-jupyter/hooks.log", encoding="utf-8") as fh:
            return [line for line in fh if f"epilog job={job} " in line]
    bed.wait_for(lambda: any(" cleanup " in line for line in epilog_lines()), SLOW,
                 "the epilog's last word")
    hooks = epilog_lines()
    record("epilog.txt", "".join(hooks))
    assert any("cleanup done" in line for line in hooks), hooks
    assert not user_scopes(U1)
    assert bed.podman(U1, "ps", "-q").returncode == 0
    card = bed.card(U1, sid, cfg)
    assert card["status"] == "Completed" and card["failed"], card


def test_doctor_on_cgroup_v2(guest):
    out = bed.as_user(U1, [bed.SH, "doctor", "--json"], timeout=SLOW)
    found = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    record("doctor.json", out.stdout)
    assert found["cgroups"]["status"] == "ok", found["cgroups"]
    assert "cgroup v2" in found["cgroups"]["message"]
    assert "a trial container stayed" in found["cgroups"]["message"]
    assert found["keep-groups"]["status"] == "ok", found["keep-groups"]
    bad = bed.write_config('[podman]\ncgroups = "enabled"\n')
    out = bed.as_user(U1, [bed.SH, "--config", bad, "doctor", "--json"], timeout=SLOW)
    found = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    assert out.returncode == 2 and found["cgroups"]["status"] == "error", found["cgroups"]
