"""Pure parts of `doctor`: where a path's filesystem is, and how many sub-ids a user has."""

from __future__ import annotations

import os

import pytest

from sh_jupyter import config
from sh_jupyter.doctor import node
from sh_jupyter.doctor.gpu import world_readable
from sh_jupyter.doctor.node import fs_type, subid_range
from sh_jupyter.doctor.report import ERROR, OK, WARN, Finding, render, worst
from sh_jupyter.slurm.config import parse as slurm_config

CONTROLLERS = "/sys/fs/cgroup/cgroup.controllers"
MOUNTS = """\
/dev/vda / ext4 rw 0 0
nfs1:/home /home nfs4 rw 0 0
/dev/vdb /home/local xfs rw 0 0
tmpfs /run tmpfs rw 0 0
"""


def test_fs_type_picks_the_longest_mount_point():
    assert fs_type("/home/alice/.local/share/containers/storage", MOUNTS) == "nfs4"
    assert fs_type("/home/local/alice", MOUNTS) == "xfs"
    assert fs_type("/home", MOUNTS) == "nfs4"
    assert fs_type("/homework", MOUNTS) == "ext4"
    assert fs_type("/run/user/1000", MOUNTS) == "tmpfs"


def test_subid_range_counts_name_and_uid_entries():
    text = "alice:100000:65536\nbob:165536:65536\n1000:300000:1000\nbad line\n"
    assert subid_range("alice", 1000, text) == 66536
    assert subid_range("bob", 1001, text) == 65536
    assert subid_range("carol", 1002, text) == 0


def test_worst_and_render():
    findings = [Finding("a", OK, "fine"), Finding("b", WARN, "meh", "do x"),
                Finding("c", ERROR, "broken", "do y")]
    assert worst(findings) == 2 and worst(findings[:2]) == 1 and worst([]) == 0
    text = render(findings, as_json=False)
    assert "ERROR c" in text and "fix: do y" in text and "fix: do x" in text
    assert "fix" not in text.splitlines()[0]


def test_world_readable_needs_the_file_and_every_directory_above(tmp_path):
    tmp_path.chmod(0o755)
    spec = tmp_path / "cdi" / "gpu.json"
    spec.parent.mkdir(mode=0o755)
    spec.write_text("{}")
    spec.chmod(0o644)
    above = [str(p) for p in tmp_path.parents]  # pytest's own temp dirs may be private
    assert world_readable(str(spec)) is all(os.stat(p).st_mode & 0o001 for p in above)
    spec.chmod(0o640)
    assert not world_readable(str(spec))
    spec.chmod(0o644)
    spec.parent.chmod(0o750)
    assert not world_readable(str(spec))
    assert not world_readable(str(tmp_path / "missing.json"))


# `scontrol show config` excerpts as printed by Slurm 22.05 (Debian 12) and 24.11 (Debian 13).
SHOW_CONFIG_22_05 = """\
Configuration data as of 2026-11-29T00:10:00
Epilog                  = /usr/libexec/sh-jupyter/epilog
EpilogMsgTime           = 2000 usec
EpilogSlurmctld         = (null)
Prolog                  = /usr/libexec/sh-jupyter/prolog
PrologFlags             = Alloc
SLURM_VERSION           = 22.05.8
"""
SHOW_CONFIG_24_11 = """\
Configuration data as of 2026-11-29T00:10:00
Epilog[0]               = /usr/libexec/sh-jupyter/epilog
EpilogMsgTime           = 2000 usec
Prolog[0]               = /etc/slurm/site-prolog
Prolog[1]               = /usr/libexec/sh-jupyter/prolog
PrologFlags             = Alloc
SLURM_VERSION           = 24.11.5
"""


def test_slurm_config_reads_plain_and_indexed_hook_keys():
    old = slurm_config(SHOW_CONFIG_22_05)
    assert old["Prolog"] == "/usr/libexec/sh-jupyter/prolog"
    assert old["Epilog"] == "/usr/libexec/sh-jupyter/epilog"
    assert old["PrologFlags"] == "Alloc" and old["SLURM_VERSION"] == "22.05.8"
    new = slurm_config(SHOW_CONFIG_24_11)
    assert new["Prolog"] == "/etc/slurm/site-prolog,/usr/libexec/sh-jupyter/prolog"
    assert new["Epilog"] == "/usr/libexec/sh-jupyter/epilog"
    assert new["EpilogMsgTime"] == "2000 usec" and new["SLURM_VERSION"] == "24.11.5"
    assert "Prolog[0]" not in new


@pytest.mark.parametrize(("v2", "setting", "proctrack", "want", "words"), [
    (True, "auto", "proctrack/cgroup", OK, "cgroup v2: a session's container stays in its "
     "Slurm job's cgroup (podman.cgroups: disabled in jobs)"),
    (True, "enabled", "proctrack/cgroup", ERROR, "outside its Slurm job"),
    (False, "auto", "proctrack/cgroup", OK, "cgroup v1 hierarchies (rootless Podman makes none)"),
    (True, "auto", "proctrack/linuxproc", WARN, "ProctrackType is proctrack/linuxproc"),
])
def test_doctor_says_whether_containers_stay_in_their_job(monkeypatch, v2, setting, proctrack,
                                                          want, words):
    real = os.path.exists
    monkeypatch.setattr(node.os.path, "exists", lambda p: v2 if p == CONTROLLERS else real(p))
    doctor = node.Doctor(None)
    doctor.cfg = config.parse(f'[podman]\ncgroups = "{setting}"\n')
    doctor.__dict__["slurm_conf"] = ({"ProctrackType": proctrack}, "")
    doctor.cgroups()
    (finding,) = doctor.findings
    assert (finding.check, finding.status) == ("cgroups", want) and words in finding.message
