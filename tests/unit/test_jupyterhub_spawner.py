"""The spawner's decisions, with the user-side CLI and the job poller replaced by scripted
stand-ins (the real ones run in tests/e2e/test_jupyterhub.py): what it submits and where the
token goes, how it fails a spawn, when poll() lets a server go, and what stop() waits for."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from types import SimpleNamespace

import pytest
from jupyterhub.spawner import SpawnException

from sh_jupyter import config
from sh_jupyter.errors import SchedulerUnavailable
from sh_jupyter.jupyterhub import SHJupyterSpawner, jobs, usercli
from sh_jupyter.jupyterhub import spawner as spawner_mod
from sh_jupyter.jupyterhub.spawner import check_host, on_node, route_target
from sh_jupyter.slurm.squeue_json import JobInfo
from sh_jupyter.slurm.watcher import Backoff, JobWatcher

TOKEN = "hub-api-token-4fJq9x"
SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"


def job(state: str, **kw) -> JobInfo:
    return JobInfo("4711", "jupyter_app", "root", state, **kw)


class Script:
    """The user-side CLI and the poller, as the test scripts them; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.cards: list[dict | bool] = []  # False: no card within the check interval
        self.views: list[object] = []
        self.status_card = {"status": "Completed", "failed": True, "reason": ""}
        self.watched: set[str] = set()
        self.hurried: set[str] = set()
        self.hurries = 0

    async def call(self, cli, *args, stdin=None, timeout=120):
        self.calls.append((cli.argv(*args), stdin))
        if args[0] == "submit":
            return {"job_id": "4711", "session_id": SID, "session_dir": "/x/" + SID}
        if args[0] == "status":
            return self.status_card
        return {"cancelled": True}

    async def follow(self, cli, session_id):
        script = self

        class Follower:
            async def next(self, timeout):
                await asyncio.sleep(0)
                return script.cards.pop(0) if script.cards else False

            async def close(self):
                script.calls.append((["closed"], None))
        self.calls.append((cli.argv("wait", session_id, "--json", "--no-scheduler"), None))
        return Follower()

    # JobStates
    def watch(self, job_id, user=None):
        self.watched.add(job_id)

    def view(self, job_id):
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]

    def forget(self, job_id):
        self.watched.discard(job_id)
        self.hurried.discard(job_id)

    def hurry(self, job_id, interval=0.1):
        self.hurried.add(job_id)
        self.hurries += 1

    def calm(self, job_id):
        self.hurried.discard(job_id)

    def seconds_to_next(self):
        return 0.0

    def commands(self) -> list[str]:
        return [argv[argv.index("--") + 2] if "--" in argv else argv[0]
                for argv, _ in self.calls]


class Spawner(SHJupyterSpawner):
    def get_env(self):
        return {"JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
                "PATH": "/hub/bin", "JUPYTER_TOKEN": "x"}


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    s = Script()
    monkeypatch.setattr(usercli, "call", s.call)
    monkeypatch.setattr(usercli, "follow", s.follow)
    monkeypatch.setattr(jobs, "shared", lambda cluster="": s)
    return s


@pytest.fixture
def spawner(script: Script, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Spawner:
    site = tmp_path / "site.toml"  # the hub's site config names the session ports
    site.write_text("[network]\nport_min = 20000\nport_max = 29999\n", encoding="utf-8")
    monkeypatch.setenv(config.ENV_VAR, str(site))
    sp = Spawner(user=SimpleNamespace(name="root"), check_interval=0.001, cancel_timeout=5)
    sp._server = SimpleNamespace(base_url="/user/root/")
    sp.run_as = ["runuser", "-u", "{username}", "--"]
    sp.sh_jupyter = ["/opt/sh-jupyter/venv/bin/sh-jupyter"]
    return sp


def run(coro):
    return asyncio.run(coro)


def test_start_submits_as_the_user_with_the_token_on_stdin_only(spawner, script, caplog):
    caplog.set_level(logging.DEBUG)
    script.cards = [False, {"status": "Queued", "reason": ""},
                    {"status": "Starting", "host": "node7", "reason": ""},
                    {"status": "Running", "host": "node7", "reason": "",
                     "url": "http://node7:24680/user/root/lab",
                     "message": "JupyterLab is running in Podman container c"}]
    script.views = [job("RUNNING", node="node7")]
    assert run(spawner.start()) == "http://node7:24680"
    (submit_argv, stdin), *_ = script.calls
    assert submit_argv == ["runuser", "-u", "root", "--", "/opt/sh-jupyter/venv/bin/sh-jupyter",
                           "submit", "--stdin", "--json"]
    request = json.loads(stdin)
    assert request["command"] == ["jupyterhub-singleuser"]
    assert (request["base_url"], request["auth"]) == ("/user/root/", "launcher")
    assert request["environment"] == {"JUPYTERHUB_API_TOKEN": TOKEN,
                                      "JUPYTERHUB_API_URL": "http://hub:8081/hub/api"}
    assert all(TOKEN not in " ".join(argv) for argv, _ in script.calls)
    assert spawner.get_state() == {"job_id": "4711", "session_id": SID}
    assert TOKEN not in json.dumps(spawner.get_state()) and TOKEN not in caplog.text
    messages = [e["message"].split(":")[0] for e in spawner._events]
    assert messages == ["Queued", "Starting", "Starting", "Running"]
    assert script.commands()[-1] == "closed"


def test_a_session_that_ends_before_its_server_answers_fails_the_spawn_with_its_reason(
        spawner, script):
    reason = "image localhost/nope:latest is not in the image store /var/lib/x"
    script.cards = [{"status": "Queued", "reason": ""},
                    {"status": "Completed", "failed": True, "reason": reason}]
    script.views = [job("RUNNING")]
    with pytest.raises(SpawnException) as info:
        run(spawner.start())
    assert reason in info.value.message
    assert "cancel" in script.commands()  # no orphan job, whatever state it was in


def test_a_job_that_dies_without_a_word_fails_the_spawn_with_the_cards_reason(spawner, script):
    script.cards = [False, False]
    script.views = [job("PENDING", reason="Priority"), None]
    script.status_card = {"status": "Completed", "failed": True,
                          "reason": "the job was cancelled (CANCELLED) while the session "
                                    "was Queued"}
    with pytest.raises(SpawnException, match="CANCELLED"):
        run(spawner.start())
    assert script.commands()[-3:] == ["status", "closed", "cancel"]
    assert any("waiting in Slurm's queue (Priority: jobs of higher priority" in e["message"]
               for e in spawner._events)


def test_a_queued_spawn_shows_slurms_reason_and_start_estimate():
    now = 1_796_600_000
    view = job("PENDING", reason="Resources")
    view = jobs.JobInfo(view.job_id, view.name, view.user, "PENDING", "Resources",
                        start_time=now + 23 * 60)
    line = spawner_mod.queue_message(view, now=now)
    assert line.startswith("Queued: waiting in Slurm's queue (Resources: the CPUs, memory or "
                           "GPUs asked for are in use by other jobs)"), line
    assert line.endswith("; Slurm expects it to start at "
                         + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + 23 * 60))
                         + " (in about 23 min)"), line
    unknown = jobs.JobInfo("1", "", "", "PENDING", "None")
    assert spawner_mod.queue_message(unknown) == "Queued: waiting in Slurm's queue"


def test_an_unknown_job_state_while_starting_keeps_waiting(spawner, script):
    script.cards = [False, False, {"status": "Running", "host": "n", "reason": "",
                                   "url": "http://n:24001/user/root/lab", "message": "m"}]
    script.views = [jobs.Unknown("squeue failed: slurm_load_jobs error"), job("RUNNING", node="n")]
    assert run(spawner.start()) == "http://n:24001"


def test_poll_keeps_a_server_whose_job_state_is_unknown(spawner, script):
    spawner.load_state({"job_id": "4711", "session_id": SID})
    for view, expected in ((job("RUNNING"), None),
                           (jobs.Unknown("squeue: Unable to contact slurm controller"), None),
                           (job("COMPLETING", exit_code=0), 0),
                           (job("FAILED", exit_code=3), 3),
                           (None, 0)):
        script.views = [view]
        assert run(spawner.poll()) == expected, view
        assert ("4711" in script.watched) is (expected is None)  # an ended job is let go


def test_poll_never_raises(spawner, script, monkeypatch):
    spawner.load_state({"job_id": "4711", "session_id": SID})

    class Broken(Script):
        def view(self, job_id):
            raise RuntimeError("the poller broke")
    monkeypatch.setattr(jobs, "shared", lambda cluster="": Broken())
    assert run(spawner.poll()) is None


def test_the_shared_poller_reads_a_failing_squeue_as_unknown():
    class Failing:
        def states(self, job_ids, user=None):
            raise SchedulerUnavailable("squeue failed: Unable to contact slurm controller")
    watcher = jobs.JobStates(Failing())
    watcher.watch("1", "alice")
    view = watcher.view("1")
    assert jobs.is_unknown(view) and not jobs.has_ended(view) and "contact" in view.error
    assert jobs.has_ended(None) and jobs.has_ended(job("CANCELLED"))
    assert not jobs.has_ended(job("RUNNING")) and not jobs.is_unknown(job("PENDING"))


def test_stop_cancels_and_waits_for_the_epilog(spawner, script):
    spawner.load_state({"job_id": "4711", "session_id": SID})
    script.views = [job("RUNNING"), job("COMPLETING"), job("CANCELLED")]
    run(spawner.stop())
    assert script.commands() == ["cancel"]
    assert script.views == [job("CANCELLED")]  # it looked until the job had really ended
    spawner.clear_state()
    assert spawner.get_state() == {}


def test_progress_yields_events_as_they_come(spawner):
    async def scenario():
        got = []

        async def consume():
            async for event in spawner.progress():
                got.append(event["message"])
                if len(got) == 2:
                    return
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)
        spawner._event(10, "Queued: one")
        await asyncio.sleep(0)
        spawner._event(50, "Starting: two")
        await asyncio.wait_for(task, 5)
        return got
    assert run(scenario()) == ["Queued: one", "Starting: two"]


def test_user_options_are_checked(spawner):
    spawner.user_options = {"cpus": 2, "reference": "registry.invalid/evil:latest"}
    with pytest.raises(SpawnException, match="unknown options"):
        spawner.session_request()
    # An image is passed on by name; the user-side submit checks it against the site's list.
    spawner.user_options = {"image": "r"}
    assert spawner.session_request()["image"] == "r"
    spawner.user_options = {"cpus": 2, "walltime": "1:00:00"}
    spawner.req_memory_gib = 3
    request = spawner.session_request()
    assert (request["cpus"], request["memory_gib"], request["walltime"]) == (2, 3, "1:00:00")
    assert "nodelist" not in request
    spawner.req_nodelist = "node[1-2]"
    assert spawner.session_request()["nodelist"] == "node[1-2]"
    spawner.user_options = {"nodelist": "gpu01"}  # a user's choice wins over the site's
    assert spawner.session_request()["nodelist"] == "gpu01"


def test_the_user_side_process_never_gets_the_hubs_environment(monkeypatch):
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-secret")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    cli = usercli.UserCLI("alice", "/home/alice", ("sudo", "-n", "-u", "{username}", "--"),
                          ("/usr/bin/sh-jupyter",), "/etc/site.toml",
                          usercli.pass_env(["SLURM_CONF", "NOT_SET"]))
    assert cli.argv("cancel", SID, "--json") == [
        "sudo", "-n", "-u", "alice", "--", "/usr/bin/sh-jupyter", "--config",
        "/etc/site.toml", "cancel", SID, "--json"]
    env = cli.environ()
    assert env == {"PATH": usercli.PATH, "HOME": "/home/alice", "USER": "alice",
                   "LOGNAME": "alice", "LANG": "C.UTF-8", "SLURM_CONF": "/etc/slurm/slurm.conf"}
    assert "proxy-secret" not in json.dumps(env)
    assert usercli.default_run_as(0)[0] in ("/usr/bin/setpriv", "/bin/setpriv")


def test_a_user_side_failure_is_its_one_line_message():
    cli = usercli.UserCLI("nobody", "/", (), ("sh",), "", ())

    async def failing():
        # `sh -c` stands in for sh-jupyter: it prints its one-line error and exits 2.
        return await usercli.call(cli, "-c", "echo 'sh-jupyter: --cpus = 99: too many' >&2; "
                                  "exit 2")
    with pytest.raises(usercli.CLIError) as info:
        run(failing())
    assert (str(info.value), info.value.status) == ("--cpus = 99: too many", 2)
    assert os.environ.get("CONFIGPROXY_AUTH_TOKEN") is None
    missing = usercli.UserCLI("nobody", "/", ("/no/such/runuser", "-u", "{username}", "--"),
                              ("sh",), "", ())
    with pytest.raises(usercli.CLIError, match="could not run /no/such/runuser"):
        run(usercli.call(missing, "status"))


def test_setpriv_names_the_user_by_ids():
    """Root's default prefix is setpriv, which execs sh-jupyter itself: ending it is one signal
    (runuser forwards a SIGTERM, then sleeps 2 s before it exits)."""
    import pwd

    me = pwd.getpwuid(os.getuid())
    cli = usercli.UserCLI(me.pw_name, me.pw_dir, usercli.default_run_as(0), ("sh-jupyter",))
    assert cli.argv("list")[1:] == [f"--reuid={me.pw_uid}", f"--regid={me.pw_gid}",
                                    "--init-groups", "--", "sh-jupyter", "list"]


# --- what the user-side CLI prints is the user's: checked before squeue or the proxy sees it --

def running_card(url: str, host: str = "node7") -> dict:
    return {"status": "Running", "host": host, "reason": "", "url": url, "message": "m"}


@pytest.mark.parametrize("job_id", ["1; rm -rf /", "--help", "", "12a", "\uff11\uff12", "4711\n",
                                    "12345678901", None, True, ["4711"], -5])
def test_a_job_id_that_is_not_digits_fails_the_spawn(spawner, script, job_id, monkeypatch):
    """As the user, make `submit --json` print a job id that is not one (the user shapes
    what their own process prints): it never reaches squeue or the hub's state."""
    async def call(cli, *args, stdin=None, timeout=120):
        script.calls.append((cli.argv(*args), stdin))
        if args[0] == "submit":
            return {"job_id": job_id, "session_id": SID}
        return {"cancelled": True}
    monkeypatch.setattr(usercli, "call", call)
    with pytest.raises(SpawnException, match="not a Slurm job id") as info:
        run(spawner.start())
    assert info.value.reason == "bad-card"
    assert script.watched == set() and spawner.get_state() == {}
    assert script.commands() == ["submit", "cancel"]  # the session made is not left behind


@pytest.mark.parametrize("session_id", ["../../etc", "--config=/tmp/x", "", None, SID + "x"])
def test_a_session_id_that_is_not_a_uuid_fails_the_spawn(spawner, script, session_id,
                                                       monkeypatch):
    async def call(cli, *args, stdin=None, timeout=120):
        script.calls.append((cli.argv(*args), stdin))
        return {"job_id": "4711", "session_id": session_id}
    monkeypatch.setattr(usercli, "call", call)
    with pytest.raises(SpawnException, match="no session id"):
        run(spawner.start())
    assert script.commands() == ["submit"] and spawner.get_state() == {}


@pytest.mark.parametrize("url", [
    "http://evil.example/x:24680/user/root/lab",   # a path in the host
    "http://evil.example/:24680/user/root/lab",
    "http://node7:0/user/root/lab",                 # port 0
    "http://node7:70000/user/root/lab",             # past 65535
    "http://node7:80a/user/root/lab",
    "http://node7:80/user/root/lab",                # outside the site's session ports
    "http://node7/user/root/lab",                   # no port
    "https://node7:24680/user/root/lab",            # another scheme
    "http://user:pw@node7:24680/user/root/lab",     # credentials in the URL
    "http://node7:24680/user/other/lab",            # another server's path
    "http://node7:24680//evil.example/lab",
    "http://node7:24680/user/root/lab?x=1",
    "http://node7:24680/user/root/lab\r\nSet-Cookie: a=b",
    "http://evil/",
    "javascript:alert(1)",
    "",
    None,
    24680,
])
def test_a_card_url_that_is_not_this_servers_fails_the_spawn(spawner, script, url):
    """As the user, rewrite the session's status file so the Running card points somewhere
    else (another host, a path, a port outside the session range): the spawn fails with a
    clear message and the proxy is never routed there."""
    script.cards = [running_card(url)]
    script.views = [job("RUNNING", node="node7")]
    with pytest.raises(SpawnException) as info:
        run(spawner.start())
    assert info.value.reason == "bad-card", info.value.message
    assert "cancel" in script.commands()


@pytest.mark.parametrize("host", ["evil.example/x", "a b", "-node7", "node7:80", "x" * 300,
                                  "node7\n", "[::1]", "::g"])
def test_a_malformed_host_is_refused(host):
    with pytest.raises(SpawnException, match="not a host name or IP"):
        check_host(host)


def test_well_formed_hosts_and_urls_pass():
    assert check_host("node7") == "node7" and check_host("n-1.cluster.example") == \
        "n-1.cluster.example"
    assert check_host("10.1.2.3") == "10.1.2.3" and check_host("fe80::1") == "fe80::1"
    assert route_target("http://node7:24680/user/root/lab", "/user/root/",
                        (20000, 29999)) == ("node7", 24680)
    assert route_target("http://::1:24680/user/root/lab", "/user/root/",
                        (20000, 29999)) == ("::1", 24680)


def test_the_route_must_be_the_jobs_node_per_slurm(spawner, script):
    """As the user, point the Running card at another node (say one where another user's
    server or an internal service listens in the session port range): Slurm runs the job
    elsewhere, so the spawn fails."""
    script.cards = [running_card("http://node9:24680/user/root/lab", host="node9")]
    script.views = [job("RUNNING", node="node7")]
    with pytest.raises(SpawnException, match="Slurm runs job 4711 on node7"):
        run(spawner.start())


def test_a_node_name_under_its_domain_or_resolving_alike_is_the_node(spawner, script):
    assert on_node("node7.cluster.example", "node7") and on_node("NODE7", "node7")
    assert on_node("localhost", "127.0.0.1")  # both resolve to the loopback address
    assert not on_node("node77", "node7") and not on_node("node7", "node[7-8]")
    assert not on_node("node7", "")
    script.cards = [running_card("http://127.0.0.1:24680/user/root/lab", host="127.0.0.1")]
    script.views = [job("RUNNING", node="localhost")]
    assert run(spawner.start()) == "http://127.0.0.1:24680"


def test_the_route_waits_for_slurm_to_name_the_node(spawner, script):
    """A Running card while squeue fails, or while the poller's last look still says
    PENDING: the hub waits for Slurm to name the node (never taking it on the user's word)."""
    script.cards = [running_card("http://node7:24680/user/root/lab")]
    script.views = [jobs.Unknown("squeue failed"), job("PENDING", reason="Priority"),
                    job("RUNNING", node="node7")]
    assert run(spawner.start()) == "http://node7:24680"
    assert script.views == [job("RUNNING", node="node7")]


def test_a_running_job_without_a_node_fails_the_spawn(spawner, script):
    script.cards = [running_card("http://node7:24680/user/root/lab")]
    script.views = [job("RUNNING")]
    with pytest.raises(SpawnException, match="Slurm names no node for job 4711"):
        run(spawner.start())


# --- no fixed waits: Slurm is asked at once, then every 0.1 s, when a change is expected -----

class Slurm:
    """The Slurm access layer under a real JobWatcher: answers states() from a script of
    views per call (the last one repeats) and records when each call came."""

    name = "fake"

    def __init__(self, *views) -> None:
        self.views = list(views)
        self.at: list[float] = []

    def states(self, job_ids, user=None):
        self.at.append(time.monotonic())
        view = self.views.pop(0) if len(self.views) > 1 else self.views[0]
        return {i: view for i in job_ids}


def slow_watcher(monkeypatch, slurm: Slurm) -> JobWatcher:
    """A shared poller that, left to its own pace, would next ask Slurm 30 s from now."""
    watcher = JobWatcher(slurm, Backoff(30.0, 1.0, 30.0))
    monkeypatch.setattr(jobs, "shared", lambda cluster="": watcher)
    return watcher


def test_a_running_card_makes_the_poller_ask_slurm_at_once(spawner, script, monkeypatch):
    """The poller last saw the job PENDING and would not look again for 30 s: the Running
    card makes it ask Slurm at once, and the spawn is routed as soon as Slurm names the node
    (not at the poller's next tick, nor after a check_interval of its own)."""
    slurm = Slurm(job("PENDING", reason="Priority"), job("RUNNING", node="node7"))
    watcher = slow_watcher(monkeypatch, slurm)
    spawner.check_interval = 5.0
    script.cards = [running_card("http://node7:24680/user/root/lab")]
    t0 = time.monotonic()
    assert run(spawner.start()) == "http://node7:24680"
    assert time.monotonic() - t0 < 2.0
    assert len(slurm.at) == 2  # the poller's first look, then the hurried one at once
    assert watcher._hurried == {}  # calmed: the poller backs off again


def test_the_route_is_confirmed_without_a_second_look_when_the_poller_knows(
        spawner, script, monkeypatch):
    slurm = Slurm(job("RUNNING", node="node7"))
    slow_watcher(monkeypatch, slurm)
    script.cards = [False, running_card("http://node7:24680/user/root/lab")]
    assert run(spawner.start()) == "http://node7:24680"
    assert len(slurm.at) == 1  # the look before the card already named the node


def test_a_hurried_look_that_still_lacks_the_node_is_repeated_every_tenth_of_a_second(
        spawner, script, monkeypatch):
    slurm = Slurm(job("PENDING"), job("PENDING"), job("PENDING"), job("RUNNING", node="node7"))
    slow_watcher(monkeypatch, slurm)
    spawner.check_interval = 5.0
    script.cards = [running_card("http://node7:24680/user/root/lab")]
    assert run(spawner.start()) == "http://node7:24680"
    gaps = [b - a for a, b in zip(slurm.at[1:], slurm.at[2:])]
    assert len(slurm.at) == 4 and all(0.08 <= g < 1.0 for g in gaps), gaps


def test_stop_polls_slurm_every_tenth_of_a_second_until_the_job_is_gone(
        spawner, script, monkeypatch):
    """After scancel the job is asked about at once and then every 0.1 s (not at the
    poller's backed-off pace, here 30 s) until Slurm no longer lists it as active."""
    slurm = Slurm(job("RUNNING", node="node7"), job("COMPLETING"), job("COMPLETING"),
                  job("CANCELLED"))
    watcher = slow_watcher(monkeypatch, slurm)
    spawner.check_interval = 5.0
    spawner.load_state({"job_id": "4711", "session_id": SID})
    watcher.watch("4711", "root")
    watcher.view("4711")  # the poller has looked just now: the next look is 30 s away
    t0 = time.monotonic()
    run(spawner.stop())
    took = time.monotonic() - t0
    assert script.commands() == ["cancel"]
    assert len(slurm.at) == 4 and took < 2.0
    gaps = [b - a for a, b in zip(slurm.at[1:], slurm.at[2:])]
    assert all(0.08 <= g < 1.0 for g in gaps), gaps  # paced, never a busy loop
    assert "4711" not in watcher._users and watcher._hurried == {}


def test_stop_now_does_not_wait_for_the_job(spawner, script, monkeypatch):
    slurm = Slurm(job("RUNNING", node="node7"))
    watcher = slow_watcher(monkeypatch, slurm)
    spawner.load_state({"job_id": "4711", "session_id": SID})
    run(spawner.stop(now=True))
    assert script.commands() == ["cancel"] and slurm.at == []
    assert watcher._hurried == {}
