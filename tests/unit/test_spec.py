"""The container spec: podman-py create kwargs from config and session facts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sh_jupyter import __version__, config
from sh_jupyter.config import Config
from sh_jupyter.container.gpus import Assignment, container_environment
from sh_jupyter.container.podman_args import cgroup_manager_args, stay_in_cgroup_env
from sh_jupyter.container.spec import (
    AUTH_TARGET,
    LABEL_JOB,
    LABEL_SESSION,
    LABEL_USER,
    LABEL_VERSION,
    HostMount,
    SessionFacts,
    cgroups_mode,
    create_kwargs,
    environment,
    host_mounts,
    jupyter_command,
    podman_major,
    server_auth_config,
)
from sh_jupyter.errors import UsageError
from sh_jupyter.paths import TemplateContext
from sh_jupyter.session import resolve_base_url

SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"
SECRET = "Zq3-very_secret-token-value-0123456789abcdef"
PORT = 23456
AUTH_DIR = "/run/user/1234/sh-jupyter/0b7e4c1a.auth"
CTX = TemplateContext(user="alice", home="/home/alice", uid=1234, session_id=SID, job_id="4242")
PERSIST_SOURCE = "/home/alice/.local/share/ondemand/apps/jupyter_app"
SCRATCH_SOURCE = f"/var/tmp/sh-jupyter/alice/scratch/{SID}"
ALL_DEFAULT_SOURCES = {"/safe_data", "/safe_outputs", SCRATCH_SOURCE, PERSIST_SOURCE}


def build(cfg: Config | None = None, *, facts: SessionFacts | None = None,
          job_env: dict[str, str] | None = None, present: set[str] | None = None) -> dict:
    cfg = cfg or config.default()
    facts = facts or SessionFacts(ctx=CTX, port=PORT)
    mounts = host_mounts(cfg.mounts, facts.ctx)
    if present is None:
        present = {m.source for m in mounts}
    return create_kwargs(cfg, facts, job_env or {}, mounts, present)


def flag(command: list[str], name: str) -> list[str]:
    """Values of every `--name=value` argument."""
    return [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]


# --- identity ------------------------------------------------------------------------------

def test_name_and_image() -> None:
    kw = build()
    assert kw["name"] == f"epcc-ces-jupyter-{SID}"
    assert kw["image"] == "localhost/sh-jupyter/jupyterlab:latest"


def test_name_uses_configured_prefix() -> None:
    cfg = config.parse('[session]\ncontainer_prefix = "site-lab"\n')
    assert build(cfg)["name"] == f"site-lab-{SID}"


def test_labels() -> None:
    assert build()["labels"] == {
        LABEL_SESSION: SID,
        LABEL_JOB: "4242",
        LABEL_USER: "alice",
        LABEL_VERSION: __version__,
    }
    assert LABEL_SESSION.startswith("sh-jupyter.")


# --- the secret ----------------------------------------------------------------------------

def test_the_token_is_a_config_file_never_the_environment() -> None:
    """The container's PID 1 and JupyterLab would keep an environment variable for the
    session's life (/proc/1/environ, readable by user code inside): the token is a jupyter_server
    config file instead, in a directory mounted read-only and named by JUPYTER_CONFIG_PATH."""
    kw = build(facts=SessionFacts(ctx=CTX, port=PORT, auth_dir=AUTH_DIR))
    env = kw["environment"]
    assert "JUPYTER_TOKEN" not in env and env["JUPYTER_CONFIG_PATH"] == AUTH_TARGET
    assert {"type": "bind", "source": AUTH_DIR, "target": AUTH_TARGET, "read_only": True} \
        in kw["mounts"]
    assert json.loads(server_auth_config(SECRET)) == {"IdentityProvider": {"token": SECRET}}
    # A launcher authenticating by itself (JupyterHub) gets neither.
    kw = build(facts=SessionFacts(ctx=CTX, port=PORT))
    assert "JUPYTER_CONFIG_PATH" not in kw["environment"]
    assert AUTH_TARGET not in [m["target"] for m in kw["mounts"]]


def test_command_has_no_token_or_password_options() -> None:
    command = build()["command"]
    assert not any("token" in arg.lower() or "password" in arg.lower() for arg in command)
    assert not any("xsrf" in arg.lower() for arg in command)  # XSRF protection stays on


# --- hardening -----------------------------------------------------------------------------

def test_hardening() -> None:
    kw = build()
    assert kw["read_only"] is True
    tmpfs = {m["target"]: m["mode"] for m in kw["mounts"] if m["type"] == "tmpfs"}
    assert tmpfs == {"/root": "0700", "/run": "0755", "/tmp": "1777", "/var/tmp": "1777"}
    assert kw["cap_drop"] == ["ALL"]
    assert kw["cap_add"] == []
    assert kw["no_new_privileges"] is True
    assert kw["pids_limit"] == 4096  # with a cgroup of its own (cgroup v1, or enabled)
    assert kw["shm_size"] == "1g"
    assert kw["working_dir"] == "/root"
    assert kw["environment"]["HOME"] == "/root"
    tmpfs = [m for m in kw["mounts"] if m["type"] == "tmpfs"]
    assert tmpfs[0] == {"type": "tmpfs", "source": "tmpfs", "target": "/root", "mode": "0700"}
    assert all(m["source"] == "tmpfs" for m in tmpfs)


def test_stop_settings() -> None:
    cfg = config.parse("[session]\nstop_timeout = 12\n")
    kw = build(cfg)
    assert kw["stop_signal"] == 15
    assert isinstance(kw["stop_signal"], int)
    assert kw["stop_timeout"] == 12


def test_cap_add_is_normalised() -> None:
    cfg = config.parse('[podman]\ncap_add = ["cap_net_bind_service", "CHOWN"]\n')
    assert build(cfg)["cap_add"] == ["NET_BIND_SERVICE", "CHOWN"]
    assert build(cfg)["cap_drop"] == ["ALL"]


def test_devices_and_pids() -> None:
    cfg = config.parse('[podman]\ndevices = ["/dev/fuse"]\npids_limit = 128\n'
                       'shm_size = "2g"\ncgroups = "enabled"\n')
    kw = build(cfg)
    assert kw["devices"] == ["/dev/fuse"]
    assert kw["devices"] is not cfg["podman.devices"]
    assert (kw["pids_limit"], kw["shm_size"]) == (128, "2g")


# --- network -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["slirp4netns", "pasta"])
def test_ports_published_on_bind_address(mode: str) -> None:
    cfg = config.parse(f'[podman]\nnetwork = "{mode}"\n[network]\nbind_address = "10.1.2.3"\n')
    kw = build(cfg)
    assert kw["network_mode"] == mode
    assert kw["ports"] == {f"{PORT}/tcp": ("10.1.2.3", PORT)}
    assert flag(kw["command"], "ip") == ["0.0.0.0"]
    assert flag(kw["command"], "port") == [str(PORT)]


def test_default_publishes_on_all_addresses() -> None:
    kw = build()
    assert kw["network_mode"] == "slirp4netns"  # Podman's version unknown: the safe choice
    assert kw["ports"] == {f"{PORT}/tcp": ("0.0.0.0", PORT)}


@pytest.mark.parametrize(("version", "have_pasta", "mode"), [
    ("4.3.1", False, "slirp4netns"),  # Debian 12: no pasta support in Podman 4.3
    ("4.3.1", True, "slirp4netns"),
    ("4.9.4", True, "slirp4netns"),   # Podman 4's default stays slirp4netns
    ("5.4.2", True, "pasta"),         # Debian 13: Podman 5's default
    ("5.4.2", False, "slirp4netns"),  # passt not installed (Debian only recommends it)
    ("", True, "slirp4netns"),
    ("dev", True, "slirp4netns"),
])
def test_auto_network_follows_the_podman_version(version: str, have_pasta: bool,
                                                 mode: str) -> None:
    facts = SessionFacts(ctx=CTX, port=PORT, podman_version=version, have_pasta=have_pasta)
    kw = build(config.parse('[podman]\nnetwork = "auto"\n'), facts=facts)
    assert kw["network_mode"] == mode
    assert kw["ports"] == {f"{PORT}/tcp": ("0.0.0.0", PORT)}


@pytest.mark.parametrize("mode", ["slirp4netns", "pasta"])
def test_a_configured_network_wins_over_the_version(mode: str) -> None:
    facts = SessionFacts(ctx=CTX, port=PORT, podman_version="5.4.2", have_pasta=True)
    kw = build(config.parse(f'[podman]\nnetwork = "{mode}"\n'), facts=facts)
    assert kw["network_mode"] == mode


def test_podman_major() -> None:
    assert (podman_major("4.3.1"), podman_major("5.4.2"), podman_major("10.0")) == (4, 5, 10)
    assert (podman_major(""), podman_major("v5"), podman_major(" 5.1")) == (0, 0, 5)


# --- command -------------------------------------------------------------------------------

def test_command() -> None:
    cmd = build(facts=SessionFacts(ctx=CTX, port=20001))["command"]
    assert cmd[0] == "jupyter-lab"
    assert "--allow-root" in cmd
    assert "--no-browser" in cmd
    assert flag(cmd, "port") == ["20001"]
    assert flag(cmd, "ServerApp.port_retries") == ["0"]
    assert flag(cmd, "ServerApp.base_url") == ["/"]
    assert flag(cmd, "ServerApp.root_dir") == ["/"]
    assert flag(cmd, "FileContentsManager.preferred_dir") == ["mnt/jupyter_host"]


def test_command_uses_configured_start_command_and_base_url() -> None:
    cfg = config.parse('[image]\ncommand = ["/opt/venv/bin/jupyter-lab", "--debug"]\n'
                       'base_url = "/node/{host}/{port}/"\n')
    base = resolve_base_url(cfg["image.base_url"], "n1", 20001)
    assert base == "/node/n1/20001/"
    cmd = jupyter_command(cfg, 20001, base)
    assert cmd[:2] == ["/opt/venv/bin/jupyter-lab", "--debug"]
    assert flag(cmd, "ServerApp.base_url") == ["/node/n1/20001/"]
    facts = SessionFacts(ctx=CTX, port=PORT, base_url="/node/n1/20001/")
    assert flag(build(cfg, facts=facts)["command"], "ServerApp.base_url") == ["/node/n1/20001/"]


@pytest.mark.parametrize("bad", ["/node/{user}/", "/x/{port", "node/{host}/"])
def test_base_url_allows_only_host_and_port_placeholders(bad: str) -> None:
    with pytest.raises(UsageError, match=r"image\.base_url"):
        config.parse(f'[image]\nbase_url = "{bad}"\n')


@pytest.mark.parametrize(
    ("root", "preferred", "expected"),
    [
        ("/", "/mnt/jupyter_host", ["mnt/jupyter_host"]),
        ("/mnt", "/mnt/jupyter_host", ["jupyter_host"]),
        ("/mnt/jupyter_host", "/mnt/jupyter_host", [""]),
        ("/mnt/jupyter_host", "/mnt/jupyter_host/", [""]),
        ("/safe_data", "/mnt/jupyter_host", []),
        ("/mnt/j", "/mnt/jupyter_host", []),
    ],
)
def test_preferred_dir_is_relative_to_root_dir(root: str, preferred: str,
                                               expected: list[str]) -> None:
    cfg = config.parse(f'[image]\nroot_dir = "{root}"\npreferred_dir = "{preferred}"\n')
    cmd = jupyter_command(cfg, PORT)
    assert flag(cmd, "ServerApp.root_dir") == [root]
    assert flag(cmd, "FileContentsManager.preferred_dir") == expected


def test_no_idle_flags_by_default() -> None:
    cmd = build()["command"]
    assert not any("cull" in arg or "shutdown_no_activity" in arg for arg in cmd)


def test_idle_timeout_flags() -> None:
    cfg = config.parse("[session]\nidle_timeout = 3600\n")
    cmd = jupyter_command(cfg, PORT)
    assert flag(cmd, "ServerApp.shutdown_no_activity_timeout") == []  # the supervisor's job
    assert flag(cmd, "MappingKernelManager.cull_idle_timeout") == ["3600"]
    assert flag(cmd, "TerminalManager.cull_inactive_timeout") == []  # open terminals stay
    assert flag(cmd, "MappingKernelManager.cull_interval") == ["60"]


# --- mounts --------------------------------------------------------------------------------

def test_host_mounts_expand_sources() -> None:
    mounts = host_mounts(config.default().mounts, CTX)
    assert [(m.source, m.target) for m in mounts] == [
        ("/safe_data", "/safe_data"),
        ("/safe_outputs", "/safe_outputs"),
        (SCRATCH_SOURCE, "/scratch"),
        (PERSIST_SOURCE, "/mnt/jupyter_host"),
    ]
    scratch = mounts[2]
    assert (scratch.create, scratch.ephemeral, scratch.required) == (True, True, True)


def test_host_mounts_normalise_targets() -> None:
    cfg = config.parse('[[mounts]]\nsource = "/a/{user}/"\ntarget = "/data/./x/"\n')
    assert host_mounts(cfg.mounts, CTX) == [
        HostMount("/a/alice", "/data/x", False, False, True, False)]


def test_host_mounts_reject_unsafe_values() -> None:
    ctx = dataclasses.replace(CTX, session_id="../../etc")
    with pytest.raises(ValueError):
        host_mounts(config.default().mounts, ctx)


def test_all_present_mounts_are_bound() -> None:
    binds = [m for m in build()["mounts"] if m["type"] == "bind"]
    assert binds == [
        {"type": "bind", "source": "/safe_data", "target": "/safe_data", "read_only": False},
        {"type": "bind", "source": "/safe_outputs", "target": "/safe_outputs",
         "read_only": False},
        {"type": "bind", "source": SCRATCH_SOURCE, "target": "/scratch", "read_only": False},
        {"type": "bind", "source": PERSIST_SOURCE, "target": "/mnt/jupyter_host",
         "read_only": False},
    ]


def test_only_present_mounts_are_bound() -> None:
    kw = build(present={"/safe_outputs", PERSIST_SOURCE})
    targets = [m["target"] for m in kw["mounts"]]
    assert targets == ["/safe_outputs", "/mnt/jupyter_host", "/root", "/run", "/tmp", "/var/tmp"]


def test_no_present_mounts_leaves_only_tmpfs() -> None:
    assert [m["type"] for m in build(present=set())["mounts"]] == ["tmpfs"] * 4


def test_read_only_is_honoured() -> None:
    cfg = config.parse('[[mounts]]\nsource = "/safe_data"\ntarget = "/safe_data"\n'
                       "read_only = true\n"
                       '[[mounts]]\nsource = "/safe_outputs"\ntarget = "/safe_outputs"\n')
    binds = {m["target"]: m["read_only"] for m in build(cfg)["mounts"] if m["type"] == "bind"}
    assert binds == {"/safe_data": True, "/safe_outputs": False}


# --- environment ---------------------------------------------------------------------------

def test_base_environment() -> None:
    env = build()["environment"]
    assert env["SH_JUPYTER_SESSION_ID"] == SID
    assert env["SLURM_JOB_ID"] == "4242"
    assert env["JUPYTER_RUNTIME_DIR"].startswith("/tmp/")


def test_local_session_has_no_slurm_job_id() -> None:
    facts = SessionFacts(ctx=dataclasses.replace(CTX, job_id="local"), port=PORT)
    assert "SLURM_JOB_ID" not in build(facts=facts)["environment"]


def test_proxy_variables_copied_when_present() -> None:
    job_env = {"http_proxy": "http://proxy:3128", "HTTPS_PROXY": "http://proxy:3129",
               "FOO_PROXY": "x", "PATH": "/usr/bin", "SLURM_JOB_NAME": "jupyter_app"}
    env = build(job_env=job_env)["environment"]
    assert env["http_proxy"] == "http://proxy:3128"
    assert env["HTTPS_PROXY"] == "http://proxy:3129"
    for absent in ("https_proxy", "no_proxy", "HTTP_PROXY", "NO_PROXY", "FOO_PROXY", "PATH",
                   "SLURM_JOB_NAME"):
        assert absent not in env


def test_no_proxy_variables_without_job_env() -> None:
    env = build(job_env={})["environment"]
    assert not any("proxy" in k.lower() for k in env)


def test_only_configured_proxy_variables_are_copied() -> None:
    cfg = config.parse('[proxy]\nvariables = ["SITE_PROXY"]\n')
    env = build(cfg, job_env={"SITE_PROXY": "p", "http_proxy": "h"})["environment"]
    assert env["SITE_PROXY"] == "p"
    assert "http_proxy" not in env


def test_empty_proxy_value_is_copied_as_is() -> None:
    env = build(job_env={"no_proxy": ""})["environment"]
    assert env["no_proxy"] == ""


PERSIST_VARS = {
    "PYTHONUSERBASE": "/mnt/jupyter_host/.local",
    "JUPYTER_DATA_DIR": "/mnt/jupyter_host/.local/share/jupyter",
    "JUPYTERLAB_SETTINGS_DIR": "/mnt/jupyter_host/.jupyter/lab/user-settings",
    "JUPYTERLAB_WORKSPACES_DIR": "/mnt/jupyter_host/.jupyter/lab/workspaces",
}


def test_persistence_variables_with_the_persistent_mount() -> None:
    env = build()["environment"]
    assert {k: env[k] for k in PERSIST_VARS} == PERSIST_VARS


def test_persistence_variables_with_a_trailing_slash_target() -> None:
    cfg = config.parse('[[mounts]]\nsource = "{home}/keep"\ntarget = "/mnt/jupyter_host/"\n')
    env = build(cfg)["environment"]
    assert env["PYTHONUSERBASE"] == "/mnt/jupyter_host/.local"


def test_no_persistence_variables_without_the_persistent_mount() -> None:
    cfg = config.parse('[[mounts]]\nsource = "/safe_data"\ntarget = "/safe_data"\n'
                       '[[mounts]]\nsource = "{home}/keep"\ntarget = "/mnt/other"\n')
    env = build(cfg)["environment"]
    assert not set(PERSIST_VARS) & set(env)


def test_no_persistence_variables_when_the_persistent_mount_is_absent() -> None:
    # An optional /mnt/jupyter_host whose source is missing is left out of the mounts; pointing
    # PYTHONUSERBASE into the read-only root filesystem would then make `pip install` fail.
    kw = build(present={"/safe_data", "/safe_outputs", SCRATCH_SOURCE})
    assert "/mnt/jupyter_host" not in [m["target"] for m in kw["mounts"]]
    assert not set(PERSIST_VARS) & set(kw["environment"])


def test_environment_function_directly() -> None:
    cfg = config.default()
    facts = SessionFacts(ctx=CTX, port=PORT)
    env = environment(cfg, facts, {"no_proxy": "localhost"}, [])
    assert env == {
        "HOME": "/root",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "SH_JUPYTER_SESSION_ID": SID,
        "SLURM_JOB_ID": "4242",
        "no_proxy": "localhost",
    }


# --- cgroups and resource limits ---------------------------------------------------------

LIMIT_KEYS = {"cpu_period", "cpu_quota", "mem_limit"}
LOCAL = dataclasses.replace(CTX, job_id="local")
ENABLED = config.parse('[podman]\ncgroups = "enabled"\n')


def test_in_a_job_on_cgroup_v2_the_container_stays_in_the_jobs_cgroup() -> None:
    """Podman's own cgroup would be a systemd scope outside the job on cgroup v2: outside the
    job's memory and CPU limits and outside what scancel ends. So no cgroup of its own, and
    none of its own limits (the job's hold it)."""
    facts = SessionFacts(ctx=CTX, port=PORT, cpus=4, memory_gib=8, apply_limits=True,
                         cgroup_v2=True)
    kw = build(facts=facts)
    assert kw["cgroups_mode"] == "disabled"
    assert not (LIMIT_KEYS | {"pids_limit"}) & set(kw)


def test_elsewhere_podmans_default_cgroup_stays() -> None:
    """Outside a job there is no job to stay in; on cgroup v1 rootless Podman makes no
    cgroup, so the container is in the job's already."""
    for facts in (SessionFacts(ctx=LOCAL, port=PORT, cgroup_v2=True),
                  SessionFacts(ctx=CTX, port=PORT, cgroup_v2=False)):
        kw = build(facts=facts)
        assert "cgroups_mode" not in kw and kw["pids_limit"] == 4096


@pytest.mark.parametrize(("setting", "job", "v2", "want"), [
    ("auto", True, True, "disabled"), ("auto", False, True, "enabled"),
    ("auto", True, False, "enabled"), ("enabled", True, True, "enabled"),
    ("disabled", False, False, "disabled"),
])
def test_cgroups_setting(setting: str, job: bool, v2: bool, want: str) -> None:
    assert cgroups_mode(setting, job, v2) == want
    kw = build(config.parse(f'[podman]\ncgroups = "{setting}"\n'),
               facts=SessionFacts(ctx=CTX if job else LOCAL, port=PORT, cgroup_v2=v2))
    assert kw.get("cgroups_mode", "enabled") == want


def test_podman_itself_stays_in_the_job_when_the_containers_cgroups_are_disabled() -> None:
    """With the systemd manager Podman would move itself (and the conmon it starts) into a
    scope of its own under user@UID.service."""
    assert cgroup_manager_args("disabled") == ["--cgroup-manager", "cgroupfs"]
    assert cgroup_manager_args("enabled") == []
    # Nor may it reach the user's systemd, which would move it to a podman-PID.scope anyway.
    assert stay_in_cgroup_env("disabled") == {"DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    assert stay_in_cgroup_env("enabled") == {}


def test_limits_applied() -> None:
    facts = SessionFacts(ctx=CTX, port=PORT, cpus=4, memory_gib=8, apply_limits=True)
    kw = build(ENABLED, facts=facts)
    assert kw["cpu_period"] == 100000
    assert kw["cpu_quota"] == 400000
    assert kw["mem_limit"] == "8g"


def test_limits_not_applied() -> None:
    facts = SessionFacts(ctx=CTX, port=PORT, cpus=4, memory_gib=8, apply_limits=False)
    assert not LIMIT_KEYS & set(build(facts=facts))


def test_limits_only_for_known_values() -> None:
    cpus_only = SessionFacts(ctx=CTX, port=PORT, cpus=2, memory_gib=0, apply_limits=True)
    kw = build(ENABLED, facts=cpus_only)
    assert (kw["cpu_quota"], "mem_limit" in kw) == (200000, False)
    memory_only = SessionFacts(ctx=CTX, port=PORT, cpus=0, memory_gib=16, apply_limits=True)
    kw = build(ENABLED, facts=memory_only)
    assert (kw["mem_limit"], "cpu_quota" in kw, "cpu_period" in kw) == ("16g", False, False)


def test_job_ulimits_are_passed_through() -> None:
    facts = SessionFacts(ctx=CTX, port=PORT, ulimits=(("nofile", 1024, 4096),))
    assert build(facts=facts)["ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
    assert build()["ulimits"] == []


# --- GPUs ------------------------------------------------------------------------------------

def test_no_gpus_means_no_gpu_device_and_a_disarmed_nvidia_hook() -> None:
    kw = build(job_env={"CUDA_VISIBLE_DEVICES": "2", "SLURM_JOB_GPUS": "2"})
    assert kw["devices"] == []
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "CUDA_VISIBLE_DEVICES" not in kw["environment"]


def test_the_jobs_gpus_are_cdi_devices_with_the_containers_own_numbering() -> None:
    cfg = config.parse('[podman]\ndevices = ["/dev/fuse"]\n'
                       '[gpu]\nvisible_variables = ["CUDA_VISIBLE_DEVICES"]\n')
    gpus = Assignment(("nvidia.com/gpu=GPU-a", "nvidia.com/gpu=GPU-b"),
                      container_environment(2, cfg["gpu.visible_variables"]))
    facts = SessionFacts(ctx=CTX, port=PORT, auth_dir=AUTH_DIR)
    mounts = host_mounts(cfg.mounts, CTX)
    kw = create_kwargs(cfg, facts, {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "1,3"},
                       mounts, {m.source for m in mounts}, gpus)
    assert kw["devices"] == ["/dev/fuse", "nvidia.com/gpu=GPU-a", "nvidia.com/gpu=GPU-b"]
    env = kw["environment"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "SLURM_JOB_GPUS" not in env and env["JUPYTER_CONFIG_PATH"] == AUTH_TARGET
