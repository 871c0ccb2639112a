"""GPU sessions through the real cluster: Slurm GRES with ConstrainDevices=yes, the test bed's
CDI spec (kind example.com/gpu), rootless Podman, and checks made by code in a kernel that the
session's own JupyterLab started.

The bed has no GPU hardware: its GPUs are character devices /dev/shj-gpu0..3 (major 120, no
driver), gres.conf File= names them, and Slurm lets a job open only the ones it holds (an open
of an allowed node fails with ENXIO, of a denied one with EPERM). GPU index i is /dev/shj-gpu<i>.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import lab

import bed

U1, U2 = bed.USERS
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU_MAJOR = 120  # testbed/lib.sh TESTBED_GPU_MAJOR
KIND = "example.com/gpu"
SITE = bed.E2E_PORTS + f'[limits]\nmax_gpus = 4\n[gpu]\ncdi_kind = "{KIND}"\n'
# Device nodes every rootless container has: null, zero, full, random, urandom, tty, ptmx.
STANDARD = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)}
VARIABLES = ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
             "ZE_AFFINITY_MASK", "NVIDIA_VISIBLE_DEVICES", "SHJ_TESTBED_CDI", "SLURM_JOB_GPUS")
INSIDE = f"""
import json, os, stat
nodes = {{}}
for root, dirs, files in os.walk("/dev"):
    for name in files:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            continue
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
            err = 0
        except OSError as exc:
            err = exc.errno
        nodes[path] = [os.major(st.st_rdev), os.minor(st.st_rdev), err]
print(json.dumps({{"nodes": nodes, "env": {{n: os.environ.get(n) for n in {VARIABLES!r}}}}}))
"""


@pytest.fixture
def cfg(testbed) -> str:
    """The e2e port range, GPUs allowed, the bed's CDI kind."""
    return bed.write_config(SITE)


def failing(user: str, cfg: str, cleanup: list[str], *args: str) -> tuple[int, list[dict]]:
    out = bed.submit(user, "--wait", *args, config=cfg)
    got = bed.docs(out.stdout)
    assert got, out.stdout + out.stderr
    cleanup.append(got[0]["job_id"])
    return out.returncode, got


def hold_a_gpu(cleanup: list[str]) -> int:
    """A plain job of the other user holding one GPU; returns its GPU index."""
    out = bed.as_user(U2, ["sbatch", "--parsable", "-o", "/dev/null", "--gres=gpu:1", "-t", "10",
                           "--wrap", "sleep 600"])
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    cleanup.append(job)
    bed.wait_for(lambda: bed.job_state(job) == "RUNNING", 60, f"holder job {job} to run")
    (index,) = gpu_indices(job)
    return index


def gpu_indices(job: str) -> set[int]:
    """The GPUs Slurm allocated to a job (GRES=gpu:N(IDX:1-2,4))."""
    out = subprocess.run(["scontrol", "show", "job", "-d", job], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"GRES=gpu[^ ]*\(IDX:([0-9,-]+)\)", out)
    assert match, out
    indices: set[int] = set()
    for part in match.group(1).split(","):
        lo, _, hi = part.partition("-")
        indices.update(range(int(lo), int(hi or lo) + 1))
    return indices


def session_view(user: str, cfg: str, sub: dict, ready: dict) -> dict:
    """What a kernel of the session's JupyterLab sees: device nodes and GPU variables."""
    conn = bed.connection(user, sub["session_id"], cfg)
    base = ready["connect_url"].split(f":{conn['port']}", 1)[1].split("lab?", 1)[0]
    return json.loads(lab.run_in_kernel(int(conn["port"]), conn["password"], INSIDE,
                                        base_url=base))


def extra_nodes(view: dict) -> dict[str, list[int]]:
    """Device nodes beyond what every container has (pseudo-terminals aside)."""
    return {p: v for p, v in view["nodes"].items()
            if (v[0], v[1]) not in STANDARD and v[0] != 136}


def expect_gpus(view: dict, indices: set[int]) -> None:
    """Exactly these GPUs' nodes, each openable as far as the device cgroup goes (ENXIO: no
    driver behind it; EPERM would mean the job's cgroup denies it), and no other device."""
    assert extra_nodes(view) == {f"/dev/shj-gpu{i}": [GPU_MAJOR, i, errno.ENXIO]
                                 for i in indices}, view
    numbering = ",".join(str(i) for i in range(len(indices)))
    for name in ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES",
                 "ZE_AFFINITY_MASK"):
        assert view["env"][name] == (numbering or None), view["env"]
    assert view["env"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert view["env"]["SLURM_JOB_GPUS"] is None  # the host's numbering never reaches it
    assert view["env"]["SHJ_TESTBED_CDI"] == (KIND if indices else None)  # the spec's own edit


# --- sessions with and without GPUs ---------------------------------------------------------

def test_two_concurrent_one_gpu_sessions_each_see_only_their_own(cfg, cleanup):
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(bed.start, u, cfg, cleanup, "--gpus", "1") for u in (U1, U2)]
        (s1, r1), (s2, r2) = (f.result() for f in futures)
    (g1,), (g2,) = gpu_indices(s1["job_id"]), gpu_indices(s2["job_id"])
    assert g1 != g2
    for user, sub, ready, index in ((U1, s1, r1, g1), (U2, s2, r2, g2)):
        expect_gpus(session_view(user, cfg, sub, ready), {index})
        assert bed.card(user, sub["session_id"], cfg)["gpus"] == 1
        # Chosen by its UUID name, proven by its node, not by any index.
        uuid_name = f"{KIND}=GPU-5348a100-0000-4000-8000-{index:012d}"
        assert f"GPUs: 1 GPU(s) (SLURM_JOB_GPUS={index}): {uuid_name} (/dev/shj-gpu{index})" \
            in bed.session_log(sub["session_dir"])


def test_a_session_without_gpus_sees_none_and_needs_no_spec(testbed, cleanup):
    # Its config even points at a broken spec directory: a job without GPUs reads no spec.
    broken = bed.shared_tempdir()
    with open(os.path.join(broken, "bad.json"), "w", encoding="utf-8") as fh:
        fh.write("{")
    cfg = bed.write_config(SITE + f'cdi_spec_dirs = ["{broken}"]\n')
    sub, ready = bed.start(U1, cfg, cleanup)
    expect_gpus(session_view(U1, cfg, sub, ready), set())
    assert bed.card(U1, sub["session_id"], cfg)["gpus"] == 0


def test_two_gpus_behind_a_taken_one_are_numbered_from_zero_inside(cfg, cleanup):
    taken = hold_a_gpu(cleanup)
    sub, ready = bed.start(U1, cfg, cleanup, "--gpus", "2")
    mine = gpu_indices(sub["job_id"])
    assert len(mine) == 2 and taken not in mine
    # Indices lie: the job itself sees SLURM_JOB_GPUS with the node's ids and, under
    # ConstrainDevices, CUDA_VISIBLE_DEVICES renumbered; the container sees its own 0,1.
    ids = ",".join(map(str, sorted(mine)))
    assert f"SLURM_JOB_GPUS={ids}" in bed.session_log(sub["session_dir"])
    expect_gpus(session_view(U1, cfg, sub, ready), mine)


# --- failing closed, with the reason on the card --------------------------------------------

def _fails(user: str, cfg: str, cleanup: list[str], *args: str) -> dict:
    code, got = failing(user, cfg, cleanup, *args)
    assert code == 3, got
    final = got[-1]
    assert final["status"] == "Completed" and final["failed"], final
    bed.wait_for(lambda: bed.job_state(got[0]["job_id"]) not in ("RUNNING", "COMPLETING"), 60,
                 "the failed session's job to end")
    assert not [n for n in bed.containers_of(user) if got[0]["session_id"] in n]
    card = bed.card(user, got[0]["session_id"], cfg)
    assert card["failed"] and card["gpus"] == 1
    return card


def test_a_spec_missing_the_allocated_gpu_fails_with_the_reason_on_the_card(testbed, cleanup):
    taken = hold_a_gpu(cleanup)
    # A spec (where Podman 4.3 reads specs) whose only GPU is the one the other job holds.
    kind = f"example.com/partial{uuid.uuid4().hex[:8]}"
    path = f"/etc/cdi/shj-test-{kind.rsplit('/', 1)[1]}.json"
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"cdiVersion": "0.5.0", "kind": kind, "devices": [
            {"name": str(taken), "containerEdits": {
                "deviceNodes": [{"path": f"/dev/shj-gpu{taken}"}]}}]}, fh)
    os.chmod(path, 0o644)
    try:
        cfg = bed.write_config(SITE.replace(KIND, kind))
        card = _fails(U1, cfg, cleanup, "--gpus", "1")
    finally:
        os.unlink(path)
    reason = card["reason"]
    assert "Slurm allocated 1 GPU(s)" in reason and f"only 0 CDI device(s) of kind {kind}" \
        in reason, reason
    assert f"not this job's: {kind}={taken} (/dev/shj-gpu{taken})" in reason, reason
    assert "lack this job's GPU" in reason


def test_a_malformed_spec_fails_the_session_naming_it(testbed, cleanup):
    specs = bed.shared_tempdir()
    path = os.path.join(specs, "site-gpu.json")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"cdiVersion": "0.5.0", "kind": "example.com/gpu", "devices": [')
    os.chmod(path, 0o644)
    cfg = bed.write_config(SITE + f'cdi_spec_dirs = ["{specs}"]\n')
    card = _fails(U1, cfg, cleanup, "--gpus", "1")
    assert card["reason"].startswith(f"CDI spec {path} is not valid JSON"), card["reason"]


def test_an_unreadable_spec_fails_the_session_naming_it(testbed, cleanup):
    specs = bed.shared_tempdir()
    path = os.path.join(specs, "site-gpu.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"cdiVersion": "0.5.0", "kind": "example.com/other", "devices": []}, fh)
    os.chmod(path, 0o600)  # root's: the user's supervisor cannot read it
    cfg = bed.write_config(SITE + f'cdi_spec_dirs = ["{specs}"]\n')
    card = _fails(U1, cfg, cleanup, "--gpus", "1")
    assert card["reason"] == (f"CDI spec {path} cannot be read (Permission denied); specs "
                              "must be readable by every user (chmod 0644)")


# --- the admin's check for real GPU nodes, run here on the fake ones ------------------------

def test_bench_gpu_check_passes_on_the_test_bed(cfg):
    """bench/gpu-check as a user (from a copy they can read), with a command that lists the
    bed's GPU nodes instead of `nvidia-smi -L`."""
    root = bed.shared_tempdir()
    for rel in ("bench/gpu-check", "tests/lab.py"):
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), os.path.join(root, rel))
        os.chmod(os.path.dirname(os.path.join(root, rel)), 0o755)
    out = bed.as_user(U1, [bed.PYTHON, os.path.join(root, "bench/gpu-check"), "--config", cfg,
                           "--sh-jupyter", bed.SH, "--via", "127.0.0.1",
                           "--command", "sh -c 'ls /dev/shj-gpu*'"], timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("== session ") == 2 and "PASS" in out.stdout, out.stdout
    seen = re.findall(r"^ {5}(/dev/shj-gpu\d)$", out.stdout, re.M)
    assert len(seen) == 2 and len(set(seen)) == 2, out.stdout
    assert out.stdout.count("Slurm allocated gpu:1(IDX:") == 2, out.stdout
