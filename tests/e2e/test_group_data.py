"""Group-shared project data through real Slurm sessions: the user's groups reach the container
(crun keep-groups) and nothing more. Code runs in kernels JupyterLab itself started.

The bed (testbed/steps/30-users.sh) has project `shjproj` (members shjuser1 and shjuser3, not
shjuser2) with /safe_data/shjproj and /safe_outputs/shjproj, 2770, holding a 0640 README.txt,
and project `shjother` that shjuser1 does not belong to.
"""

from __future__ import annotations

import grp
import os
import pwd
import uuid
from concurrent.futures import ThreadPoolExecutor

import lab

import bed

U1, U2 = bed.USERS
MEMBER_ON_HOST = "shjuser3"
PROJECT, OTHER = "shjproj", "shjother"
README = f"/safe_data/{PROJECT}/README.txt"

READ = (f"try:\n    print('read=' + open({README!r}).read().strip())\n"
        "except OSError as exc:\n    print('read-error=' + type(exc).__name__)\n")


def _kernel(user: str, sub: dict, cfg: str, code: str) -> str:
    conn = bed.connection(user, sub["session_id"], cfg)
    return lab.run_in_kernel(int(conn["port"]), conn["password"], code)


def test_project_members_share_data_and_others_do_not(cfg, cleanup):
    with ThreadPoolExecutor(2) as pool:
        member, other = [f.result()[0] for f in
                         [pool.submit(bed.start, u, cfg, cleanup) for u in (U1, U2)]]
    assert "OCI runtime: crun with keep-groups" in bed.session_log(member["session_dir"])

    name = f"from-kernel-{uuid.uuid4().hex[:8]}.txt"
    created = f"/safe_outputs/{PROJECT}/{name}"
    try:
        out = _kernel(U1, member, cfg, READ + (
            f"with open({created!r}, 'w') as fh:\n    fh.write('shared result\\n')\n"
            "print('wrote')\n"))
        assert "read=project shjproj data" in out and "wrote" in out, out
        st = os.stat(created)
        assert st.st_uid == pwd.getpwnam(U1).pw_uid  # the user, not root or a sub-id
        assert st.st_gid == grp.getgrnam(PROJECT).gr_gid  # the setgid directory's project
        # Another member reads the new file on the host.
        got = bed.as_user(MEMBER_ON_HOST, ["cat", created])
        assert got.returncode == 0 and got.stdout == "shared result\n", got.stderr
    finally:
        if os.path.exists(created):
            os.unlink(created)

    out = _kernel(U2, other, cfg, READ + (
        f"import os\ntry:\n    os.listdir('/safe_data/{PROJECT}')\n    print('listed')\n"
        "except OSError as exc:\n    print('list-error=' + type(exc).__name__)\n"))
    assert "read-error=PermissionError" in out and "list-error=PermissionError" in out, out


def test_the_users_groups_widen_nothing_else(cfg, cleanup):
    sub, _ = bed.start(U1, cfg, cleanup)
    pw = pwd.getpwnam(U1)
    probe = f"/mnt/jupyter_host/groups-probe-{uuid.uuid4().hex[:8]}"
    host_probe = os.path.join(pw.pw_dir, ".local/share/ondemand/apps/jupyter_app",
                              os.path.basename(probe))
    gid = grp.getgrnam(PROJECT).gr_gid
    try:
        out = _kernel(U1, sub, cfg, (
            "import os\n"
            "print('uid_map=' + ' '.join(open('/proc/self/uid_map').read().split()))\n"
            f"try:\n    open('/safe_data/{OTHER}/README.txt').read(); print('other=read')\n"
            "except OSError as exc:\n    print('other=' + type(exc).__name__)\n"
            f"open({probe!r}, 'w').write('x')\n"
            f"try:\n    os.chown({probe!r}, -1, {gid}); print('chgrp=done')\n"
            "except OSError as exc:\n    print('chgrp=' + type(exc).__name__)\n"
            "try:\n    os.setgroups([0]); print('setgroups=done')\n"
            "except OSError as exc:\n    print('setgroups=' + type(exc).__name__)\n"))
        # Root inside is the user outside, and only the user: one uid mapped to the user.
        assert f"uid_map=0 {pw.pw_uid} 1" in out, out
        assert "other=PermissionError" in out, out  # a project the user is not in
        assert "chgrp=done" not in out and "setgroups=done" not in out, out
        st = os.stat(host_probe)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)  # not the project's group
    finally:
        if os.path.exists(host_probe):
            os.unlink(host_probe)


def test_runc_still_starts_sessions_and_says_groups_are_lost(cleanup):
    cfg = bed.write_config(bed.E2E_PORTS + '[podman]\nruntime = "runc"\n')
    sub, ready = bed.start(U1, cfg, cleanup)
    assert ready["status"] == "Running"
    log = bed.session_log(sub["session_dir"])
    assert "OCI runtime: runc (podman.runtime is \"runc\")" in log, log
    assert "warning: group-shared directories" in log and "runc drops" in log, log
    out = _kernel(U1, sub, cfg, READ)
    assert "read-error=PermissionError" in out, out
