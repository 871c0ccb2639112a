"""The GPU shell's own decisions, on this machine's real device nodes (/dev/null and friends
stand in for GPUs: only their identity matters here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sh_jupyter import config
from sh_jupyter.gpu import host
from sh_jupyter.gpu.cdi import CdiError, SpecNode
from sh_jupyter.gpu.mapping import GpuMismatch, NodeId

NULL, ZERO = NodeId("c", 1, 3), NodeId("c", 1, 5)
KIND = "unit.example/gpu"


@pytest.fixture(autouse=True)
def _no_node_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Podman's directories stand in empty: this machine's own /etc/cdi is not the test's."""
    monkeypatch.setattr(host.cdi, "DEFAULT_DIRS", (str(tmp_path / "etc-cdi"),
                                                   str(tmp_path / "run-cdi")))


def test_node_identity_of_real_nodes_and_of_what_is_not_one(tmp_path: Path) -> None:
    assert host.node_identity("/dev/null") == NULL
    assert host.node_identity(str(tmp_path)) is None
    assert host.node_identity(str(tmp_path / "missing")) is None


def test_host_node_is_the_node_at_the_container_path() -> None:
    node = host.host_node(SpecNode("/dev/null"))
    assert (node.identity, node.problem) == (NULL, "")
    assert host.host_node(SpecNode("/dev/null", "/dev/null", "c", 1, 3)).problem == ""


def test_a_host_path_naming_another_node_is_refused() -> None:
    # Rootless runc/crun bind /dev/null (the path), not /dev/zero (the hostPath).
    node = host.host_node(SpecNode("/dev/null", "/dev/zero"))
    assert node.identity == NULL and "rootless Podman bind-mounts the host's /dev/null" \
        in node.problem


def test_a_spec_that_misstates_the_node_is_refused() -> None:
    assert "the spec says c 1:5" in host.host_node(SpecNode("/dev/null", "", "c", 1, 5)).problem
    assert "the spec says b" in host.host_node(SpecNode("/dev/null", "", "b")).problem


def test_a_missing_node_is_refused(tmp_path: Path) -> None:
    node = host.host_node(SpecNode(str(tmp_path / "nvidia9")))
    assert node.identity is None and "no device node" in node.problem


def test_spec_dirs_are_podmans_first_then_the_configured_ones() -> None:
    cfg = config.parse('[gpu]\ncdi_spec_dirs = ["/site/cdi", "/etc/cdi/", "/site/cdi"]\n')
    etc, run = host.cdi.DEFAULT_DIRS
    assert host.spec_dirs(cfg) == [etc, run, "/site/cdi", "/etc/cdi"]


def test_allocated_count() -> None:
    assert host.allocated_count({"SLURM_JOB_GPUS": "1,3"}) == 2
    assert host.allocated_count({}) == 0
    assert host.allocated_count({"SLURM_JOB_GPUS": "bogus"}) == 0
    # An srun step (observed: Slurm 22.05 sets no SLURM_JOB_GPUS there) says SLURM_STEP_GPUS.
    assert host.allocated_count({"SLURM_STEP_GPUS": "2", "CUDA_VISIBLE_DEVICES": "0"}) == 1


def test_a_job_without_gpus_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_io(*_a, **_k):
        raise AssertionError("no spec may be read for a job without GPUs")
    monkeypatch.setattr(host.cdi, "read_specs", no_io)
    out = host.for_job(config.default(), {"CUDA_VISIBLE_DEVICES": "0"})
    assert out.names == () and out.environment == {"NVIDIA_VISIBLE_DEVICES": "void"}


def test_more_gpus_than_the_site_allows_fails_before_reading_specs() -> None:
    with pytest.raises(GpuMismatch, match=r"at most 0 \(limits.max_gpus\)"):
        host.for_job(config.default(), {"SLURM_JOB_GPUS": "0"})


def _cfg(tmp_path: Path, kind: str = KIND) -> config.Config:
    return config.parse(f'[limits]\nmax_gpus = 2\n[gpu]\ncdi_kind = "{kind}"\n'
                        f'cdi_spec_dirs = ["{tmp_path}"]\n')


def _write(tmp_path: Path, spec: dict) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")


def test_a_spec_level_node_that_is_a_devices_own_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"cdiVersion": "0.5.0", "kind": KIND,
                      "containerEdits": {"deviceNodes": [{"path": "/dev/zero"}]},
                      "devices": [{"name": "a", "containerEdits": {
                          "deviceNodes": [{"path": "/dev/zero"}]}}]})
    with pytest.raises(CdiError, match="every GPU session would get it"):
        host.node_devices(_cfg(tmp_path), host.spec_dirs(_cfg(tmp_path)))


def test_a_newer_spec_than_podman_reads_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "podman_version", lambda: (4, 3, 1))
    _write(tmp_path, {"cdiVersion": "0.6.0", "kind": KIND, "devices": []})
    with pytest.raises(CdiError, match=r"version 0\.6\.0, but Podman 4\.3\.1 reads CDI specs "
                                       r"up to 0\.5\.0"):
        host.node_devices(_cfg(tmp_path), [str(tmp_path)])


def test_a_device_only_in_an_extra_directory_is_unusable_before_podman_5_5(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"cdiVersion": "0.5.0", "kind": KIND, "devices": [
        {"name": "a", "containerEdits": {"deviceNodes": [{"path": "/dev/null"}]}}]})
    cfg = _cfg(tmp_path)
    for version, usable in (((4, 3, 1), False), ((5, 5, 0), True)):
        monkeypatch.setattr(host, "podman_version", lambda v=version: v)
        devices = host.node_devices(cfg, host.spec_dirs(cfg))
        assert [d.spec for d in devices] == [str(tmp_path / "spec.json")]
        assert (devices[0].problem() == "") is usable, devices[0].problem()


def test_for_job_outside_a_confined_job_fails_closed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing confines this test process: two openable "GPUs" for a 1-GPU job, or two for a
    # 2-GPU job with no sign of ConstrainDevices, must both fail rather than guess.
    monkeypatch.setattr(host, "podman_version", lambda: (5, 5, 0))
    _write(tmp_path, {"cdiVersion": "0.5.0", "kind": KIND, "devices": [
        {"name": "a", "containerEdits": {"deviceNodes": [{"path": "/dev/null"}]}},
        {"name": "b", "containerEdits": {"deviceNodes": [{"path": "/dev/zero"}]}}]})
    with pytest.raises(GpuMismatch, match="this job may open the devices of 2 GPUs"):
        host.for_job(_cfg(tmp_path), {"SLURM_JOB_GPUS": "0"})
    assert host.confined() is not True
    with pytest.raises(GpuMismatch, match="nothing shows that Slurm confines this job"):
        host.for_job(_cfg(tmp_path), {"SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"})
    monkeypatch.setattr(host, "confined", lambda: True)  # as inside a ConstrainDevices job
    out = host.for_job(_cfg(tmp_path), {"SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert out.names == (f"{KIND}=a", f"{KIND}=b")
    assert out.environment["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_denied_is_what_cannot_be_opened_for_permission(tmp_path: Path) -> None:
    assert host.denied({NULL: "/dev/null"}) == frozenset()
    # A path that is gone is not a permission refusal (the node check reports it instead).
    assert host.denied({ZERO: str(tmp_path / "gone")}) == frozenset()


def test_device_rules_reads_this_process_cgroup() -> None:
    rules = host.device_rules()  # outside a constrained cgroup: allow-all, i.e. no list
    assert rules is None or all(len(r.split()) == 3 for r in rules)
    assert os.path.exists("/proc/self/cgroup")
