"""The test bed is real: rootless Podman as a test user, with the image from the shared store."""

from __future__ import annotations

import os
import pwd

import bed


def test_rootless_container_from_shared_store_writes_files_owned_by_user(testbed):
    user = bed.USERS[0]
    pw = pwd.getpwnam(user)
    target = os.path.join(f"/safe_outputs/{user}", f"smoke-{os.getpid()}")
    out = bed.podman(user, "run", "--rm", "--read-only", "--tmpfs", "/root", bed.IMAGE,
                     "sh", "-c", "id -u; echo hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "hello"]  # root inside the container
    out = bed.podman(user, "run", "--rm", "--read-only", "-v", f"/safe_outputs/{user}:/out",
                     bed.IMAGE, "sh", "-c", f"echo data > /out/{os.path.basename(target)}")
    assert out.returncode == 0, out.stderr
    try:
        st = os.stat(target)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)  # ... and the user outside
    finally:
        os.unlink(target)


def test_image_comes_from_the_shared_store_not_a_per_user_copy(testbed):
    user = bed.USERS[1]
    out = bed.podman(user, "image", "inspect", "--format", "{{.Labels}}", bed.IMAGE)
    assert out.returncode == 0, out.stderr
    assert "sh-jupyter.content-hash" in out.stdout
    local = bed.podman(user, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ReadOnly}}")
    assert f"{bed.IMAGE} true" in local.stdout, local.stdout
