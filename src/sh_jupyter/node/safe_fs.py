"""Root's filesystem work on paths a user can change, without following their links.

The hooks run as root, and some paths they touch lie in directories a user owns (the runtime
dir /run/user/UID) or could have created first (anything in world-writable /var/tmp). A path
string walked by the kernel follows whatever symlink the user put there, so root never acts on
one: it opens each component relative to its parent's file descriptor with O_NOFOLLOW, checks
who owns it, and then acts on names inside that descriptor (unlinkat, mkdirat, renameat).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Collection, Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unsafe(OSError):
    """A path component is a symlink, not a directory, or owned by someone not allowed."""


def _parts(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{path!r} has . or .. components")
    return parts


def open_dir(path: str, owners: Collection[int]) -> int:
    """An fd of the directory `path`, reached one component at a time without following any
    link; each component below / must be a directory owned by one of `owners`.

    FileNotFoundError when a component is missing; Unsafe when one is a link, not a directory,
    or someone else's. The caller closes the fd.
    """
    fd = os.open("/", DIR_FLAGS)
    walked = ""
    try:
        for part in _parts(path):
            walked += "/" + part
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                # ELOOP: a symlink; ENOTDIR: a file, socket...
                raise Unsafe(f"{walked} is not a plain directory ({exc.strerror})") from None
            os.close(fd)
            fd = child
            owner = os.fstat(fd).st_uid
            if owner not in owners:
                raise Unsafe(f"{walked} is owned by uid {owner}")
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def directory(path: str, owners: Collection[int]) -> Iterator[int]:
    """`open_dir` as a context manager that closes the fd."""
    fd = open_dir(path, owners)
    try:
        yield fd
    finally:
        os.close(fd)


def remove_file(dir_fd: int, name: str) -> str:
    """Unlink `name` in the directory `dir_fd` unless it is a directory (a symlink is removed
    itself, never its target). Returns what happened, for the log."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISDIR(st.st_mode):
        return "left alone: it is a directory"
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return "absent"
    return "removed"


def remove_small_dir(dir_fd: int, name: str, files: Collection[str], uid: int) -> str:
    """Remove the directory `name` in `dir_fd` and the named files in it, if it is a real
    directory of `uid` (opened without following links); anything else in it stays, and so
    does the directory. Returns what happened, for the log."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:  # a link or not a directory: the user's, left alone
        return f"left alone: {exc.strerror}"
    try:
        if os.fstat(fd).st_uid != uid:
            return "left alone: not the user's"
        for entry in files:
            remove_file(fd, entry)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"left alone: {exc.strerror}"
    return "removed"


def _aside(parent_fd: int, name: str, log: Callable[[str], None], where: str, why: str) -> None:
    """Rename a foreign entry to NAME.foreign-STAMP in the same directory: never used, never
    followed, kept for the admin to look at."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    new = f"{name}.foreign-{stamp}-{os.getpid()}"
    os.rename(name, new, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    log(f"moved aside {where}/{name} ({why}) to {where}/{new}")


def ensure_dir(parent_fd: int, name: str, uid: int, gid: int, mode: int,
               log: Callable[[str], None], where: str) -> int:
    """An fd of the directory `name` in `parent_fd`, owned by uid:gid, created with `mode` if
    missing. Anything else found there (a symlink, a file, someone else's directory) is moved
    aside and replaced. A root-owned directory must not be writable by others (it would let
    them plant entries): its mode is reset. The parent must be root's and not writable by
    the user (or sticky), so nobody can swap the entry once checked."""
    for _attempt in range(3):
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                continue  # appeared meanwhile: look again
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            log(f"created {where}/{name} ({mode:04o} uid {uid})")
            return fd
        except OSError as exc:  # ELOOP, ENOTDIR: a link or not a directory
            _aside(parent_fd, name, log, where, exc.strerror or "not a directory")
            continue
        st = os.fstat(fd)
        if st.st_uid != uid:
            os.close(fd)
            _aside(parent_fd, name, log, where, f"owned by uid {st.st_uid}, not {uid}")
            continue
        if uid == 0 and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            log(f"reset {where}/{name} to {mode:04o}")
        return fd
    raise Unsafe(f"{where}/{name} keeps changing under us")


def ensure_path(base: str, names: list[str], uid: int, gid: int, mode: int,
                log: Callable[[str], None], root_mode: int = 0o755) -> int:
    """An fd of base/names[0]/.../names[-1]: `base` must exist and be root's all the way
    down; the names are ensured with `ensure_dir`, all root's (`root_mode`) but the last,
    which is uid:gid's (`mode`). Used for /run/user/UID and /var/tmp/sh-jupyter/USER."""
    if not names or any("/" in n or n in ("", ".", "..") for n in names):
        raise ValueError(f"bad names {names!r}")
    fd = open_dir(base, (0,))
    where = base.rstrip("/")
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            child = ensure_dir(fd, name, uid if last else 0, gid if last else 0,
                               mode if last else root_mode, log, where)
            os.close(fd)
            fd, where = child, f"{where}/{name}"
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_tree(path: str, uid: int) -> str:
    """Why `path` must not be removed, or "" when it is safe to: every component a directory
    reached without a link, owned by root or uid, and the last one uid's own."""
    try:
        with directory(path, (0, uid)) as fd:
            if os.fstat(fd).st_uid != uid:
                return f"{path} is not owned by uid {uid}"
    except FileNotFoundError:
        return f"{path} does not exist"
    except (Unsafe, ValueError) as exc:
        return str(exc)
    return ""
