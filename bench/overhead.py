"""What an idle session costs the node besides JupyterLab itself (per-session overhead).

A real session through Slurm (`submit --wait` as shjuser1), left idle: every process of the
user on the node except the container's own tree (tini, JupyterLab, kernels) is ours: the
supervisor, any Podman API service, conmon, the network helpers (slirp4netns, rootlessport) and
the user's rootless pause process (one per user, shared by their sessions). Their CPU time over
the idle stretch and their resident memory at its end are summed and compared with the targets:
<= 0.02 s CPU per idle minute and <= 20 MB RSS in total, which is lighter than what
batchspawner's job keeps beside its server (`srun` and a shell, 12 MB, plus a second
slurmstepd). Before the second release: about 0.28 s and 93 MB (supervisor 30, API service 44,
rootlessport 13, slirp4netns 3, conmon 2); before the idle wait became a small program of its
own, 36 MB. The kernel counts CPU time in 10 ms ticks: a longer `--idle-seconds` gives a finer
figure.

Run as root: `/opt/sh-jupyter/venv/bin/python bench/overhead.py [--idle-seconds S]`.
Only this benchmark's session may run for shjuser1 meanwhile (it refuses to start otherwise).
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl

USER = "shjuser1"
CPU_TARGET = 0.02  # s per idle minute
RSS_TARGET = 20.0  # MB


def user_pids(uid: int) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                pids.append(int(pid))
        except FileNotFoundError:
            continue
    return pids


def container_init(user: str, name: str) -> int:
    out = bed_podman(user, "inspect", "--format", "{{.State.Pid}}", name)
    return int(out.strip())


def bed_podman(user: str, *args: str) -> str:
    res = bl.bed.podman(user, *args)
    if res.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def label(pid: int) -> str:
    argv = bl.cmdline(pid)
    if "system service" in argv:
        return "Podman API service"
    if " run" in argv and "sh-jupyter" in argv:
        return "supervisor (sh-jupyter run" + (", idle wait)" if "(idle)" in argv else ")")
    for name in ("conmon", "slirp4netns", "rootlessport", "catatonit", "pasta"):
        if name in argv.split(" ", 1)[0]:
            return name + (" (pause process, one per user)" if name == "catatonit" else "")
    return argv[:40] or f"pid {pid}"


def measure(idle: float, network: str) -> tuple[list[list[str]], float, float, str]:
    uid = pwd.getpwnam(USER).pw_uid
    # The default health_interval (60 s): one check per idle minute.
    cfg = bl.write_config(bl.CONFIG_TEXT + f'[podman]\nnetwork = "{network}"\n')
    out = bl.bed.submit(USER, "--wait", "--cpus", "1", "--memory", "2", config=cfg)
    subs = bl.bed.docs(out.stdout)
    if not subs or out.returncode != 0:
        raise RuntimeError(f"session did not start: {out.stdout[-300:]} {out.stderr[-300:]}")
    job = subs[0]["job_id"]
    try:
        name = f"epcc-ces-jupyter-{subs[0]['session_id']}"
        time.sleep(2)  # let the start settle (the API service is stopped right after Running)
        lab = bl.tree(container_init(USER, name))
        ours = [p for p in user_pids(uid) if p not in lab]
        cpu0 = {p: bl.cpu_seconds(p) for p in ours}
        bl.say(f"  idle session {subs[0]['session_id'][:8]}: sampling {len(ours)} processes "
               f"over {idle:.0f} s")
        time.sleep(idle)
        now = set(user_pids(uid)) - bl.tree(container_init(USER, name))
        rows, cpu_total, rss_total = [], 0.0, 0.0
        for pid in sorted(set(ours) | now):
            start, end = cpu0.get(pid) or 0.0, bl.cpu_seconds(pid)
            rss = (bl.status_kb(pid, "VmRSS") or 0) / 1024
            if end is None:
                continue
            cpu = end - start
            cpu_total += cpu
            rss_total += rss
            rows.append([label(pid), f"{cpu * 60 / idle:.3f} s", f"{rss:.1f} MB"])
        return rows, cpu_total * 60 / idle, rss_total, job
    finally:
        subprocess.run(["scancel", job], check=False)
        bl.wait_job_end(job, 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--network", default="auto",
                        help="podman.network for the session (auto: Podman's own default, "
                             "pasta on Podman 5; slirp4netns is lighter where installed)")
    args = parser.parse_args()

    def body() -> int:
        uid = pwd.getpwnam(USER).pw_uid
        if any("sh-jupyter" in bl.cmdline(p) for p in user_pids(uid)):
            bl.say(f"{USER} already runs a session: the sums would include it")
            return 2
        rows, cpu_min, rss, _job = measure(args.idle_seconds, args.network)
        cpu_min = round(cpu_min, 3)  # ticks of 10 ms: no float noise in the verdict
        text = [f"### Idle session: what it costs the node besides JupyterLab ({USER}, "
                "through Slurm)\n", bl.machine_note() + f". Idle stretch {args.idle_seconds:.0f} "
                f"s; podman.network = \"{args.network}\"; the container's own processes (tini, "
                "JupyterLab) are excluded.\n",
                bl.table(["process", "CPU per idle minute", "RSS at the end"], rows), "",
                bl.table(["measure", "value", "target"], [
                    ["CPU, everything we start, per idle minute", f"{cpu_min:.3f} s",
                     f"<= {CPU_TARGET} s: {bl.verdict(cpu_min <= CPU_TARGET)}"],
                    ["RSS, everything we start", f"{rss:.1f} MB",
                     f"<= {RSS_TARGET:.0f} MB: {bl.verdict(rss <= RSS_TARGET)}"],
                ]), ""]
        name = "overhead" if args.network == "auto" else f"overhead-{args.network}"
        bl.write_result(name, "\n".join(text) + "\n")
        return 0

    return bl.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
