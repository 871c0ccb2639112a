"""Attacks on the shared image store, as a local user with no session at all.

The store must be readable by every user (rootless Podman reads it from inside the user's
namespace, where root's files are only "other"), so its layers' files can be opened on the
host, outside any container. It must therefore hold nothing that works outside a container:
no device node, no setuid/setgid program, no directory a user can write, and it must sit on a
nodev,nosuid mount so that anything missed is inert. `sh-jupyter doctor` checks all of it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import uuid

import pytest

import bed

ATTACKER = bed.USERS[1]
USER_PYTHON = "/usr/bin/python3"  # the attacker's own interpreter, nothing of sh-jupyter's

# Run by the attacker: walks the store (never following links) and tries each attack on what
# it finds; prints one JSON object. Program runs poll /proc until the program shows an
# effective id other than the attacker's, exits, or a deadline passes.
ATTACK = r'''
import json, os, stat, subprocess, sys, time
store = sys.argv[1]
me = (os.getuid(), os.getgid())
out = {"devices": [], "opened": [], "setid": [], "privileged": [], "created": [], "dirs": 0}

def effective_ids(pid):
    uid = gid = None
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Uid:"):
                uid = int(line.split()[2])
            elif line.startswith("Gid:"):
                gid = int(line.split()[2])
    return uid, gid

def run_privileged(path):
    r, w = os.pipe()  # stdin held open: password prompts wait instead of failing at once
    try:
        proc = subprocess.Popen([path], stdin=r, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(r); os.close(w)
        return None
    os.close(r)
    seen = None
    end = time.monotonic() + 3
    try:
        while proc.poll() is None and time.monotonic() < end:
            try:
                ids = effective_ids(proc.pid)
            except (OSError, ValueError):
                break
            if ids[0] is not None and ids != me:
                seen = ids
                break
            time.sleep(0.01)
    finally:
        os.close(w)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return seen

for top, dirs, files in os.walk(store):
    out["dirs"] += 1
    probe = os.path.join(top, f".shj-attack-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError:
        pass
    else:
        out["created"].append(top)
        os.unlink(probe)
    for name in files + dirs:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            out["devices"].append([path, os.major(st.st_rdev), os.minor(st.st_rdev)])
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError:
                pass
            else:
                os.close(fd)
                out["opened"].append(path)
        elif stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            out["setid"].append(path)
            if st.st_mode & 0o001 and len(out["privileged"]) < 5:
                ids = run_privileged(path)
                if ids is not None:
                    out["privileged"].append([path, *ids])
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def found(testbed) -> dict:
    """The attacker's walk of the real store, once for the tests below."""
    out = bed.as_user(ATTACKER, [USER_PYTHON, "-c", ATTACK, bed.STORE], timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["dirs"] > 100, f"the attacker could not walk the store: {result['dirs']} dirs"
    return result


def _mount_flags(path: str) -> tuple[bool, bool]:
    flags = os.statvfs(path).f_flag
    return bool(flags & os.ST_NODEV), bool(flags & os.ST_NOSUID)


def test_no_device_node_of_the_store_opens_for_a_user(found):
    """As shjuser2, open every device node in the store O_RDWR (the store's copy of
    dev/console is char 5:1, mode 0666, while the host's own /dev/console is root's only):
    none opens, and none exists but overlay whiteouts (char 0:0, no driver behind them)."""
    assert found["opened"] == [], f"{ATTACKER} opened store devices: {found['opened'][:5]}"
    real = [d for d in found["devices"] if (d[1], d[2]) != (0, 0)]
    assert real == [], f"device nodes in the store: {real[:5]}"


def test_no_setuid_program_of_the_store_runs_for_a_user(found):
    """As shjuser2, find the store's setuid/setgid programs (su, passwd, mount, chsh, ...)
    and run them on the host: none exists, so none runs with root's (or shadow's) rights."""
    assert found["privileged"] == [], \
        f"{ATTACKER} ran store programs with another effective uid/gid: {found['privileged']}"
    assert found["setid"] == [], f"setuid/setgid files in the store: {found['setid'][:5]}"


def test_no_store_directory_takes_a_users_file(found):
    """As shjuser2, create a file in every directory of the store (the base's tmp, var/tmp
    and run/lock were 1777: free space on root's disk, and a place to plant things root
    later walks): no directory takes one."""
    assert found["created"] == [], f"{ATTACKER} created files in: {found['created'][:5]}"


def test_a_device_or_setuid_program_planted_in_the_store_is_inert(testbed):
    """Should a device node or a setuid-root program ever reach the store (a foreign image,
    a missed strip), as shjuser2 open the device and run the program: the store's mount is
    nodev,nosuid, so the device does not open and the program runs with shjuser2's uid."""
    nodev, nosuid = _mount_flags(bed.STORE)
    plant = os.path.join(bed.STORE, f".shj-security-{uuid.uuid4().hex[:8]}")
    os.mkdir(plant, 0o755)
    try:
        os.mknod(os.path.join(plant, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(os.path.join(plant, "null"), 0o666)
        shutil.copy(shutil.which("id"), os.path.join(plant, "id"))
        os.chmod(os.path.join(plant, "id"), 0o4755)
        ran = bed.as_user(ATTACKER, [os.path.join(plant, "id"), "-u"])
        opened = bed.as_user(ATTACKER, [USER_PYTHON, "-c",
                                        "import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR))",
                                        os.path.join(plant, "null")])
    finally:
        shutil.rmtree(plant)
    attacker_uid = str(pwd.getpwnam(ATTACKER).pw_uid)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == attacker_uid, \
        f"a setuid-root program in the store ran as uid {ran.stdout.strip()} (nosuid={nosuid})"
    assert opened.returncode != 0, f"a device node in the store opened (nodev={nodev})"
    assert (nodev, nosuid) == (True, True), f"store mount: nodev={nodev}, nosuid={nosuid}"


def _doctor(cfg: str, user: str | None = None) -> dict[str, dict]:
    argv = [bed.SH, "--config", cfg, "doctor", "--json"]
    if user is None:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300,
                             cwd="/tmp")
    else:
        out = bed.as_user(user, argv, timeout=300)
    assert out.stdout.strip().startswith("{"), f"doctor printed no JSON: {out.stderr[-2000:]}"
    return {f["check"]: f for f in json.loads(out.stdout)["findings"]}


STORE_CHECKS = ("store-devices", "store-setid", "store-writable", "store-mount")


def test_doctor_passes_the_stripped_store_for_any_user(testbed):
    """As shjuser2 (who can read the whole store, as rootless Podman must), doctor walks the
    real store and finds no device, setuid/setgid or user-writable entry, and a nodev,nosuid
    mount."""
    found = _doctor(bed.write_config(""), ATTACKER)
    for check in STORE_CHECKS:
        assert check in found, f"doctor has no {check} check: {sorted(found)}"
        assert found[check]["status"] == "ok", found[check]
    assert "store-walk" not in found, found.get("store-walk")


def test_doctor_flags_a_store_with_a_console_and_a_setuid_program(testbed):
    """doctor, pointed at a store where root planted a console device, a setuid program and a
    world-writable directory, reports an error for each (and for the mount when it lacks
    nodev or nosuid), naming the paths and how to fix them."""
    root = bed.shared_tempdir()
    store = os.path.join(root, "store")
    diff = os.path.join(store, "overlay", "0123abcd", "diff")
    for sub in ("dev", "usr/bin", "tmp"):
        os.makedirs(os.path.join(diff, sub), 0o755)
    os.mknod(os.path.join(diff, "dev/console"), 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(os.path.join(diff, "dev/whiteout"), stat.S_IFCHR, os.makedev(0, 0))
    with open(os.path.join(diff, "usr/bin/su"), "w", encoding="utf-8"):
        pass
    os.chmod(os.path.join(diff, "usr/bin/su"), 0o4755)
    os.chmod(os.path.join(diff, "tmp"), 0o1777)
    found = _doctor(bed.write_config(f'[image]\nstore = "{store}"\n'))
    for check, path in (("store-devices", "dev/console"), ("store-setid", "usr/bin/su"),
                        ("store-writable", "/tmp")):
        assert found[check]["status"] == "error", found[check]
        assert os.path.join(diff, path).rstrip("/") in found[check]["message"] \
            or path in found[check]["message"], found[check]
        assert found[check]["fix"], found[check]
    assert "whiteout" not in found["store-devices"]["message"], found["store-devices"]
    assert "1 device" in found["store-devices"]["message"], found["store-devices"]
    nodev, nosuid = _mount_flags(store)
    want = "ok" if nodev and nosuid else "error"
    assert found["store-mount"]["status"] == want, found["store-mount"]
