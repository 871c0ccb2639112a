"""CDI spec files read as Podman's registry reads them, and refused where it would not be safe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from sh_jupyter.gpu import cdi
from sh_jupyter.gpu.cdi import CdiError, SpecNode, parse_spec, read_specs, resolve

KIND = "nvidia.com/gpu"


def spec_text(kind: str = KIND, version: str = "0.5.0", **devices: list[dict]) -> str:
    return json.dumps({"cdiVersion": version, "kind": kind, "devices": [
        {"name": name, "containerEdits": {"deviceNodes": nodes}}
        for name, nodes in devices.items()]})


def write(directory: Path, name: str, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


NVIDIA_YAML = """---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  hooks:
  - args:
    - nvidia-ctk
    - hook
    - update-ldcache
    hookName: createContainer
    path: /usr/bin/nvidia-ctk
  mounts:
  - containerPath: /usr/bin/nvidia-smi
    hostPath: /usr/bin/nvidia-smi
    options:
    - ro
    - nosuid
    - nodev
    - bind
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/dri/card1
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/dri/card1
  name: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/dri/card1
  name: all
kind: nvidia.com/gpu
"""


# --- parsing --------------------------------------------------------------------------------

def test_json_spec_is_read() -> None:
    spec = parse_spec(spec_text(**{"0": [{"path": "/dev/nvidia0"}]}), "/etc/cdi/n.json", 1)
    assert (spec.kind, spec.version, spec.priority) == (KIND, "0.5.0", 1)
    (device,) = spec.devices
    assert (device.name, device.spec, device.priority) == ("0", "/etc/cdi/n.json", 1)
    assert device.nodes == (SpecNode("/dev/nvidia0"),)


def test_nvidia_ctk_style_yaml_spec_is_read() -> None:
    spec = parse_spec(NVIDIA_YAML, "/etc/cdi/nvidia.yaml")
    assert [d.name for d in spec.devices] == ["0", "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
                                              "all"]
    assert [n.path for n in spec.common_nodes] == ["/dev/nvidiactl", "/dev/nvidia-uvm"]
    assert spec.devices[0].nodes == (SpecNode("/dev/nvidia0"), SpecNode("/dev/dri/card1"))


def test_yaml_without_pyyaml_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    with pytest.raises(CdiError) as info:
        parse_spec(NVIDIA_YAML, "/etc/cdi/nvidia.yaml")
    assert "/etc/cdi/nvidia.yaml" in str(info.value) and "PyYAML" in str(info.value)
    assert "--format=json" in str(info.value)


def test_node_fields_are_kept() -> None:
    node = {"path": "/dev/x", "hostPath": "/dev/y", "type": "c", "major": 1, "minor": 3}
    (device,) = parse_spec(spec_text(d=[node]), "/s.json").devices
    assert device.nodes == (SpecNode("/dev/x", "/dev/y", "c", 1, 3),)


@pytest.mark.parametrize(("text", "words"), [
    ("{", "is not valid JSON"),
    ('{"cdiVersion": "0.5.0", "cdiVersion": "0.6.0"}', "duplicate"),
    ("[]", "top level must be a mapping"),
    (spec_text(version="latest"), "cdiVersion 'latest'"),
    (spec_text(kind="nvidia"), "kind 'nvidia' is not VENDOR/CLASS"),
    (spec_text(kind="nvidia.com/gpu/x"), "is not VENDOR/CLASS"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND}), "'devices' must be a list"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND, "devices": [], "extra": 1}),
     "unknown field(s) ['extra']"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND, "devices": [{"nom": "0"}]}),
     "needs a string 'name'"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND, "devices": [{"name": 0}]}),
     "needs a string 'name'"),
    (spec_text(**{"-bad": []}), "not a valid CDI device name"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND,
                 "devices": [{"name": "0"}, {"name": "0"}]}), "defined twice"),
    (spec_text(d=[{"path": "dev/nvidia0"}]), "must be absolute"),
    (spec_text(d=[{"hostPath": "/dev/nvidia0"}]), "needs a string 'path'"),
    (spec_text(d=[{"path": "/dev/x", "major": "195"}]), "major must be a number"),
    (spec_text(d=[{"path": "/dev/x", "type": "x"}]), "type 'x'"),
    (spec_text(d=[{"path": "/dev/x", "colour": "red"}]), "unknown field(s) ['colour']"),
    (json.dumps({"cdiVersion": "0.5.0", "kind": KIND,
                 "devices": [{"name": "0", "containerEdits": {"bogus": []}}]}),
     "unknown containerEdits field(s)"),
])
def test_malformed_spec_names_the_file_and_the_problem(text: str, words: str) -> None:
    with pytest.raises(CdiError) as info:
        parse_spec(text, "/etc/cdi/broken.json")
    msg = str(info.value)
    assert msg.startswith("CDI spec /etc/cdi/broken.json ") and words in msg, msg


def test_malformed_yaml_names_the_file() -> None:
    with pytest.raises(CdiError, match=r"/etc/cdi/x\.yaml is not valid YAML"):
        parse_spec("kind: [unclosed", "/etc/cdi/x.yaml")
    with pytest.raises(CdiError, match="duplicate"):
        parse_spec("kind: a/b\nkind: c/d\n", "/etc/cdi/x.yaml")


# --- name resolution as Podman does it ------------------------------------------------------

def _spec(path: str, priority: int, kind: str = KIND, **devices: list[dict]) -> cdi.Spec:
    return parse_spec(spec_text(kind, **devices), path, priority)


def test_a_later_directory_wins_a_name() -> None:
    etc = _spec("/etc/cdi/a.json", 0, **{"0": [{"path": "/dev/nvidia0"}]})
    run = _spec("/var/run/cdi/a.json", 1, **{"0": [{"path": "/dev/nvidia1"}]})
    (dev,) = resolve([run, etc], KIND)
    assert dev.spec == "/var/run/cdi/a.json"


def test_two_files_in_one_directory_naming_one_device_fail() -> None:
    a = _spec("/etc/cdi/a.json", 0, **{"0": [{"path": "/dev/nvidia0"}]})
    b = _spec("/etc/cdi/b.json", 0, **{"0": [{"path": "/dev/nvidia0"}]})
    with pytest.raises(CdiError, match="Podman cannot resolve it"):
        resolve([a, b], KIND)


def test_other_kinds_are_ignored() -> None:
    other = _spec("/etc/cdi/fpga.json", 0, "example.com/fpga", **{"0": [{"path": "/dev/f0"}]})
    mine = _spec("/etc/cdi/gpu.json", 0, **{"1": [{"path": "/dev/nvidia1"}]})
    assert [d.name for d in resolve([other, mine], KIND)] == ["1"]


def test_an_extra_directory_must_not_redefine_what_podman_reads() -> None:
    etc = _spec("/etc/cdi/a.json", 0, **{"0": [{"path": "/dev/nvidia0"}]})
    extra = _spec("/site/cdi/a.json", 2, **{"0": [{"path": "/dev/nvidia1"}]})
    with pytest.raises(CdiError, match="would inject instead"):
        resolve([etc, extra], KIND)
    same = _spec("/site/cdi/a.json", 2, **{"0": [{"path": "/dev/nvidia0"}]})
    assert resolve([etc, same], KIND)[0].spec == "/site/cdi/a.json"


@pytest.mark.parametrize(("podman", "newest"), [
    ((4, 3, 1), "0.5.0"), ((4, 6, 2), "0.5.0"), ((4, 7, 0), "0.6.0"), ((5, 0, 3), "0.6.0"),
    ((5, 1, 0), "0.7.0"), ((5, 4, 2), "0.8.0"), ((5, 5, 0), "1.0.0"), ((6, 0, 0), "1.0.0"),
    ((4, 0, 0), None),
])
def test_newest_spec_version_each_podman_reads(podman: tuple[int, ...], newest: str) -> None:
    assert cdi.max_spec_version(podman) == newest


def test_only_podman_5_5_reads_other_directories() -> None:
    assert not cdi.podman_reads_extra_dirs((5, 4, 2))
    assert cdi.podman_reads_extra_dirs((5, 5, 0))


# --- files ----------------------------------------------------------------------------------

def test_read_specs_reads_json_and_yaml_only_and_in_priority(tmp_path: Path) -> None:
    first, second = tmp_path / "etc", tmp_path / "run"
    write(first, "b.json", spec_text(**{"0": [{"path": "/dev/nvidia0"}]}))
    write(first, "a.yml", "not read: Podman reads .json and .yaml only")
    write(first, "notes.txt", "not read")
    (first / "sub.json").mkdir()  # subdirectories are skipped
    write(second, "a.json", spec_text(**{"1": [{"path": "/dev/nvidia1"}]}))
    specs = read_specs([str(first), str(second), str(tmp_path / "missing")])
    assert [(os.path.basename(s.path), s.priority) for s in specs] == [("b.json", 0),
                                                                        ("a.json", 1)]


def test_an_unreadable_spec_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "gone.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CdiError) as info:
        read_specs([str(tmp_path)])
    assert f"CDI spec {tmp_path}/gone.json cannot be read" in str(info.value)
    assert "readable by every user" in str(info.value)


def test_a_malformed_spec_anywhere_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "ok.json", spec_text(**{"0": [{"path": "/dev/nvidia0"}]}))
    write(tmp_path, "z.json", '{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [')
    with pytest.raises(CdiError, match=r"z\.json is not valid JSON"):
        read_specs([str(tmp_path)])


def test_non_utf8_spec_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(CdiError, match="not UTF-8"):
        read_specs([str(tmp_path)])


def test_a_spec_directory_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "plain", "x")
    with pytest.raises(CdiError, match="cannot be read"):
        read_specs([path])
