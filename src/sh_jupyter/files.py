"""Filesystem shell: private directories and atomic, private writes.

Everything a session writes may hold or sit next to a secret, so files are created 0600 and
directories 0700 from the start (never chmod-ed after the fact), and replaced atomically so a
reader (the portal) never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping

from sh_jupyter.errors import SessionFailure
from sh_jupyter.paths import NODE_DIR


def write_private(path: str, text: str) -> None:
    """Atomically replace path with text, mode 0600."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", text=True)
    try:
        # mkstemp creates 0600. No fsync: rename is atomic for readers, which is what counts
        # (a session's files do not outlive a crash of its node in any useful way), and each
        # fsync is milliseconds on the way to Connect.
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_kernel_file(path: str) -> str | None:
    """A /proc or /sys file's text, None when it cannot be read for any reason (absent on this
    kernel, not ours to read): callers treat that as "unknown"."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def ensure_private_dir(path: str, uid: int | None = None) -> None:
    """Create path (and parents) as 0700, or check an existing one is ours and private.

    A directory pre-created by someone else (e.g. in /var/tmp) would let them read or swap
    our files, so that is refused rather than used.
    """
    uid = os.getuid() if uid is None else uid
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SessionFailure(f"{path} is not a directory")
    if st.st_uid != uid:
        raise SessionFailure(f"{path} is owned by uid {st.st_uid}, not {uid}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def ensure_user_dir(path: str, uid: int | None = None) -> bool:
    """Create a directory for the user's data if missing; True if created.

    Every component below the last root-owned one must be the user's own, real directory
    (checked with lstat: a symlink is refused, never followed): a directory another user made
    first could be swapped under us. Nothing is created inside a directory every user may
    write to (/var/tmp): another user could have created it first, so there root must make it
    (the Slurm prolog does for NODE_DIR/USER).
    """
    uid = os.getuid() if uid is None else uid
    created = False
    current = "/"
    for part in [p for p in path.split("/") if p]:
        parent, current = current, os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            _create_component(parent, current)
            created = True
            st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            raise SessionFailure(f"{current} is not a directory"
                                 + (" (a symbolic link)" if stat.S_ISLNK(st.st_mode) else ""))
        if st.st_uid not in (0, uid):
            raise SessionFailure(f"{current} belongs to uid {st.st_uid}, not to uid {uid}")
    return created


def _create_component(parent: str, path: str) -> None:
    """mkdir one missing component, refusing world-writable parents; a clear reason if not."""
    who = "an admin creates it"
    if path.startswith(NODE_DIR + "/") or path == NODE_DIR:
        who = (f"root creates it: the Slurm prolog makes {NODE_DIR}/USER for each session's "
               f"user; without Slurm (run --local) an admin creates {NODE_DIR} (root, 0755) "
               f"and {NODE_DIR}/USER (the user, 0700), e.g. with systemd-tmpfiles")
    if os.lstat(parent).st_mode & stat.S_IWOTH:
        raise SessionFailure(f"{path} does not exist and is not created in {parent}, which "
                             f"every user can write to (another user could own it first); {who}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # a concurrent submit of the same user made it first
        pass
    except PermissionError:
        raise SessionFailure(f"{path} does not exist and you may not create it in {parent}; "
                             f"{who}") from None


def removable_tree(path: str, uid: int | None = None) -> str:
    """Why `path` must not be deleted recursively, or "" when it may be: each component a
    real directory (lstat: no symlink anywhere) owned by root or the user, the last the
    user's. Checked before every rm -rf, so a planted link never redirects a deletion."""
    uid = os.getuid() if uid is None else uid
    current = "/"
    st = None
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return f"{current} does not exist"
        if stat.S_ISLNK(st.st_mode):
            return f"{current} is a symbolic link"
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a directory"
        if st.st_uid not in (0, uid):
            return f"{current} belongs to uid {st.st_uid}"
    if st is None or st.st_uid != uid:
        return f"{path} is not owned by uid {uid}"
    return ""


def remove_scratch(path: str, env: Mapping[str, str]) -> str:
    """Delete a session's scratch directory, files owned by sub-ids (written as another uid
    in the container) through `podman unshare`; the line to log.

    Only after lstat of every component: a symlink planted anywhere on the path (by another
    user in a shared directory, or left by the user) would turn the rm -rf against whatever
    it points to, such as the session directory itself."""
    why = removable_tree(path)
    if why:
        return f"scratch {path} not removed: {why}"
    import shutil

    try:
        shutil.rmtree(path)
    except OSError:
        from sh_jupyter.runner import run

        run(["podman", "unshare", "rm", "-rf", "--", path], env=env, timeout=60)
    if os.path.lexists(path):
        return f"could not remove scratch {path}"
    return f"scratch {path} removed"
