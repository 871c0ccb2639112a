"""The site config: seed defaults, strict validation, file lookup, reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sh_jupyter import config
from sh_jupyter.config import DEFAULT_MOUNTS, MOUNT_SCHEMA, SCHEMA, Mount
from sh_jupyter.errors import UsageError

SRC = "/etc/site/sh-jupyter.toml"
REPO = Path(__file__).resolve().parents[2]


def usage_error(text: str, field: str, shown_value: str) -> UsageError:
    """Parse `text`, expect a UsageError naming the file, the key and the value."""
    with pytest.raises(UsageError) as info:
        config.parse(text, SRC)
    err = info.value
    message = str(err)
    assert err.field == field
    assert "\n" not in message
    assert SRC in message
    assert field in message
    assert shown_value in message, message
    return err


# --- defaults ------------------------------------------------------------------------------

def test_defaults_match_the_seed() -> None:
    cfg = config.default()
    assert cfg["session.job_name"] == "jupyter_app"
    assert cfg["session.container_prefix"] == "epcc-ces-jupyter"
    assert cfg["session.connection_timeout"] == 180
    assert cfg["session.max_walltime"] == 21600
    assert cfg["session.default_walltime"] == 21600
    assert cfg["image.preferred_dir"] == "/mnt/jupyter_host"
    assert cfg["image.root_dir"] == "/"


def test_default_mounts_match_the_seed() -> None:
    by_target = {m.target: m for m in config.default().mounts}
    assert sorted(by_target) == ["/mnt/jupyter_host", "/safe_data", "/safe_outputs", "/scratch"]
    assert by_target["/safe_data"].source == "/safe_data"
    assert by_target["/safe_outputs"].source == "/safe_outputs"
    scratch = by_target["/scratch"]
    assert scratch.ephemeral is True
    assert "{session_id}" in scratch.source
    assert scratch.create is True
    persist = by_target["/mnt/jupyter_host"]
    assert persist.source == "{home}/.local/share/ondemand/apps/jupyter_app"
    assert persist.create is True
    assert persist.ephemeral is False
    assert persist.read_only is False


def test_empty_text_equals_default_and_records_path() -> None:
    cfg = config.parse("", SRC)
    assert cfg.values == config.default().values
    assert cfg.mounts == DEFAULT_MOUNTS
    assert cfg.path == SRC


def test_configured_lists_do_not_change_defaults() -> None:
    a = config.parse('[image]\ncommand = ["a"]\n')
    assert a["image.command"] == ["a"]
    assert config.default()["image.command"] == ["jupyter-lab"]


@pytest.mark.parametrize("key", ["image.command", "proxy.variables", "podman.cap_add",
                                 "podman.devices"])
def test_default_lists_are_copies_not_the_schema_objects(key: str) -> None:
    # Config.values is a plain dict of plain lists: if a default list is the schema's own object,
    # one caller appending to it changes the default for every later config in the process.
    # (Checked by identity so this test cannot itself corrupt the schema for other tests.)
    section, name = key.split(".")
    cfg = config.default()
    assert cfg[key] == SCHEMA[section][name].default
    assert cfg[key] is not SCHEMA[section][name].default


def test_shipped_example_config_equals_defaults() -> None:
    path = REPO / "packaging" / "config" / "config.toml"
    cfg = config.parse(path.read_text(encoding="utf-8"), str(path))
    assert cfg.values == config.default().values
    assert cfg.mounts == DEFAULT_MOUNTS


def test_every_default_passes_its_own_check() -> None:
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            if key.check is not None:
                assert key.check(key.default) is None, f"{section}.{name}"


# --- values that are accepted --------------------------------------------------------------

def test_values_are_read() -> None:
    cfg = config.parse(
        "[session]\n"
        "connection_timeout = 300\n"
        'max_walltime = "12:00:00"\n'
        'default_walltime = "1:00:00"\n'
        "idle_timeout = 3600\n"
        "[network]\n"
        "port_min = 30000\nport_max = 30010\n"
        "[podman]\n"
        'network = "pasta"\n'
        'cap_add = ["cap_net_raw"]\n'
        "[image]\n"
        'base_url = "/node/x/8888/"\n',
        SRC,
    )
    assert cfg["session.connection_timeout"] == 300
    assert cfg["session.max_walltime"] == 12 * 3600
    assert cfg["session.default_walltime"] == 3600
    assert cfg["session.idle_timeout"] == 3600
    assert (cfg["network.port_min"], cfg["network.port_max"]) == (30000, 30010)
    assert cfg["podman.network"] == "pasta"
    assert cfg["podman.cap_add"] == ["cap_net_raw"]
    assert cfg["image.base_url"] == "/node/x/8888/"
    # untouched keys keep their defaults
    assert cfg["session.job_name"] == "jupyter_app"


def test_walltime_accepts_integer_seconds() -> None:
    cfg = config.parse("[session]\nmax_walltime = 7200\ndefault_walltime = 60\n")
    assert cfg["session.max_walltime"] == 7200
    assert cfg["session.default_walltime"] == 60


def test_port_min_equal_to_port_max_is_allowed() -> None:
    cfg = config.parse("[network]\nport_min = 25000\nport_max = 25000\n")
    assert cfg["network.port_min"] == cfg["network.port_max"] == 25000


def test_range_bounds_are_inclusive() -> None:
    cfg = config.parse("[session]\nconnection_timeout = 10\nstop_timeout = 60\n")
    assert cfg["session.connection_timeout"] == 10
    assert cfg["session.stop_timeout"] == 60


def test_empty_optional_templates_are_allowed() -> None:
    cfg = config.parse('[podman]\ngraphroot = ""\nrunroot = "/var/tmp/{user}/run"\n')
    assert cfg["podman.graphroot"] == ""
    assert cfg["podman.runroot"] == "/var/tmp/{user}/run"


# --- unknown sections and keys -------------------------------------------------------------

def test_unknown_section() -> None:
    err = usage_error("[sesion]\njob_name = 'x'\n", "sesion", "'...'")
    assert "unknown section" in err.allowed
    assert "session" in err.allowed and "mounts" in err.allowed


def test_unknown_key() -> None:
    err = usage_error("[session]\njob_nam = 'x'\n", "session.job_nam", "'x'")
    assert "unknown key" in err.allowed
    assert "job_name" in err.allowed


def test_unknown_key_in_mount() -> None:
    err = usage_error('[[mounts]]\nsource = "/a"\ntarget = "/a"\nreadonly = true\n',
                      "mounts[0].readonly", "True")
    assert "read_only" in err.allowed


def test_nested_table_inside_section_is_an_unknown_key() -> None:
    usage_error("[session.extra]\nx = 1\n", "session.extra", "{'x': 1}")


def test_section_that_is_not_a_table() -> None:
    usage_error("session = 5\n", "session", "5")


def test_mounts_that_is_not_an_array_of_tables() -> None:
    usage_error('mounts = "x"\n', "mounts", "'x'")


def test_mount_entry_that_is_not_a_table() -> None:
    usage_error("mounts = [1]\n", "mounts[0]", "1")


# --- wrong types ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "field", "shown"),
    [
        ('[session]\nconnection_timeout = "180"\n', "session.connection_timeout", "'180'"),
        ("[session]\nconnection_timeout = true\n", "session.connection_timeout", "True"),
        ("[network]\nport_min = false\n", "network.port_min", "False"),
        ("[session]\nconnection_timeout = 180.0\n", "session.connection_timeout", "180.0"),
        ("[session]\njob_name = 1\n", "session.job_name", "1"),
        ('[image]\ncommand = "jupyter lab"\n', "image.command", "'jupyter lab'"),
        ('[image]\ncommand = ["jupyter", 1]\n', "image.command", "['jupyter', 1]"),
        ('[[mounts]]\nsource = "/a"\ntarget = "/a"\nread_only = "yes"\n',
         "mounts[0].read_only", "'yes'"),
        ('[[mounts]]\nsource = "/a"\ntarget = "/a"\ncreate = 1\n', "mounts[0].create", "1"),
    ],
)
def test_wrong_type(text: str, field: str, shown: str) -> None:
    err = usage_error(text, field, shown)
    assert "type" in err.allowed


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("true", "True"), ("0", "0"), ("-5", "-5"), ('"six hours"', "'six hours'"),
     ('"0"', "'0'"), ("6.5", "6.5")],
)
def test_bad_walltime(raw: str, shown: str) -> None:
    err = usage_error(f"[session]\nmax_walltime = {raw}\n", "session.max_walltime", shown)
    assert "Slurm time" in err.allowed


# --- out of range and bad values -----------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "field", "shown"),
    [
        ("[session]\nconnection_timeout = 9\n", "session.connection_timeout", "9"),
        ("[session]\nconnection_timeout = 3601\n", "session.connection_timeout", "3601"),
        ("[session]\nidle_timeout = -1\n", "session.idle_timeout", "-1"),
        ("[session]\nstop_timeout = 0\n", "session.stop_timeout", "0"),
        ("[network]\nport_min = 80\n", "network.port_min", "80"),
        ("[network]\nport_max = 65536\n", "network.port_max", "65536"),
        ("[network]\nport_attempts = 0\n", "network.port_attempts", "0"),
        ("[limits]\nmax_cpus = 0\n", "limits.max_cpus", "0"),
        ("[podman]\npids_limit = 63\n", "podman.pids_limit", "63"),
    ],
)
def test_out_of_range(text: str, field: str, shown: str) -> None:
    err = usage_error(text, field, shown)
    assert "between" in err.allowed


@pytest.mark.parametrize(
    ("text", "field", "shown", "allowed_word"),
    [
        ('[podman]\nnetwork = "bridge"\n', "podman.network", "'bridge'", "slirp4netns"),
        ('[podman]\nnetwork = "host"\n', "podman.network", "'host'", "pasta"),
        ('[podman]\nlimits = "sometimes"\n', "podman.limits", "'sometimes'", "auto"),
        ('[podman]\ncgroups = "split"\n', "podman.cgroups", "'split'", "disabled"),
        ('[podman]\ncap_add = ["SYS_ADMIN"]\n', "podman.cap_add", "['SYS_ADMIN']", "SYS_ADMIN"),
        ('[session]\njob_name = ""\n', "session.job_name", "''", "letters"),
        ('[session]\njob_name = "jupyter app"\n', "session.job_name", "'jupyter app'", "letters"),
        ('[session]\ncontainer_prefix = "-x"\n', "session.container_prefix", "'-x'", "letters"),
        ('[session]\ncontainer_prefix = "a/b"\n', "session.container_prefix", "'a/b'",
         "letters"),
        ('[image]\nbase_url = "/jupyter"\n', "image.base_url", "'/jupyter'", "'/'"),
        ('[image]\nbase_url = "jupyter/"\n', "image.base_url", "'jupyter/'", "'/'"),
        ('[image]\ncommand = []\n', "image.command", "[]", "non-empty"),
        ('[image]\ncommand = ["jupyter", ""]\n', "image.command", "['jupyter', '']",
         "non-empty"),
        ('[image]\nstore = "images"\n', "image.store", "'images'", "absolute"),
        ('[image]\nroot_dir = "/a/../etc"\n', "image.root_dir", "'/a/../etc'", ".."),
    ],
)
def test_bad_value(text: str, field: str, shown: str, allowed_word: str) -> None:
    err = usage_error(text, field, shown)
    assert allowed_word in err.allowed


def test_capabilities_are_case_and_prefix_insensitive() -> None:
    cfg = config.parse('[podman]\ncap_add = ["CAP_NET_BIND_SERVICE", "chown"]\n')
    assert cfg["podman.cap_add"] == ["CAP_NET_BIND_SERVICE", "chown"]


# --- path templates ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "field", "shown"),
    [
        ('[session]\nsessions_dir = "{home}/{project}"\n', "session.sessions_dir",
         "'{home}/{project}'"),
        ('[podman]\nsocket_dir = "/run/user/{uid:05d}"\n', "podman.socket_dir",
         "'/run/user/{uid:05d}'"),
        ('[podman]\ngraphroot = "/var/tmp/{user!r}"\n', "podman.graphroot",
         "'/var/tmp/{user!r}'"),
        ('[podman]\nrunroot = "/var/tmp/{}"\n', "podman.runroot", "'/var/tmp/{}'"),
        ('[podman]\nrunroot = "/var/tmp/{user"\n', "podman.runroot", "'/var/tmp/{user'"),
        ('[session]\nsessions_dir = "relative/{user}"\n', "session.sessions_dir",
         "'relative/{user}'"),
        ('[session]\nsessions_dir = "{home}/../other"\n', "session.sessions_dir",
         "'{home}/../other'"),
        ('[[mounts]]\nsource = "/data/{project}"\ntarget = "/data"\n', "mounts[0].source",
         "'/data/{project}'"),
        ('[[mounts]]\nsource = "/data/../etc"\ntarget = "/data"\n', "mounts[0].source",
         "'/data/../etc'"),
        ('[[mounts]]\nsource = "/data"\ntarget = "/data/../x"\n', "mounts[0].target",
         "'/data/../x'"),
        ('[[mounts]]\nsource = "/data"\ntarget = "data"\n', "mounts[0].target", "'data'"),
    ],
)
def test_bad_path_template(text: str, field: str, shown: str) -> None:
    usage_error(text, field, shown)


def test_sessions_dir_may_not_be_empty() -> None:
    # An empty sessions_dir expands to "." (the current directory): session directories would be
    # created relative to wherever the command happens to run.
    usage_error('[session]\nsessions_dir = ""\n', "session.sessions_dir", "''")


def test_socket_dir_may_not_be_empty() -> None:
    # Same for the Podman socket directory: "" expands to ".", a relative socket path.
    usage_error('[podman]\nsocket_dir = ""\n', "podman.socket_dir", "''")


# --- mounts --------------------------------------------------------------------------------

def test_mounts_replace_the_defaults() -> None:
    cfg = config.parse(
        '[[mounts]]\nsource = "/srv/data/{user}"\ntarget = "/data"\nread_only = true\n'
        "required = false\n",
        SRC,
    )
    assert cfg.mounts == (Mount("/srv/data/{user}", "/data", read_only=True, create=False,
                                required=False, ephemeral=False),)


def test_mount_defaults() -> None:
    (m,) = config.parse('[[mounts]]\nsource = "/a"\ntarget = "/b"\n').mounts
    expected = {name: key.default for name, key in MOUNT_SCHEMA.items()
                if name not in ("source", "target")}
    actual = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)
              if f.name not in ("source", "target")}
    assert actual == expected == {"read_only": False, "create": False, "required": True,
                                  "ephemeral": False}


def test_empty_mounts_array_means_no_mounts() -> None:
    assert config.parse("mounts = []\n").mounts == ()


@pytest.mark.parametrize("missing", ["source", "target"])
def test_mount_needs_source_and_target(missing: str) -> None:
    other = "target" if missing == "source" else "source"
    err = usage_error(f'[[mounts]]\n{other} = "/a"\n', f"mounts[0].{missing}", "None")
    assert "required" in err.allowed


def test_mount_index_is_reported() -> None:
    usage_error('[[mounts]]\nsource = "/a"\ntarget = "/a"\n'
                '[[mounts]]\nsource = "/b"\ntarget = "/proc/x"\n',
                "mounts[1].target", "'/proc/x'")


@pytest.mark.parametrize("source", ["/var/tmp/{user}/scratch", "{home}/scratch"])
def test_ephemeral_mount_needs_a_session_or_job_placeholder(source: str) -> None:
    err = usage_error(f'[[mounts]]\nsource = "{source}"\ntarget = "/scratch"\n'
                      "ephemeral = true\n", "mounts[0].source", repr(source))
    assert "{session_id}" in err.allowed


@pytest.mark.parametrize("source", ["/var/tmp/{session_id}", "/var/tmp/{user}/{job_id}"])
def test_ephemeral_mount_with_placeholder_is_accepted(source: str) -> None:
    (m,) = config.parse(f'[[mounts]]\nsource = "{source}"\ntarget = "/scratch"\n'
                        "ephemeral = true\n").mounts
    assert m.ephemeral is True
    assert m.source == source


@pytest.mark.parametrize(
    "target",
    ["/", "/etc", "/etc/x", "/proc", "/proc/", "/sys/fs", "/dev", "/usr/local", "/run",
     "/tmp", "/root", "/var/tmp/x", "/opt/app", "/lib64", "/bin", "/./etc", "/etc//x"],
)
def test_reserved_mount_target(target: str) -> None:
    err = usage_error(f'[[mounts]]\nsource = "/a"\ntarget = "{target}"\n', "mounts[0].target",
                      repr(target))
    assert "system directory" in err.allowed


@pytest.mark.parametrize("target", ["//etc", "//proc/x", "//"])
def test_reserved_target_cannot_be_hidden_behind_double_slash(target: str) -> None:
    # POSIX lets normpath keep exactly two leading slashes; Podman and the kernel treat "//etc"
    # as "/etc", so it must be rejected like "/etc".
    usage_error(f'[[mounts]]\nsource = "/a"\ntarget = "{target}"\n', "mounts[0].target",
                repr(target))


@pytest.mark.parametrize("target", ["/etcetera", "/data/etc", "/mnt/proc", "/variables"])
def test_names_that_only_resemble_reserved_targets_are_allowed(target: str) -> None:
    (m,) = config.parse(f'[[mounts]]\nsource = "/a"\ntarget = "{target}"\n').mounts
    assert m.target == target


@pytest.mark.parametrize(("first", "second"), [("/data", "/data"), ("/data", "/data/"),
                                               ("/data", "/./data")])
def test_duplicate_mount_targets(first: str, second: str) -> None:
    err = usage_error(f'[[mounts]]\nsource = "/a"\ntarget = "{first}"\n'
                      f'[[mounts]]\nsource = "/b"\ntarget = "{second}"\n',
                      "mounts.target", "'/data'")
    assert "only once" in err.allowed


def test_duplicate_target_cannot_be_hidden_behind_double_slash() -> None:
    usage_error('[[mounts]]\nsource = "/a"\ntarget = "/data"\n'
                '[[mounts]]\nsource = "/b"\ntarget = "//data"\n',
                "mounts.target", "data")


# --- cross checks --------------------------------------------------------------------------

def test_port_min_above_port_max() -> None:
    err = usage_error("[network]\nport_min = 30000\nport_max = 29000\n", "network.port_min",
                      "30000")
    assert "29000" in err.allowed


def test_port_min_above_default_port_max() -> None:
    err = usage_error("[network]\nport_min = 30000\n", "network.port_min", "30000")
    assert "29999" in err.allowed


def test_default_walltime_above_max_walltime() -> None:
    err = usage_error('[session]\nmax_walltime = "2:00:00"\ndefault_walltime = "3:00:00"\n',
                      "session.default_walltime", "'03:00:00'")
    assert "02:00:00" in err.allowed


@pytest.mark.parametrize("what", ["cpus", "memory_gib"])
def test_default_resources_above_max(what: str) -> None:
    err = usage_error(f"[limits]\nmax_{what} = 2\ndefault_{what} = 3\n",
                      f"limits.default_{what}", "3")
    assert f"limits.max_{what}" in err.allowed


# --- invalid TOML --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[session\n", "job_name = \n", "a = 1\na = 2\n",
                                  '[session]\njob_name = "unterminated\n'])
def test_invalid_toml(text: str) -> None:
    with pytest.raises(UsageError) as info:
        config.parse(text, SRC)
    message = str(info.value)
    assert info.value.field == "file"
    assert repr(SRC) in message
    assert "not valid TOML" in message
    assert "line" in message
    assert "\n" not in message


# --- finding and loading the file ----------------------------------------------------------

def test_config_path_precedence() -> None:
    env = {config.ENV_VAR: "/from/env.toml"}
    assert config.config_path("/from/flag.toml", env) == "/from/flag.toml"
    assert config.config_path(None, env) == "/from/env.toml"
    assert config.config_path(None, {}) == config.DEFAULT_PATH
    assert config.config_path("", {config.ENV_VAR: ""}) == config.DEFAULT_PATH


def test_load_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[session]\nconnection_timeout = 240\n", encoding="utf-8")
    cfg = config.load(str(path), environ={})
    assert cfg["session.connection_timeout"] == 240
    assert cfg.path == str(path)


def test_load_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[network]\nport_attempts = 9\n", encoding="utf-8")
    cfg = config.load(None, environ={config.ENV_VAR: str(path)})
    assert cfg["network.port_attempts"] == 9
    assert cfg.path == str(path)


def test_load_missing_explicit_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(UsageError) as info:
        config.load(missing, environ={})
    assert info.value.field == "config file"
    assert repr(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_load_missing_path_from_environment(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(UsageError) as info:
        config.load(None, environ={config.ENV_VAR: missing})
    assert repr(missing) in str(info.value)


def test_load_missing_default_path_gives_defaults(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load(None, environ={})
    assert cfg.values == config.default().values
    assert cfg.mounts == DEFAULT_MOUNTS


def test_load_present_default_path_is_read(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[session]\nidle_timeout = 600\n", encoding="utf-8")
    monkeypatch.setattr(config, "DEFAULT_PATH", str(path))
    cfg = config.load(None, environ={})
    assert cfg["session.idle_timeout"] == 600
    assert cfg.path == str(path)


def test_load_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        config.load(str(tmp_path), environ={})  # a directory
    assert repr(str(tmp_path)) in str(info.value)
    assert "cannot be read" in str(info.value)


def test_load_reports_errors_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[session]\nconnection_timeout = 1\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        config.load(str(path), environ={})
    assert str(info.value).startswith(f"{path}: session.connection_timeout = 1:")


# --- reference -----------------------------------------------------------------------------

def test_reference_lists_every_key() -> None:
    text = config.reference_markdown()
    lines = text.splitlines()
    assert lines[0] == "| key | type | default | meaning |"
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            rows = [ln for ln in lines if ln.startswith(f"| `{section}.{name}` |")]
            assert len(rows) == 1, f"{section}.{name}"
            assert key.doc in rows[0]
            assert f"| {key.kind} |" in rows[0]
    for name in MOUNT_SCHEMA:
        assert sum(ln.startswith(f"| `[[mounts]].{name}` |") for ln in lines) == 1
    for name in config.IMAGE_SCHEMA:
        assert sum(ln.startswith(f"| `[[images]].{name}` |") for ln in lines) == 1
    n_keys = sum(len(keys) for keys in SCHEMA.values()) + len(MOUNT_SCHEMA) \
        + len(config.IMAGE_SCHEMA)
    assert len(lines) == 2 + n_keys


def test_reference_shows_defaults_readably() -> None:
    lines = config.reference_markdown().splitlines()

    def row(key: str) -> str:
        (found,) = [ln for ln in lines if ln.startswith(f"| `{key}` |")]
        return found

    assert "`06:00:00`" in row("session.max_walltime")
    assert "`180`" in row("session.connection_timeout")
    assert '`"epcc-ces-jupyter"`' in row("session.container_prefix")
    assert '`["jupyter-lab"]`' in row("image.command")
    assert "| required |" in row("[[mounts]].source")
    assert "| true |" in row("[[mounts]].required")
    assert "| false |" in row("[[mounts]].read_only")


# --- GPUs -----------------------------------------------------------------------------------

def test_gpu_defaults() -> None:
    cfg = config.default()
    assert cfg["limits.max_gpus"] == 0
    assert cfg["gpu.cdi_kind"] == "nvidia.com/gpu"
    assert cfg["gpu.cdi_spec_dirs"] == []
    assert cfg["gpu.visible_variables"] == ["CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL",
                                            "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"]


def test_gpu_values_are_read() -> None:
    cfg = config.parse('[gpu]\ncdi_kind = "example.com/gpu"\ncdi_spec_dirs = ["/site/cdi"]\n'
                       'visible_variables = ["CUDA_VISIBLE_DEVICES"]\n[limits]\nmax_gpus = 4\n')
    assert (cfg["gpu.cdi_kind"], cfg["gpu.cdi_spec_dirs"]) == ("example.com/gpu", ["/site/cdi"])
    assert cfg["gpu.visible_variables"] == ["CUDA_VISIBLE_DEVICES"] and cfg["limits.max_gpus"] == 4


@pytest.mark.parametrize(
    ("text", "field", "shown", "allowed_word"),
    [
        ('[gpu]\ncdi_kind = "nvidia"\n', "gpu.cdi_kind", "'nvidia'", "VENDOR/CLASS"),
        ('[gpu]\ncdi_kind = "nvidia.com/gpu=0"\n', "gpu.cdi_kind", "'nvidia.com/gpu=0'",
         "VENDOR/CLASS"),
        ('[gpu]\ncdi_spec_dirs = ["cdi"]\n', "gpu.cdi_spec_dirs", "['cdi']", "absolute"),
        ('[gpu]\nvisible_variables = ["NVIDIA_VISIBLE_DEVICES"]\n', "gpu.visible_variables",
         "NVIDIA_VISIBLE_DEVICES", "set by sh-jupyter"),
        ('[gpu]\nvisible_variables = ["HOME"]\n', "gpu.visible_variables", "HOME",
         "set by sh-jupyter"),
        ('[gpu]\nvisible_variables = ["1GPU"]\n', "gpu.visible_variables", "1GPU",
         "variable name"),
        ('[proxy]\nvariables = ["CUDA_VISIBLE_DEVICES"]\n', "proxy.variables",
         "CUDA_VISIBLE_DEVICES", "cannot copy"),
        ("[limits]\nmax_gpus = 65\n", "limits.max_gpus", "65", "between"),
    ],
)
def test_bad_gpu_values(text: str, field: str, shown: str, allowed_word: str) -> None:
    err = usage_error(text, field, shown)
    assert allowed_word in err.allowed


@pytest.mark.parametrize("device", [
    "nvidia.com/gpu=0", "nvidia.com/gpu=GPU-4cf8db2d", "nvidia.com/gpu=all", "vendor.io/x=all",
    "/dev/nvidia0", "/dev/nvidia3:/dev/nvidia0:rwm", "/dev/dri/renderD128",
])
def test_gpus_never_come_from_podman_devices(device: str) -> None:
    err = usage_error(f'[podman]\ndevices = ["{device}"]\n', "podman.devices", device)
    assert "[gpu]" in err.allowed


def test_gpu_kind_of_podman_devices_follows_the_configured_kind() -> None:
    usage_error('[gpu]\ncdi_kind = "amd.com/gpu"\n[podman]\ndevices = ["amd.com/gpu=0"]\n',
                "podman.devices", "amd.com/gpu=0")
    cfg = config.parse('[podman]\ndevices = ["/dev/fuse", "/dev/nvidiactl", "x.io/fpga=0"]\n')
    assert cfg["podman.devices"] == ["/dev/fuse", "/dev/nvidiactl", "x.io/fpga=0"]
