"""The command line: bad input is one line on stderr and exit status 2, nothing started."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from sh_jupyter import __version__, api, cli, config, errors, users
from sh_jupyter.errors import EXIT_USAGE
from sh_jupyter.supervisor import lifecycle as supervisor

SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"
# Stand-ins for pwd entries (the code reads only these attributes). Not pwd.struct_passwd built
# from a tuple: with Debian 12's Python 3.11.2 such objects upset the garbage collector at
# interpreter exit ("SystemError ... in tp_clear"), noise that hides real output.
ALICE = SimpleNamespace(pw_name="alice", pw_uid=1234, pw_gid=1234, pw_dir="/home/alice")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No site config, no Slurm job, whatever machine the tests run on."""
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "no-such-config.toml"))
    for name in (config.ENV_VAR, "SLURM_JOB_ID", "SLURM_CPUS_ON_NODE", "SLURM_MEM_PER_NODE"):
        monkeypatch.delenv(name, raising=False)


class FakeSupervisor:
    """Stands in for the real supervisor: records what the CLI asked for, starts nothing."""

    calls: list[FakeSupervisor] = []

    def __init__(self, cfg: config.Config, req: supervisor.RunRequest) -> None:
        self.cfg = cfg
        self.req = req
        FakeSupervisor.calls.append(self)

    def run(self) -> int:
        return 7


@pytest.fixture
def as_alice(monkeypatch: pytest.MonkeyPatch) -> list[FakeSupervisor]:
    monkeypatch.setattr(users, "current_user", lambda: ALICE)
    monkeypatch.setattr(api, "current_user", lambda: ALICE)
    monkeypatch.setattr(supervisor, "Supervisor", FakeSupervisor)
    FakeSupervisor.calls = []
    return FakeSupervisor.calls


def one_line(err: str) -> str:
    assert err.endswith("\n"), repr(err)
    assert err.count("\n") == 1, repr(err)
    return err


def exits_with_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """argparse-level errors raise SystemExit(2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    return one_line(captured.err)


def returns_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Validation errors after parsing return 2."""
    assert cli.main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    return one_line(captured.err)


# --- argument errors -----------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value"), [("--cpus", "0"), ("--cpus", "x"),
                                             ("--cpus", "1.5"), ("--memory", "0"),
                                             ("--memory", "-1"), ("--memory", "lots")])
def test_bad_resource_flags(capsys: pytest.CaptureFixture[str], flag: str,
                            value: str) -> None:
    err = exits_with_usage(capsys, ["run", "--local", flag, value])
    assert err.startswith("sh-jupyter: ")
    assert f"{flag} = {value!r}" in err


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    err = exits_with_usage(capsys, ["launch"])
    assert "'launch'" in err
    assert "run" in err and "config" in err


def test_missing_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    err = exits_with_usage(capsys, [])
    assert "command" in err


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    err = exits_with_usage(capsys, ["run", "--gpus", "1"])
    assert "--gpus" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"sh-jupyter {__version__}\n"


# --- config errors -------------------------------------------------------------------------

def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent.toml")
    err = returns_usage(capsys, ["--config", missing, "config"])
    assert err == f"sh-jupyter: config file = {missing!r}: does not exist\n"


def test_missing_config_file_named_by_environment(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "nonexistent.toml")
    monkeypatch.setenv(config.ENV_VAR, missing)
    err = returns_usage(capsys, ["config"])
    assert repr(missing) in err


def test_invalid_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[network]\nport_attempts = 0\n", encoding="utf-8")
    err = returns_usage(capsys, ["--config", str(path), "config"])
    assert str(path) in err
    assert "network.port_attempts = 0" in err


def test_host_networking_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With host networking the session port is JupyterLab's own socket on the node, which
    another user can bind first and so receive the readiness probe's token: refused (exit 2),
    naming the field, the value and what is allowed, before anything starts."""
    path = tmp_path / "site.toml"
    path.write_text('[podman]\nnetwork = "host"\n', encoding="utf-8")
    for argv in (["config"], ["run", "--local"]):
        err = returns_usage(capsys, ["--config", str(path), *argv])
        assert "podman.network = 'host'" in err, err
        assert "auto, slirp4netns, pasta" in err and "token" in err, err


def test_invalid_toml_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[network\nport_attempts = 0\n", encoding="utf-8")
    err = returns_usage(capsys, ["--config", str(path), "config"])
    assert str(path) in err
    assert "TOML" in err


def test_bad_config_stops_run_too(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  as_alice: list[FakeSupervisor]) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[session]\nbogus = 1\n", encoding="utf-8")
    err = returns_usage(capsys, ["--config", str(path), "run", "--local"])
    assert "session.bogus" in err
    assert as_alice == []


# --- config command ------------------------------------------------------------------------

def test_config_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "--reference"]) == 0
    out = capsys.readouterr().out
    assert out == config.reference_markdown() + "\n"
    assert "| `session.connection_timeout` | int | `180` |" in out


def test_config_valid_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[session]\nidle_timeout = 60\n", encoding="utf-8")
    assert cli.main(["--config", str(path), "config"]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


def test_config_from_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert cli.main(["config"]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


def test_config_without_any_file_uses_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    assert capsys.readouterr().out == "<defaults>: valid\n"


# --- run: refusals -------------------------------------------------------------------------

def test_run_as_root_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # Uses the real user: the tests normally run as root here.
    if os.getuid() == 0:
        err = returns_usage(capsys, ["run", "--local"])
        assert err.startswith("sh-jupyter: user = 'root': ")
        assert "never root" in err
    else:
        err = returns_usage(capsys, ["run"])  # not in a job, not --local
        assert err.startswith("sh-jupyter: SLURM_JOB_ID = '': ")


def test_root_refused_before_anything_else(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = SimpleNamespace(pw_name="root", pw_uid=0, pw_gid=0, pw_dir="/root")
    monkeypatch.setattr(users, "current_user", lambda: root)
    err = returns_usage(capsys, ["run", "--session-id", SID, "--local"])
    assert "user = 'root'" in err


def test_run_bad_session_id(capsys: pytest.CaptureFixture[str],
                            as_alice: list[FakeSupervisor]) -> None:
    err = returns_usage(capsys, ["run", "--session-id", "notauuid", "--local"])
    assert err == "sh-jupyter: --session-id = 'notauuid': must be a UUID\n"
    assert as_alice == []


def test_run_outside_a_job_needs_local(capsys: pytest.CaptureFixture[str],
                                       as_alice: list[FakeSupervisor]) -> None:
    err = returns_usage(capsys, ["run"])
    assert err.startswith("sh-jupyter: SLURM_JOB_ID = '': ")
    assert "--local" in err
    assert as_alice == []


def test_run_in_a_job_needs_a_session_directory_named_by_uuid(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        as_alice: list[FakeSupervisor]) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    session_dir = str(tmp_path / "not-a-uuid")
    err = returns_usage(capsys, ["run", "--session-dir", session_dir])
    assert f"session directory = {session_dir!r}" in err
    assert as_alice == []


# --- run: what reaches the supervisor ------------------------------------------------------

def test_run_in_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      as_alice: list[FakeSupervisor]) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "4")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "65536")  # MiB
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    session_dir = tmp_path / SID
    assert cli.main(["run", "--session-dir", f"{session_dir}/"]) == 7
    (sup,) = as_alice
    req = sup.req
    assert (req.session_id, req.session_dir, req.job_id) == (SID, str(session_dir), "77")
    assert (req.user, req.uid, req.home) == ("alice", 1234, "/home/alice")
    assert (req.cpus, req.memory_gib) == (4, 64)
    assert req.job_env["http_proxy"] == "http://proxy:3128"
    assert sup.cfg["session.job_name"] == "jupyter_app"


def test_run_in_a_job_uses_the_working_directory(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 as_alice: list[FakeSupervisor]) -> None:
    session_dir = tmp_path / SID
    session_dir.mkdir()
    monkeypatch.chdir(session_dir)
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    assert cli.main(["run"]) == 7
    (sup,) = as_alice
    assert (sup.req.session_id, sup.req.session_dir) == (SID, str(session_dir))


def test_flags_override_slurm_resources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        as_alice: list[FakeSupervisor]) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "4")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    assert cli.main(["run", "--session-dir", str(tmp_path / SID), "--cpus", "2",
                     "--memory", "3"]) == 7
    (sup,) = as_alice
    assert (sup.req.cpus, sup.req.memory_gib) == (2, 3)


def test_unparseable_slurm_resources_mean_unknown(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path,
                                                  as_alice: list[FakeSupervisor]) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "")
    assert cli.main(["run", "--session-dir", str(tmp_path / SID)]) == 7
    (sup,) = as_alice
    assert (sup.req.cpus, sup.req.memory_gib) == (0, 0)


def test_run_local_defaults(as_alice: list[FakeSupervisor]) -> None:
    assert cli.main(["run", "--local"]) == 7
    (sup,) = as_alice
    req = sup.req
    assert req.job_id == "local"
    assert req.session_id != SID
    assert len(req.session_id) == 36
    assert req.session_dir == ("/home/alice/ondemand/data/sys/dashboard/batch_connect/sys/"
                               f"jupyter_app/output/{req.session_id}")


def test_run_local_with_given_id_and_dir(tmp_path: Path,
                                         as_alice: list[FakeSupervisor]) -> None:
    assert cli.main(["run", "--local", "--session-id", SID, "--session-dir",
                     str(tmp_path / "here")]) == 7
    (sup,) = as_alice
    assert (sup.req.session_id, sup.req.session_dir) == (SID, str(tmp_path / "here"))


def test_run_local_uses_configured_sessions_dir(tmp_path: Path,
                                                as_alice: list[FakeSupervisor]) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[session]\nsessions_dir = "/srv/sessions/{user}"\n', encoding="utf-8")
    assert cli.main(["--config", str(path), "run", "--local", "--session-id", SID]) == 7
    (sup,) = as_alice
    assert sup.req.session_dir == f"/srv/sessions/alice/{SID}"


@pytest.mark.parametrize(("error", "status"), [
    (errors.SchedulerUnavailable("squeue did not answer within 30 s"), 4),
    (errors.SessionFailure("the session failed: JupyterLab exited"), 3),
    (errors.UsageError("session", "zz", "must be a session id"), 2),
])
def test_each_branch_of_the_error_tree_has_its_exit_status(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        error: errors.ShJupyterError, status: int) -> None:
    """"Unknown" is not "failed": a scheduler that gives no answer exits 4, never 3."""
    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(api, "wait", fail)
    monkeypatch.setattr(api, "find", lambda *_a, **_k: api.Session("s", "1", "/nowhere"))
    assert cli.main(["wait", "0123"]) == status
    captured = capsys.readouterr()
    assert captured.err == f"sh-jupyter: {error}\n" and captured.out == ""
