"""Attacks on root's Slurm hooks, each run as an unprivileged user against the real bed.

shjuser2 attacks, shjuser1 is the victim. The hooks run exactly as slurmd runs them: the
installed /usr/libexec/sh-jupyter/{prolog,epilog}, as root, with `env -i` and only the
SLURM_JOB_* variables (or through a real sbatch job where the node's own reaction counts).
Any user can make a job look like a session (a working directory named by a UUID and its
output in DIR/output.log), so the attacker needs no real session: a "poser" job will do.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid

import pytest

import bed

ATTACKER, VICTIM = "shjuser2", "shjuser1"
HOOKS = "/usr/libexec/sh-jupyter"
LOG = "/var/log/sh-jupyter/hooks.log"
NODE_DIR = "/var/tmp/sh-jupyter"
HOOK_BUDGET = 150  # the hooks' own budget is 120 s; Slurm's PrologEpilogTimeout is 180 s


def _pw(user: str) -> pwd.struct_passwd:
    return pwd.getpwnam(user)


def _poser(user: str = ATTACKER) -> tuple[str, str]:
    """An ordinary directory that looks like a session directory: (session id, path)."""
    sid = str(uuid.uuid4())
    path = os.path.join(_pw(user).pw_dir, "x", sid)
    out = bed.as_user(user, ["mkdir", "-p", path])
    assert out.returncode == 0, out.stderr
    return sid, path


def _fake_job_id() -> str:
    """A job id no real job on the bed has (the epilog also looks for its cgroups)."""
    return str(900000 + int.from_bytes(os.urandom(2), "big"))


def run_hook(which: str, user: str, job_id: str, work_dir: str,
             timeout: float = HOOK_BUDGET + 30) -> subprocess.CompletedProcess:
    """The installed hook as slurmd runs it: root, no PATH, no HOME, SLURM_JOB_* only."""
    pw = _pw(user)
    env = {"SLURM_JOB_ID": job_id, "SLURM_JOB_USER": user, "SLURM_JOB_UID": str(pw.pw_uid),
           "SLURM_JOB_GID": str(pw.pw_gid), "SLURM_JOB_WORK_DIR": work_dir,
           "SLURM_JOB_STDOUT": os.path.join(work_dir, "output.log"),
           "SLURM_JOB_STDERR": os.path.join(work_dir, "output.log"),
           "SLURM_SCRIPT_CONTEXT": f"{which}_slurmd", "SLURM_CLUSTER_NAME": "shj"}
    if which == "epilog":
        env["SLURM_JOB_EXIT_CODE"] = "0"
        env["SLURM_JOB_EXIT_CODE2"] = "0:0"
    return subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()],
                           f"{HOOKS}/{which}"], cwd="/", capture_output=True, text=True,
                          timeout=timeout, check=False)


def log_lines(job_id: str) -> list[str]:
    with open(LOG, encoding="utf-8", errors="replace") as fh:
        return [line for line in fh if f" job={job_id} " in line]


def _node_state() -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip()


def _resume_if_drained() -> None:
    for line in _node_state().splitlines():
        name, _, state = line.partition(" ")
        if "drain" in state or state.startswith(("drng", "drain")):
            subprocess.run(["scontrol", "update", f"nodename={name}", "state=resume"],
                           check=False)


@pytest.fixture
def attacker_conf():
    """The attacker's own ~/.config/containers/containers.conf, restored afterwards."""
    pw = _pw(ATTACKER)
    folder = os.path.join(pw.pw_dir, ".config", "containers")
    path = os.path.join(folder, "containers.conf")
    saved = path + ".shj-test-saved"
    assert bed.as_user(ATTACKER, ["mkdir", "-p", folder]).returncode == 0
    if os.path.lexists(path):
        os.rename(path, saved)
    yield path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if os.path.lexists(saved):
        os.rename(saved, path)


@pytest.mark.usefixtures("testbed")
def test_a_directory_where_the_socket_goes_does_not_drain_the_node():
    """As shjuser2, submit an ordinary job that poses as a session and, while it runs, makes a
    directory where the session's API socket would be (the issue's one-liner). The epilog used
    to fail on it (IsADirectoryError) and Slurm drained the node for everyone."""
    sid, work = _poser()
    uid = _pw(ATTACKER).pw_uid
    planted = f"/run/user/{uid}/sh-jupyter/{sid[:8]}.sock"
    try:
        out = bed.as_user(ATTACKER, [
            "sbatch", "--parsable", "--wait", "--chdir", work, "-o", f"{work}/output.log",
            "--wrap", f"mkdir -p {planted}"], timeout=120)
        job_id = out.stdout.strip().split(";")[0]
        assert out.returncode == 0, out.stderr
        bed.wait_for(lambda: any(" cleanup " in line for line in log_lines(job_id)),
                     HOOK_BUDGET, "the epilog's last line")
        bed.wait_for(lambda: "comp" not in _node_state(), 60, "the node to leave COMPLETING")
        lines = log_lines(job_id)
        assert any(f"session={sid}" in line for line in lines), lines  # it was taken for one
        assert any("cleanup done" in line for line in lines), lines
        state = _node_state()
        assert "drain" not in state and "drng" not in state, state
        assert bed.job_state(job_id) in ("COMPLETED", "GONE"), bed.job_state(job_id)
        assert os.path.isdir(planted)  # left alone: root deletes no user's tree
    finally:
        with contextlib.suppress(AssertionError, NameError):  # the epilog's end, then undrain
            bed.wait_for(lambda: any(" cleanup " in line or " error: " in line
                                     for line in log_lines(job_id)), HOOK_BUDGET, "epilog")
            bed.wait_for(lambda: "comp" not in _node_state(), 60, "the node to settle")
        _resume_if_drained()
        bed.as_user(ATTACKER, ["rm", "-rf", "--", planted, work])


@pytest.mark.usefixtures("testbed")
def test_a_broken_containers_conf_does_not_fail_the_hooks(attacker_conf):
    """As shjuser2, write a containers.conf Podman cannot parse (with shared homes it reaches
    every node), then have a poser job's prolog and epilog run: every `podman` of the hooks
    fails. The epilog used to raise on the failed `podman ps` and exit 1 (drain)."""
    with open(attacker_conf, "w", encoding="utf-8") as fh:
        fh.write('[engine\nthis is = = not toml\n')
    os.chown(attacker_conf, _pw(ATTACKER).pw_uid, _pw(ATTACKER).pw_gid)
    assert bed.as_user(ATTACKER, ["podman", "ps"]).returncode != 0  # the attack is in place
    _sid, work = _poser()
    job_id = _fake_job_id()
    try:
        pro = run_hook("prolog", ATTACKER, job_id, work)
        epi = run_hook("epilog", ATTACKER, job_id, work)
        assert (pro.returncode, epi.returncode) == (0, 0), (pro.stderr, epi.stderr)
        lines = log_lines(job_id)
        assert any("podman ps failed" in line for line in lines), lines
        assert any("cleanup done" in line for line in lines), lines
    finally:
        bed.as_user(ATTACKER, ["rm", "-rf", "--", work])


def _victim_socket(sid8: str) -> tuple[str, str]:
    """A real unix socket (and its .log) of shjuser1's in shjuser1's runtime dir, as a live
    session's Podman API socket would be."""
    vuid = _pw(VICTIM).pw_uid
    folder = f"/run/user/{vuid}/sh-jupyter"
    sock = f"{folder}/{sid8}.sock"
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
            "s.listen(); open(sys.argv[1]+'.log','w').write('api log\\n')")
    out = bed.as_user(VICTIM, ["sh", "-c", f"mkdir -p -m 0700 {folder} && "
                               f"exec /usr/bin/python3 -c \"{code}\" {sock}"])
    assert out.returncode == 0, out.stderr
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == vuid
    return sock, sock + ".log"


def _survives(paths: tuple[str, str]) -> None:
    for path in paths:
        assert os.path.lexists(path), f"{path} was deleted"
    assert stat.S_ISSOCK(os.lstat(paths[0]).st_mode)


@pytest.mark.usefixtures("testbed")
def test_a_symlinked_socket_dir_does_not_make_root_delete_another_users_socket():
    """As shjuser2, replace /run/user/ME/sh-jupyter with a symlink to shjuser1's runtime
    sh-jupyter dir, then end a poser job whose session id starts like shjuser1's live socket.
    The epilog used to unlink /run/user/ME/sh-jupyter/<sid8>.sock as root, through the link:
    shjuser1's Podman API socket and its log."""
    sid, work = _poser()
    victim = _victim_socket(sid[:8])
    auid = _pw(ATTACKER).pw_uid
    mine = f"/run/user/{auid}/sh-jupyter"
    saved = f"{mine}.shj-test-saved"
    if os.path.lexists(mine):
        os.rename(mine, saved)
    try:
        out = bed.as_user(ATTACKER, ["ln", "-s", os.path.dirname(victim[0]), mine])
        assert out.returncode == 0, out.stderr
        epi = run_hook("epilog", ATTACKER, _fake_job_id(), work)
        assert epi.returncode == 0, epi.stderr
        _survives(victim)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(mine)
        if os.path.lexists(saved):
            os.rename(saved, mine)
        for path in victim:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        bed.as_user(ATTACKER, ["rm", "-rf", "--", work])


@pytest.mark.usefixtures("testbed")
def test_a_symlinked_socket_does_not_make_root_delete_its_target():
    """As shjuser2, make /run/user/ME/sh-jupyter/<sid8>.sock (and .sock.log) symlinks to
    shjuser1's live socket and log, then end the poser job: root may remove the links, never
    what they point to."""
    sid, work = _poser()
    victim = _victim_socket(sid[:8])
    auid = _pw(ATTACKER).pw_uid
    mine = f"/run/user/{auid}/sh-jupyter"
    links = (f"{mine}/{sid[:8]}.sock", f"{mine}/{sid[:8]}.sock.log")
    try:
        for link, target in zip(links, victim):
            out = bed.as_user(ATTACKER, ["sh", "-c", f"mkdir -p {mine} && ln -s {target} {link}"])
            assert out.returncode == 0, out.stderr
        epi = run_hook("epilog", ATTACKER, _fake_job_id(), work)
        assert epi.returncode == 0, epi.stderr
        _survives(victim)
    finally:
        for path in (*links, *victim):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        bed.as_user(ATTACKER, ["rm", "-rf", "--", work])


def _move_aside(path: str, moved: list[str]) -> None:
    if os.path.lexists(path):
        new = f"{path}.shj-test-{os.getpid()}-{len(moved)}"
        os.rename(path, new)
        moved.append(new)


@pytest.mark.usefixtures("testbed")
def test_squatting_var_tmp_neither_breaks_nor_deletes_the_victims_session():
    """As shjuser2, on a node where shjuser1 has no session yet, create shjuser1's node-local
    directories first (both /var/tmp/sh-jupyter and the older /var/tmp/sh-jupyter-shjuser1),
    world-writable, with `scratch` a symlink to shjuser1's sessions directory. shjuser1's
    session used to fail, and its teardown then rm -rf'ed shjuser1's own session directory
    through the link. Now the prolog moves the squat aside and the session runs."""
    cfg = bed.write_config(bed.E2E_PORTS)
    vpw = _pw(VICTIM)
    sessions = os.path.join(vpw.pw_dir,
                            "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output")
    moved: list[str] = []
    planted = []
    cleanup: list[str] = []
    try:
        for path in (NODE_DIR, f"/var/tmp/sh-jupyter-{VICTIM}"):  # a node fresh for shjuser1
            _move_aside(path, moved)
        for base in (f"{NODE_DIR}/{VICTIM}", f"/var/tmp/sh-jupyter-{VICTIM}"):
            top = base.split("/")[3]
            out = bed.as_user(ATTACKER, ["sh", "-c", f"umask 0; mkdir -p {base} && "
                                         f"chmod 0777 /var/tmp/{top} {base} && "
                                         f"ln -s {sessions} {base}/scratch"])
            assert out.returncode == 0, out.stderr
            planted.append(f"/var/tmp/{top}")
        sub, ready = bed.start(VICTIM, cfg, cleanup)
        assert ready["status"] == "Running", ready
        session_dir = sub["session_dir"]
        scratch = f"{NODE_DIR}/{VICTIM}/scratch/{sub['session_id']}"
        for path in (NODE_DIR, f"{NODE_DIR}/{VICTIM}", f"{NODE_DIR}/{VICTIM}/scratch",
                     scratch):
            st = os.lstat(path)
            assert stat.S_ISDIR(st.st_mode), path
            assert st.st_uid == (0 if path == NODE_DIR else vpw.pw_uid), path
        foreign = [n for n in os.listdir("/var/tmp") if n.startswith("sh-jupyter.foreign-")]
        assert foreign and all(os.lstat(f"/var/tmp/{n}").st_uid == _pw(ATTACKER).pw_uid
                               for n in foreign), foreign
        planted += [f"/var/tmp/{n}" for n in foreign]
        out = bed.as_user(VICTIM, [bed.SH, "--config", cfg, "cancel", sub["session_id"]])
        assert out.returncode == 0, out.stderr
        bed.wait_for(lambda: bed.job_state(sub["job_id"]) not in
                     ("RUNNING", "PENDING", "COMPLETING"), 60, "the session's job to end")
        bed.wait_for(lambda: not os.path.exists(scratch), 60, "scratch removal")
        assert os.path.isfile(os.path.join(session_dir, "status.json")), \
            "the victim's session directory was deleted"
    finally:
        for job in cleanup:
            subprocess.run(["scancel", job], check=False)
        for job in cleanup:
            bed.wait_for(lambda j=job: bed.job_state(j) not in ("RUNNING", "PENDING",
                                                                 "COMPLETING"),
                         60, f"job {job} to end")
        for path in planted:  # rmtree removes the links themselves, never their targets
            if os.path.islink(path):
                os.unlink(path)
            elif os.path.lexists(path):
                shutil.rmtree(path)
        for path in moved:  # the bed's own directories back (the new one is root's too)
            original = path.rsplit(".shj-test-", 1)[0]
            if os.path.lexists(original) and original == NODE_DIR:
                shutil.rmtree(original)
            if not os.path.lexists(original):
                os.rename(path, original)
            else:
                shutil.rmtree(path)


def _podmans_of(user: str) -> set[int]:
    uid = _pw(user).pw_uid
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv0 = fh.read().split(b"\0")[0]
        except OSError:
            continue
        if argv0.endswith(b"podman"):
            found.add(int(pid))
    return found


@pytest.mark.usefixtures("testbed")
def test_a_podman_that_hangs_neither_fails_the_epilog_nor_outlives_it(attacker_conf):
    """As shjuser2, make ~/.config/containers/containers.conf a FIFO: every podman the hooks
    run as shjuser2 blocks reading it, past its step's timeout. The epilog used to raise on the
    timed-out `podman ps` (exit 1: drain), and the blocked podman outlived the hook (only
    runuser was killed), outside any job's accounting."""
    os.mkfifo(attacker_conf, 0o600)
    os.chown(attacker_conf, _pw(ATTACKER).pw_uid, _pw(ATTACKER).pw_gid)
    before = _podmans_of(ATTACKER)
    _sid, work = _poser()
    job_id = _fake_job_id()
    try:
        t0 = time.monotonic()
        epi = run_hook("epilog", ATTACKER, job_id, work)
        took = time.monotonic() - t0
        assert epi.returncode == 0, epi.stderr
        assert took < HOOK_BUDGET, took
        lines = log_lines(job_id)
        assert any("did not finish within" in line for line in lines), lines
        assert _podmans_of(ATTACKER) - before == set(), "a hook's podman outlived its step"
    finally:
        for pid in _podmans_of(ATTACKER) - before:  # what the old code left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        bed.as_user(ATTACKER, ["rm", "-rf", "--", work])


@pytest.mark.usefixtures("testbed")
def test_hooks_log_is_private_and_a_user_cannot_forge_its_lines():
    """As shjuser2, run a process that looks like the poser session's orphaned Podman API
    service (`podman system service unix://<its socket>`, so the epilog ends it and logs its
    command line) with an argument holding a newline, a forged log line, an escape sequence
    and 20 000 more characters. hooks.log used to be world-readable (0644) and wrote such text
    raw: the forged line appeared as a line of its own."""
    sid, work = _poser()
    auid = _pw(ATTACKER).pw_uid
    job_id = _fake_job_id()
    forged = f"2030-01-01T00:00:00 epilog job={job_id} user={VICTIM} FORGED cleanup done"
    uri = f"unix:///run/user/{auid}/sh-jupyter/{sid[:8]}.sock"
    payload = "x\n" + forged + "\x1b[2K" + "y" * 20000
    start = os.path.getsize(LOG) if os.path.exists(LOG) else 0
    proc = bed.popen_as_user(ATTACKER, [
        "bash", "-c", 'exec -a podman /usr/bin/python3 -c "import time; time.sleep(300)" '
        'system service "$1" "$2"', "_", payload, uri])
    try:
        bed.wait_for(lambda: uri.encode() in _cmdline(proc), 10, "the attacker's process")
        epi = run_hook("epilog", ATTACKER, job_id, work)
        assert epi.returncode == 0, epi.stderr
        st = os.stat(LOG)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
        with open(LOG, encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            text = fh.read()  # what this test's hooks wrote (and maybe a few others')
        assert not any(line.startswith(forged) for line in text.splitlines()), \
            "a user's text forged a log line"
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", text), "control characters in the log"
        mine = [line for line in text.splitlines() if f" job={job_id} " in line]
        assert any("terminating stray" in line and "\\n" + forged in line for line in mine), mine
        assert max(len(line) for line in mine) < 2200
    finally:
        with contextlib.suppress(ProcessLookupError, IndexError, OSError):
            os.kill(_child(proc), signal.SIGKILL)
        proc.wait(timeout=10)
        bed.as_user(ATTACKER, ["rm", "-rf", "--", work])


def _child(proc: subprocess.Popen) -> int:
    """runuser's child (env -i exec-ed into the attacker's python)."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="ascii") as fh:
        return int(fh.read().split()[0])


def _cmdline(proc: subprocess.Popen) -> bytes:
    try:
        with open(f"/proc/{_child(proc)}/cmdline", "rb") as fh:
            return fh.read()
    except (OSError, IndexError, ValueError):
        return b""
