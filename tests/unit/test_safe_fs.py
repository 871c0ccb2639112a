"""Root's link-free filesystem walk (node/safe_fs.py), the user's lstat checks (files.py), the
hooks' log line form, and the runner's process-group kill."""

from __future__ import annotations

import os
import stat
import time

import pytest

from sh_jupyter import files
from sh_jupyter.errors import SessionFailure
from sh_jupyter.node import procs, safe_fs
from sh_jupyter.node.entry import MAX_LINE, log_line
from sh_jupyter.runner import TIMED_OUT, run

ME = os.getuid()
OWNERS = (0, ME)


def test_open_dir_walks_real_directories(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with safe_fs.directory(str(tmp_path / "a" / "b"), OWNERS) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))


@pytest.mark.parametrize("where", ["parent", "leaf"])
def test_open_dir_never_follows_a_link(tmp_path, where):
    target = tmp_path / "elsewhere"
    (target / "sub").mkdir(parents=True)
    if where == "parent":
        (tmp_path / "link").symlink_to(target)
        path = tmp_path / "link" / "sub"
    else:
        path = tmp_path / "link"
        path.symlink_to(target)
    with pytest.raises(safe_fs.Unsafe, match="not a plain directory"):
        safe_fs.open_dir(str(path), OWNERS)


def test_open_dir_checks_every_owner(tmp_path):
    with pytest.raises(safe_fs.Unsafe, match="owned by uid"):
        safe_fs.open_dir(str(tmp_path), (ME + 4242,) if ME else (4242,))


def test_open_dir_missing_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        safe_fs.open_dir(str(tmp_path / "nope"), OWNERS)


def test_remove_file_unlinks_a_link_not_its_target_and_leaves_directories(tmp_path):
    target = tmp_path / "victim.sock"
    target.write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "s.sock").symlink_to(target)
    (tmp_path / "d" / "s.sock.log").mkdir()
    with safe_fs.directory(str(tmp_path / "d"), OWNERS) as fd:
        assert safe_fs.remove_file(fd, "s.sock") == "removed"
        assert safe_fs.remove_file(fd, "s.sock.log") == "left alone: it is a directory"
        assert safe_fs.remove_file(fd, "absent") == "absent"
    assert target.read_text() == "x"
    assert (tmp_path / "d" / "s.sock.log").is_dir()


@pytest.mark.parametrize("planted", ["link", "file"])
def test_ensure_dir_moves_a_foreign_entry_aside(tmp_path, planted):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    entry = tmp_path / "user"
    if planted == "link":
        entry.symlink_to(elsewhere)
    else:
        entry.write_text("junk")
    said = []
    with safe_fs.directory(str(tmp_path), OWNERS) as parent:
        fd = safe_fs.ensure_dir(parent, "user", ME, os.getgid(), 0o700, said.append,
                                str(tmp_path))
        os.close(fd)
    st = os.lstat(entry)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("user.foreign-")]
    assert len(aside) == 1 and (aside[0].is_symlink() or aside[0].read_text() == "junk")
    assert any("moved aside" in line for line in said)
    assert list(elsewhere.iterdir()) == []  # nothing made through the link


def test_ensure_dir_keeps_the_users_own(tmp_path):
    (tmp_path / "user").mkdir(mode=0o750)
    (tmp_path / "user" / "keep").write_text("k")
    with safe_fs.directory(str(tmp_path), OWNERS) as parent:
        os.close(safe_fs.ensure_dir(parent, "user", ME, os.getgid(), 0o700, print, "x"))
    assert (tmp_path / "user" / "keep").read_text() == "k"


def test_check_tree(tmp_path):
    (tmp_path / "real" / "s").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert safe_fs.check_tree(str(tmp_path / "real" / "s"), ME) == ""
    assert "not a plain directory" in safe_fs.check_tree(str(tmp_path / "link" / "s"), ME)
    assert safe_fs.check_tree(str(tmp_path / "gone"), ME).endswith("does not exist")


def test_removable_tree_refuses_any_link_on_the_path(tmp_path):
    (tmp_path / "sessions" / "sid").mkdir(parents=True)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "scratch").symlink_to(tmp_path / "sessions")
    assert files.removable_tree(str(tmp_path / "sessions" / "sid")) == ""
    assert "symbolic link" in files.removable_tree(str(tmp_path / "u" / "scratch" / "sid"))
    assert "symbolic link" in files.removable_tree(str(tmp_path / "u" / "scratch"))


def test_ensure_user_dir_refuses_to_create_in_a_world_writable_directory(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(SessionFailure, match="every user can write to"):
        files.ensure_user_dir(str(shared / "mine" / "scratch"))
    assert not (shared / "mine").exists()


def test_ensure_user_dir_refuses_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SessionFailure, match="symbolic link"):
        files.ensure_user_dir(str(tmp_path / "link" / "x"))


def test_log_line_is_one_escaped_bounded_line():
    line = log_line("cmd x\n2030-01-01 FORGED\r\x1b[2K\\ é" + "y" * 5000, stamp="T")
    assert line.count("\n") == 1 and line.endswith("\n")
    assert line.startswith("T cmd x\\n2030-01-01 FORGED\\r\\x1b[2K\\\\ é")
    assert len(line) < MAX_LINE + 40 and "more)" in line


def test_a_timeout_kills_the_whole_process_group():
    out = run(["sh", "-c", "sleep 60 & echo $!; sleep 60"], timeout=0.5)
    assert out.returncode == TIMED_OUT
    child = int(out.stdout.split()[0])
    end = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < end:
        with open(f"/proc/{child}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.05)
    state = b""
    if os.path.exists(f"/proc/{child}"):
        with open(f"/proc/{child}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    assert state in (b"", b"Z"), "the background sleep outlived its step"


def test_owner_knows_sub_uids(tmp_path):
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbob:165536:65536\n1234:300000:10\n")
    alice = procs.Owner(1000, procs.subuid_ranges("alice", 1000, str(subuid)))
    assert alice.owns_uid(1000) and alice.owns_uid(100000) and alice.owns_uid(165535)
    assert not alice.owns_uid(165536) and not alice.owns_uid(0)
    assert procs.subuid_ranges("x", 1234, str(subuid)) == [(300000, 10)]
    assert procs.Owner(ME + 7, []).owns(os.getpid()) is False  # not its uid: never killed


def test_remove_small_dir_removes_only_the_named_files_of_a_real_directory(tmp_path):
    """The token's directory: its known file and itself go; a link in its place, or anything
    else planted in it, stays (and so does the directory)."""
    uid = os.getuid()
    (tmp_path / "a.auth").mkdir()
    (tmp_path / "a.auth" / "cfg.json").write_text("{}")
    (tmp_path / "b.auth").mkdir()
    (tmp_path / "b.auth" / "cfg.json").write_text("{}")
    (tmp_path / "b.auth" / "planted").write_text("x")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "cfg.json").write_text("{}")
    os.symlink(tmp_path / "target", tmp_path / "c.auth")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert safe_fs.remove_small_dir(fd, "a.auth", ("cfg.json",), uid) == "removed"
        assert safe_fs.remove_small_dir(fd, "b.auth", ("cfg.json",), uid).startswith(
            "left alone")
        assert safe_fs.remove_small_dir(fd, "c.auth", ("cfg.json",), uid).startswith(
            "left alone")
        assert safe_fs.remove_small_dir(fd, "d.auth", ("cfg.json",), uid) == "absent"
        assert safe_fs.remove_small_dir(fd, "b.auth", (), uid + 1) == "left alone: not the user's"
    finally:
        os.close(fd)
    assert not (tmp_path / "a.auth").exists()
    assert sorted(os.listdir(tmp_path / "b.auth")) == ["planted"]
    assert (tmp_path / "target" / "cfg.json").exists()
