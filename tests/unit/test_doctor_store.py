"""doctor's image-store checks without a real store: what counts as unsafe, how the mount
holding the store is found, and that the walk never follows a link."""

from __future__ import annotations

import os
import stat

from sh_jupyter.doctor import store


def _st(mode: int, rdev: int = 0, uid: int = 0) -> os.stat_result:
    # st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size, st_atime, st_mtime, st_ctime
    # (rdev is only reachable by name: the stat_result carries it past the tuple part)
    return os.stat_result((mode, 1, 1, 1, uid, 0, 0, 0, 0, 0), {"st_rdev": rdev})


def test_console_is_a_device_and_a_whiteout_is_not():
    console = _st(stat.S_IFCHR | 0o666, rdev=os.makedev(5, 1))
    whiteout = _st(stat.S_IFCHR | 0o000, rdev=os.makedev(0, 0))
    disk = _st(stat.S_IFBLK | 0o660, rdev=os.makedev(8, 0))
    assert store.classify(console) == ["devices"]
    assert store.classify(disk) == ["devices"]
    assert store.is_whiteout(whiteout) and store.classify(whiteout) == []


def test_setid_world_writable_and_foreign_owner():
    assert store.classify(_st(stat.S_IFREG | 0o4755)) == ["setid"]
    assert store.classify(_st(stat.S_IFREG | 0o2755)) == ["setid"]
    assert store.classify(_st(stat.S_IFDIR | 0o1777)) == ["writable"]
    assert store.classify(_st(stat.S_IFREG | 0o644, uid=1000)) == ["writable"]
    assert store.classify(_st(stat.S_IFDIR | 0o1755)) == []
    assert store.classify(_st(stat.S_IFLNK | 0o777)) == []


def test_mount_of_picks_the_longest_and_the_topmost():
    info = "\n".join([
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
        "90 22 254:0 /var/lib/sh-jupyter/images /var/lib/sh-jupyter/images rw,relatime "
        "shared:1 - ext4 /dev/vda rw",
        "91 90 254:0 /var/lib/sh-jupyter/images /var/lib/sh-jupyter/images "
        "rw,nosuid,nodev,relatime shared:1 - ext4 /dev/vda rw",
        "92 22 0:50 / /var/lib/sh-jupyter/images\\040old rw - tmpfs tmpfs rw",
    ])
    point, options = store.mount_of("/var/lib/sh-jupyter/images", info)
    assert point == "/var/lib/sh-jupyter/images"
    assert options == "rw,nosuid,nodev,relatime"
    assert store.mount_of("/var/lib/sh-jupyter/images old/x", info)[0] == \
        "/var/lib/sh-jupyter/images old"
    assert store.mount_of("/var/lib/other", info) == ("/", "rw,relatime")


def test_the_walk_finds_what_is_unsafe_and_never_follows_links(tmp_path):
    root = tmp_path / "store"
    (root / "overlay" / "abc" / "diff" / "tmp").mkdir(parents=True)
    (root / "overlay" / "abc" / "diff" / "tmp").chmod(0o1777)
    binary = root / "overlay" / "abc" / "diff" / "su"
    binary.write_text("")
    binary.chmod(0o4755)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mount").write_text("")
    (outside / "mount").chmod(0o4755)
    (root / "overlay" / "link").symlink_to(outside)
    found = store.scan(str(root))
    assert found.complete
    assert found.counts["setid"] == 1 and found.setid == [str(binary)]
    assert [p for p in found.writable if p.endswith("/tmp")]
    assert not any("outside" in p or "/link/" in p for p in found.setid + found.writable)


def test_the_walk_stops_at_its_cap(tmp_path):
    for i in range(20):
        (tmp_path / f"d{i}").mkdir()
    found = store.scan(str(tmp_path), max_entries=5)
    assert not found.complete and found.entries == 5
