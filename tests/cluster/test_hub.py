"""JupyterHub on login spawns on a compute node: the user logs in in headless Chromium on login,
lands in JupyterLab running on node2, runs a cell (the server on the node reached the hub on
login by its name on the cluster's network), and the server stops: nothing stays on the node."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

import bed
import cluster_bed as cb
import hub_bed

U1 = bed.USERS[0]
REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "e2e" / "browser" / "hub.js"
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def hub(hosts):
    need = (hub_bed.HUB_ENV, hub_bed.JUPYTERHUB, "/usr/bin/chromium",
            f"{BROWSER_MODULES}/playwright-core")
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        pytest.fail(f"missing {missing}: run testbed/provision (steps 50, 70 and 80)")
    env = hub_bed.hub_env()
    # Spawns land on node2: its hostname is not its Slurm name, and it is not login.
    site = cb.write_config(f'{cb.PORTS}[image]\nname = "{env["HUB_IMAGE"]}"\n'
                           f'store = "{env["HUB_STORE"]}"\n')
    workdir = tempfile.mkdtemp(prefix="hub-", dir=cb.CONFIGS)
    h = cb.ClusterHub(site, workdir=workdir, host="login",
                   extra_config='c.SHJupyterSpawner.req_nodelist = "node2"\n')
    os.chmod(workdir, 0o700)
    try:
        h.start()
        yield h
    finally:
        h.close()


def test_the_hub_on_login_spawns_on_a_node_and_runs_a_cell(hub):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "cluster-hub-lab.png"
    if shot.exists():
        shot.unlink()
    job = ""
    try:
        out = cb.on("login", ["node", str(DRIVER), hub.url, U1, str(shot)], timeout=400,
                    env={"NODE_PATH": BROWSER_MODULES, hub_bed.PASSWORD_FIELD: hub.password})
        state = hub.server(U1).get("state") or {}
        job = state.get("job_id", "")
        assert out.returncode == 0, out.stderr[-3000:] + hub.log()[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["landed"].startswith(f"{hub.url}/user/{U1}/lab"), result
        assert result["shell"] and result["output"] == "42", result
        assert job and cb.job_node(job) == "node2", (state, cb.job_node(job))
        name = f"epcc-ces-jupyter-{state['session_id']}"
        assert name in cb.containers(U1, "node2")
        # The single-user server on node2 reached the hub on login by its name there.
        _pid, env = hub_bed.singleuser_process(U1)
        assert env.get("JUPYTERHUB_API_URL", "").startswith("http://login:"), env
        assert hub.server(U1).get("ready")

        status, _ = hub.api("DELETE", f"users/{U1}/server")
        assert status in (202, 204), status
        bed.wait_for(lambda: not hub.server(U1), 60, "the hub to forget the server")
        bed.wait_for(lambda: cb.job_state(job) not in ("RUNNING", "COMPLETING"), 60,
                     f"job {job} to end", interval=0.2)
        bed.wait_for(lambda: name not in cb.containers(U1, "node2"), 30, f"{name} removal")
        assert f"job={job} " not in cb.hooks_log("node1")
    finally:
        if job:
            cb.on("login", ["scancel", job])
