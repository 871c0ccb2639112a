"""The hub benchmark's own logic, without the bed: which processes are a job's and which of
them are JupyterLab itself, how the peer's package pins are read, and that the peer hub's
configuration is batchspawner's SlurmSpawner with our spawner's resources and no secret
beyond the hub's own (bench/hub.py, bench/peer.py; the real runs need the test bed)."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
from traitlets.config import Config

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402
import hub as hub_bench  # noqa: E402
import peer  # noqa: E402

import hub_bed  # noqa: E402


def test_a_process_is_in_the_jobs_cgroup_in_any_hierarchy():
    v1 = ("12:memory:/slurm/uid_1001/job_42/step_batch/task_0\n"
          "5:cpuset:/slurm/uid_1001/job_42/step_batch\n1:name=systemd:/user.slice\n")
    v2 = "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n"
    assert bl.in_job_cgroup(v1, "42") and bl.in_job_cgroup(v2, "42")
    assert bl.in_job_cgroup("0::/system.slice/slurmstepd.scope/job_42\n", "42")
    assert not bl.in_job_cgroup(v1, "4") and not bl.in_job_cgroup(v2, "421")
    assert not bl.in_job_cgroup("0::/user.slice/user-1001.slice/session-3.scope\n", "42")


def test_scontrol_listpids_output_is_read_past_its_header():
    out = ("PID      JOBID    STEPID   LOCALID GLOBALID\n"
           "3711     42       batch    0       0\n"
           "3790     42       0        0       0\n"
           "-1       42       extern   -       -\n")
    assert bl.listed_pids(out) == {3711, 3790}
    assert bl.listed_pids("") == set()


OURS = {  # pid: (parent, argv) of a session's job, as root sees them on the node
    10: (1, ["/bin/bash", "/var/spool/slurmd/job42/slurm_script"]),
    11: (10, ["/opt/sh-jupyter/venv/bin/python3", "/opt/sh-jupyter/venv/bin/sh-jupyter",
              "run", "--session-dir", "/home/u/s"]),
    12: (1, ["/usr/bin/conmon", "--api-version", "1"]),
    13: (11, ["/usr/bin/slirp4netns", "--disable-host-loopback"]),
    14: (1, ["catatonit", "-P"]),
    15: (12, ["tini", "--", "jupyterhub-singleuser", "--ip=0.0.0.0"]),
    16: (15, ["/opt/jupyter/bin/python3", "/opt/jupyter/bin/jupyterhub-singleuser",
              "--ip=0.0.0.0"]),
    17: (16, ["/opt/jupyter/bin/python3", "-m", "ipykernel_launcher", "-f", "k.json"]),
}
PEER = {  # batchspawner's job: the batch shell, srun (naming the server), the server
    20: (9, ["/bin/bash", "/var/spool/slurmd/job43/slurm_script"]),
    21: (20, ["srun", "batchspawner-singleuser", "jupyterhub-singleuser"]),
    22: (21, ["srun", "batchspawner-singleuser", "jupyterhub-singleuser"]),
    23: (8, ["/opt/sh-jupyter/bench-peer/singleuser/bin/python3",
             "/opt/sh-jupyter/bench-peer/singleuser/bin/batchspawner-singleuser",
             "jupyterhub-singleuser", "--debug"]),
    24: (23, ["/opt/sh-jupyter/bench-peer/singleuser/bin/python", "-m",
              "ipykernel_launcher"]),
}


def lab_of(table: dict[int, tuple[int, list[str]]]) -> set[int]:
    return hub_bench.lab_of({p: argv for p, (_, argv) in table.items()},
                            {p: parent for p, (parent, _) in table.items()})


def test_jupyterlab_itself_is_the_servers_tree_and_the_containers_init():
    """Everything else of the job is what the spawner adds: our supervisor, conmon, the
    network helper and the pause process; batchspawner's batch shell and srun (whose argv
    names the server, but which is not it)."""
    assert lab_of(OURS) == {15, 16, 17}
    assert lab_of(PEER) == {23, 24}  # its parent, slurmstepd, is root's: not in the table
    assert lab_of({10: OURS[10], 11: OURS[11]}) == set()
    assert hub_bench.label(OURS[11][1], False) == "sh-jupyter run (supervisor)"
    assert hub_bench.label(PEER[23][1], True) == "batchspawner-singleuser (JupyterLab)"
    assert hub_bench.label(PEER[21][1], False) == "srun"


def test_a_round_line_names_the_latest_figure_of_each_series():
    ours, theirs, empty = bl.Series("a"), bl.Series("b"), bl.Series("c")
    ours.add(3.4712)
    theirs.add(1.0)
    theirs.add(5.25)
    assert bl.round_line({"ours": ours, "peer": theirs, "none": empty}) == \
        "  ours 3.47 s, peer 5.25 s"


def test_the_image_freeze_becomes_exact_pins_without_local_installs():
    freeze = ("jupyterlab==4.6.6\n# a comment\n-e git+https://example/x#egg=x\n"
              "sh-jupyter==0.2.0\nsh_jupyter @ file:///work/main\npip==23.0.1\n"
              "Jinja2==3.1.6\nweird ; python_version<'3'\n")
    assert peer.pins(freeze) == ["jupyterlab==4.6.6", "sh-jupyter==0.2.0", "pip==23.0.1",
                                 "Jinja2==3.1.6"]
    assert peer.pins(freeze, peer.OURS) == ["jupyterlab==4.6.6", "pip==23.0.1", "Jinja2==3.1.6"]


def test_a_stamp_changes_with_anything_the_peer_is_built_from():
    base = {"schema": 1, "batchspawner": "1.3.0", "packages": ["a==1", "b==2"]}
    assert peer.digest(base) == peer.digest(dict(reversed(base.items())))
    assert peer.digest(base) != peer.digest({**base, "packages": ["a==1", "b==3"]})
    assert peer.digest(base) != peer.digest({**base, "batchspawner": "1.2.0"})


@pytest.fixture
def peer_hub():
    hub = peer.PeerHub("", poll_interval=30, jupyterhub="/x/hub/bin/jupyterhub",
                       log_level="INFO", singleuser="/x/singleuser", host="10.1.2.3",
                       token="service-token-1", password="dummy-password-2",
                       proxy_token="proxy-token-3")
    yield hub
    shutil.rmtree(hub.workdir, ignore_errors=True)


def load(text: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    """Run a jupyterhub_config.py as JupyterHub would (batchspawner stubbed: only imported)."""
    monkeypatch.setitem(sys.modules, "batchspawner", types.ModuleType("batchspawner"))
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config


def test_the_peer_hub_runs_batchspawners_slurm_spawner_with_our_resources(peer_hub,
                                                                        monkeypatch):
    c = load(Path(peer_hub.config).read_text(encoding="utf-8"), monkeypatch)
    assert c.JupyterHub.spawner_class == "batchspawner.SlurmSpawner"
    spawner = c.SlurmSpawner
    assert spawner.exec_prefix.endswith("runuser -u {username} --")
    assert spawner.exec_prefix.startswith("/")  # runuser is in sbin, not on the jobs' PATH
    assert spawner.startup_poll_interval == 0.5
    assert (spawner.req_nprocs, spawner.req_memory, spawner.req_runtime) == (
        str(hub_bed.CPUS), f"{hub_bed.MEMORY_GIB}G", hub_bed.WALLTIME)
    assert (spawner.start_timeout, spawner.http_timeout) == (180, 60)
    assert spawner.environment["PATH"].startswith("/x/singleuser/bin:")
    untouched = {"batch_script", "batch_submit_cmd", "batch_query_cmd", "batch_cancel_cmd",
                 "req_srun", "state_exechost_re"}
    assert not untouched & set(spawner)  # batchspawner's documented defaults
    # The rest is the bed's hub: same authenticator, service, poll interval; INFO, because
    # batchspawner logs the environment it submits with (the server's token) at DEBUG.
    assert c.JupyterHub.log_level == "INFO" and c.Spawner.poll_interval == 30
    assert c.JupyterHub.hub_connect_url == f"http://10.1.2.3:{peer_hub.hub_port}"
    assert c.JupyterHub.services == [{"name": "tester", "api_token": "service-token-1"}]
    assert "SHJupyterSpawner" not in c and "hub_connect_url" not in c.Spawner
    assert peer_hub._env()["PATH"].split(":")[1] == "/x/hub/bin"
    assert "proxy-token-3" not in Path(peer_hub.config).read_text(encoding="utf-8")
