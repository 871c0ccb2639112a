"""The public API over a scratch home directory and a scheduler that records what it is asked
(no Slurm): what a launcher gets, and that secrets go only to the 0600 file."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sh_jupyter import api, cli, config, users
from sh_jupyter.errors import EXIT_SESSION_FAILED, EXIT_USAGE, SessionFailure, UsageError
from sh_jupyter.launch import ENV_FILE, LaunchOptions
from sh_jupyter.session import Status
from sh_jupyter.slurm.squeue_json import JobInfo
from sh_jupyter.supervisor import entry as runner
from sh_jupyter.supervisor import lifecycle as supervisor

SECRET = "hub-token-Zq3xx1"


class FakeScheduler:
    """Records submissions and cancels; job states are whatever the test sets."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[tuple[list[str], str]] = []
        self.cancelled: list[str] = []
        self.known: dict[str, JobInfo | None] = {}
        self.refuse = ""
        self.cancel_error = ""

    def submit(self, options: list[str], script: str) -> str:
        if self.refuse:
            raise SessionFailure(self.refuse)
        self.submitted.append((options, script))
        return str(100 + len(self.submitted))

    def job(self, job_id: str) -> JobInfo | None:
        return self.known.get(job_id)

    def jobs(self, user: str) -> list[JobInfo]:
        return [j for j in self.known.values() if j is not None]

    def states(self, job_ids, user: str | None = None) -> dict[str, JobInfo | None]:
        return {j: self.known.get(j) for j in job_ids}

    def cancel(self, job_id: str) -> None:
        if self.cancel_error:
            raise SessionFailure(self.cancel_error)
        self.cancelled.append(job_id)


@pytest.fixture
def me(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The test process's own uid, with a scratch home (files it makes are its own)."""
    home = tmp_path / "home"
    home.mkdir()
    user = SimpleNamespace(pw_name="alice", pw_uid=os.getuid(), pw_gid=os.getgid(),
                           pw_dir=str(home), pw_shell="/bin/sh")
    monkeypatch.setattr(users, "current_user", lambda: user)
    monkeypatch.setattr(api, "current_user", lambda: user)
    monkeypatch.setattr(api, "session_user", lambda: user)
    monkeypatch.setattr(runner, "session_user", lambda: user)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "no-such-config.toml"))
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    return user


@pytest.fixture
def sched() -> FakeScheduler:
    return FakeScheduler()


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_submit_records_the_request_and_hands_secrets_only_to_a_private_file(me, sched):
    done = api.submit(cpus=2, memory_gib=3, walltime="1:00:00",
                      command=["jupyterhub-singleuser"], base_url="/user/alice/",
                      auth="launcher", environment={"JUPYTERHUB_API_TOKEN": SECRET},
                      scheduler=sched)
    assert isinstance(done, api.Session) and done.job_id == "101"
    assert os.path.basename(done.session_dir) == done.session_id
    assert _mode(done.session_dir) == 0o700
    ((options, script),) = sched.submitted
    assert script == "/usr/libexec/sh-jupyter/jupyter_app.sbatch"
    assert f"--chdir={done.session_dir}" in options and "--cpus-per-task=2" in options
    assert not any(SECRET in o for o in options)
    env_file = os.path.join(done.session_dir, ENV_FILE)
    assert _mode(env_file) == 0o600
    with open(env_file, encoding="utf-8") as fh:
        assert json.load(fh) == {"JUPYTERHUB_API_TOKEN": SECRET}
    for name in os.listdir(done.session_dir):
        if name != ENV_FILE:
            with open(os.path.join(done.session_dir, name), encoding="utf-8") as fh:
                assert SECRET not in fh.read(), name
    with open(os.path.join(done.session_dir, "request.json"), encoding="utf-8") as fh:
        request = json.load(fh)
    assert request["launch"] == {"command": ["jupyterhub-singleuser"],
                                 "base_url": "/user/alice/", "auth": "launcher"}
    assert api.card(done, scheduler=sched)["status"] == "Completed"  # not in the queue
    sched.known["101"] = JobInfo("101", "jupyter_app", "alice", "PENDING", reason="Priority")
    card = api.card(done.session_id[:8], scheduler=sched)
    assert (card["status"], card["reason"], card["job_id"]) == ("Queued", "Priority", "101")
    assert api.find(done.session_id[:6]) == done


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"cpus": 0}, "--cpus"),
    ({"walltime": "99:00:00"}, "--time"),
    ({"command": "jupyterhub-singleuser"}, "command"),
    ({"auth": "none"}, "auth"),
    ({"base_url": "user/x"}, "base_url"),
    ({"environment": {"PATH": "/x"}}, "environment"),
    ({"environment": {"1BAD": "x"}}, "environment"),
])
def test_bad_input_creates_and_submits_nothing(me, sched, kwargs, field):
    with pytest.raises(UsageError) as info:
        api.submit(scheduler=sched, **kwargs)
    assert info.value.field == field
    assert sched.submitted == []
    assert not os.path.exists(os.path.join(me.pw_dir, "ondemand"))


def test_a_refused_job_leaves_no_session_and_no_secret(me, sched):
    sched.refuse = "sbatch refused the job: invalid partition"
    with pytest.raises(SessionFailure, match="invalid partition"):
        api.submit(environment={"JUPYTERHUB_API_TOKEN": SECRET}, scheduler=sched)
    root = os.path.join(me.pw_dir, "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/"
                        "output")
    assert os.listdir(root) == []


def test_request_from_json_names_keys_never_values():
    text = json.dumps({"cpus": 2, "command": ["jupyterhub-singleuser"],
                       "environment": {"JUPYTERHUB_API_TOKEN": SECRET}})
    assert api.request_from_json(text)["environment"] == {"JUPYTERHUB_API_TOKEN": SECRET}
    with pytest.raises(UsageError) as info:
        api.request_from_json(json.dumps({"environment": {"T": SECRET}, "tokn": SECRET}))
    assert info.value.value == ["tokn"] and SECRET not in str(info.value)
    with pytest.raises(UsageError) as info:
        api.request_from_json('{"environment": {"T": "' + SECRET)
    assert SECRET not in str(info.value) and "JSON object" in str(info.value)
    with pytest.raises(UsageError, match="must be a JSON object"):
        api.request_from_json("[1]")
    with pytest.raises(UsageError, match="environment"):
        api.request_from_json('{"environment": ["T"]}')
    assert set(api.REQUEST_KEYS) <= set(api.submit.__kwdefaults__)


def _write_status(session_dir: str, **fields) -> None:
    path = os.path.join(session_dir, "status.json")
    with open(path, encoding="utf-8") as fh:
        status = Status.from_json(fh.read())
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(Status(**{**status.__dict__, **fields}).to_json())


def test_wait_without_the_scheduler_follows_the_status_file_alone(me, sched):
    done = api.submit(scheduler=sched)
    seen: list[tuple[str, str]] = []

    def on_change(card: api.Card) -> None:  # the supervisor's next step, once it is seen
        seen.append((card["status"], card["host"]))
        if card["status"] == "Queued":
            _write_status(done.session_dir, phase="Starting", host="node7")
        elif card["status"] == "Starting":
            _write_status(done.session_dir, phase="Running", port=24680,
                          base_url="/user/alice/", message="JupyterLab is running")

    class NoScheduler(FakeScheduler):
        def job(self, job_id: str):
            raise AssertionError("the scheduler was asked")
    final = api.wait(done, on_change, ask_scheduler=False, scheduler=NoScheduler(), tick=0)
    assert seen == [("Queued", ""), ("Starting", "node7"), ("Running", "node7")]
    assert final["url"] == "http://node7:24680/user/alice/lab"


def test_wait_ends_with_the_reason_of_a_failed_session(me, sched):
    done = api.submit(scheduler=sched)
    _write_status(done.session_dir, phase="Completed", failed=True,
                  reason="image X is not in the image store")
    final = api.wait(done, ask_scheduler=False)
    assert (final["status"], final["failed"]) == ("Completed", True)
    assert final["reason"] == "image X is not in the image store"


def test_a_job_gone_without_a_word_ends_the_wait_with_the_cards_reason(me, sched):
    done = api.submit(scheduler=sched)
    sched.known["101"] = JobInfo("101", "jupyter_app", "alice", "CANCELLED")
    final = api.wait(done, scheduler=sched)
    assert final["failed"] and "CANCELLED" in final["reason"]


def test_connection_of_a_running_session(me, sched):
    done = api.submit(scheduler=sched)
    with pytest.raises(SessionFailure, match="not running"):
        api.connection(done)
    _write_status(done.session_dir, phase="Running", port=24680, base_url="/user/alice/")
    with open(os.path.join(done.session_dir, "connection.yml"), "w", encoding="utf-8") as fh:
        fh.write('host: "node7"\nport: 24680\npassword: "pw"\n')
    conn = api.connection(done.session_id)
    assert conn == api.Connection("node7", 24680, "/user/alice/", "pw")
    assert conn.server_url == "http://node7:24680/user/alice/"
    assert conn.login_url == "http://node7:24680/user/alice/lab?token=pw"


def test_cancel_of_an_ended_job_is_not_an_error(me, sched):
    done = api.submit(scheduler=sched)
    assert api.cancel(done, scheduler=sched) == done and sched.cancelled == ["101"]
    sched.cancel_error = "scancel failed: Job/step already completing or completed"
    sched.known["101"] = JobInfo("101", "jupyter_app", "alice", "COMPLETING")
    api.cancel(done, scheduler=sched)
    sched.known["101"] = JobInfo("101", "jupyter_app", "alice", "RUNNING")
    with pytest.raises(SessionFailure, match="already completing"):
        api.cancel(done, scheduler=sched)


def test_sessions_lists_newest_first(me, sched):
    first = api.submit(scheduler=sched)
    _write_status(first.session_dir, created_at="2026-01-01T00:00:00+00:00")
    second = api.submit(scheduler=sched)
    sched.known["102"] = JobInfo("102", "jupyter_app", "alice", "RUNNING")
    cards = api.sessions(scheduler=sched)
    assert [c["session_id"] for c in cards] == [second.session_id, first.session_id]
    assert [c["status"] for c in cards] == ["Starting", "Completed"]


# --- supervisor side -----------------------------------------------------------------------

class FakeSupervisor:
    calls: list[supervisor.RunRequest] = []

    def __init__(self, cfg, req: supervisor.RunRequest) -> None:
        FakeSupervisor.calls.append(req)

    def run(self) -> int:
        return 0


def test_run_hands_a_launchers_options_to_the_supervisor_in_memory(me, tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "Supervisor", FakeSupervisor)
    FakeSupervisor.calls = []
    sid = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"
    assert api.run(local=True, session_id=sid, session_dir=str(tmp_path / sid),
                   command=["jupyterhub-singleuser"], auth="launcher",
                   environment={"JUPYTERHUB_API_TOKEN": SECRET}) == 0
    (req,) = FakeSupervisor.calls
    assert req.launch == LaunchOptions(("jupyterhub-singleuser",), "", "launcher")
    assert req.extra_env == {"JUPYTERHUB_API_TOKEN": SECRET}
    assert not os.path.exists(tmp_path / sid)  # nothing written before the supervisor runs
    assert api.run(local=True, session_id=sid, session_dir=str(tmp_path / sid)) == 0
    assert FakeSupervisor.calls[1].launch is None  # request.json decides


def test_the_supervisor_prefers_options_given_in_memory_and_still_deletes_the_file(tmp_path):
    session_dir = tmp_path / "s"
    session_dir.mkdir()
    (session_dir / ENV_FILE).write_text(json.dumps({"A": "from-file", "B": "b"}))
    (session_dir / "request.json").write_text(json.dumps(
        {"launch": {"command": ["from-request"], "base_url": "", "auth": "token"}}))
    req = supervisor.RunRequest(session_id="x", session_dir=str(session_dir), user="alice",
                                uid=os.getuid(), home=str(tmp_path),
                                launch=LaunchOptions(("given",), "/u/", "launcher"),
                                extra_env={"A": "given"})
    sup = supervisor.Supervisor(config.default(), req)
    sup._read_launch()
    assert sup.launch.command == ("given",) and sup.extra_env == {"A": "given", "B": "b"}
    assert not (session_dir / ENV_FILE).exists()


# --- the CLI over the API ------------------------------------------------------------------

def test_submit_stdin_takes_the_request_as_json(me, sched, monkeypatch, capsys):
    monkeypatch.setattr(api, "get_scheduler", lambda cluster="": sched)
    request = {"cpus": 2, "command": ["jupyterhub-singleuser"], "auth": "launcher",
               "environment": {"JUPYTERHUB_API_TOKEN": SECRET}}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    assert cli.main(["submit", "--stdin", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["job_id"] == "101" and SECRET not in json.dumps(out)
    assert "--cpus-per-task=2" in sched.submitted[0][0]


def test_submit_stdin_refuses_request_flags(me, sched, monkeypatch, capsys):
    monkeypatch.setattr(api, "get_scheduler", lambda cluster="": sched)
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    assert cli.main(["submit", "--stdin", "--cpus", "2"]) == EXIT_USAGE
    assert "--cpus = '2': cannot be combined with --stdin" in capsys.readouterr().err
    assert sched.submitted == []


def test_wait_json_prints_one_card_per_line(me, sched, monkeypatch, capsys):
    monkeypatch.setattr(api, "get_scheduler", lambda cluster="": sched)
    done = api.submit(scheduler=sched)
    _write_status(done.session_dir, phase="Completed", failed=True, reason="broken image")
    assert cli.main(["wait", done.session_id[:8], "--json", "--no-scheduler"]) \
        == EXIT_SESSION_FAILED
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["broken image"]


def test_importing_the_package_loads_no_api_until_used():
    code = ("import sys, sh_jupyter; assert 'sh_jupyter.api' not in sys.modules; "
            "assert sh_jupyter.submit is sh_jupyter.api.submit; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError):
        import sh_jupyter
        sh_jupyter.no_such_name  # noqa: B018


def test_the_integrators_guide_documents_every_public_name():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "integrators.md").read_text(
        encoding="utf-8")
    section = guide.split("## Python API", 1)[1].split("\n## ", 1)[0]
    for name in api.__all__:
        obj = getattr(api, name)
        if callable(obj) and not isinstance(obj, type) and name[0].islower():
            assert f"`{name}(" in section, f"docs/integrators.md's Python API lacks {name}()"
        assert obj.__doc__ or not callable(obj), f"{name} has no docstring"
    import sh_jupyter

    assert set(sh_jupyter.__all__) - {"__version__"} == set(api.__all__)
