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

from sh_jupyter.errors import SessionFailure


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

    Every component below the last root-owned one must be the user's own, real directory: a
    directory another user made first (e.g. in /var/tmp) could be swapped under us.
    """
    uid = os.getuid() if uid is None else uid
    created = False
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, 0o700)
                created = True
            except FileExistsError:  # a concurrent submit of the same user made it first
                pass
            st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            raise SessionFailure(f"{current} is not a directory")
        if st.st_uid not in (0, uid):
            raise SessionFailure(f"{current} belongs to uid {st.st_uid}, not to uid {uid}")
    return created
