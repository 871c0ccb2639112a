"""The portal on login reaches JupyterLab on a compute node through its /node/HOST/PORT/ proxy,
in headless Chromium on login: the card rendered by the Open OnDemand app's own templates from
the connection file the node wrote, the proxy resolving the node's name on login."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import bed
import cluster_bed as cb

U1 = bed.USERS[0]
REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "e2e" / "browser" / "connect.js"
PORTAL = REPO / "tests" / "cluster" / "portal.py"
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
ARTIFACTS = REPO / "test-artifacts"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
SITE = f'{cb.PORTS}[image]\nbase_url = "/node/{{host}}/{{port}}/"\n'


@pytest.fixture(scope="module")
def browser(hosts) -> None:
    need = ("/usr/bin/ruby", "/usr/bin/chromium", f"{BROWSER_MODULES}/playwright-core")
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        pytest.fail(f"missing {missing}: run testbed/provision (steps 10 and 70)")


def test_connect_on_the_card_reaches_the_node_through_the_portal_proxy(browser, cleanup):
    from test_ondemand import FORM_E2E, render  # the one-host suite's dashboard renderer

    cfg = cb.write_config(SITE)
    sub, card = cb.submit(U1, cfg, cleanup, "-w", "node1", "--time", "10")
    conn = cb.connection(U1, sub["session_id"], cfg)
    host, port = conn["host"], conn["port"]
    assert host == "node1" and card["host"] == "node1", (conn, card)
    prefix = f"/node/{host}/{port}/"
    conn_file = os.path.join(sub["session_dir"], "connection.yml")
    rendered = render(FORM_E2E, sub["session_id"], sub["session_dir"], connection=conn_file,
                      running=True)
    assert rendered["connect"]["host"] == "node1"
    # Connect posts the password to the node's login page through the proxy, never in a URL.
    assert f'<form action="{prefix}login" method="post"' in rendered["view"]
    assert "token=" not in rendered["view"]
    card_file = os.path.join(cb.shared_dir("portal-"), f"card-{uuid.uuid4().hex}.html")
    with open(card_file, "w", encoding="utf-8") as fh:
        fh.write(rendered["info"] + rendered["view"])
    os.chmod(card_file, 0o644)

    portal = cb.popen_on("login", [f"{bed.VENV}/bin/python", str(PORTAL), card_file, host,
                                   str(port)], stdout=subprocess.PIPE, text=True)
    try:
        url = portal.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "cluster-portal-connect.png"
        if shot.exists():
            shot.unlink()
        out = cb.on("login", ["node", str(DRIVER), url, str(shot)],
                    env={"NODE_PATH": BROWSER_MODULES}, timeout=180)
    finally:
        cb.stop(portal)
    forwarded = [line.split(" ", 1)[1] for line in portal.stdout.read().splitlines()
                 if line.startswith("forwarded ")]
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["landed"].startswith(f"{url.rstrip('/')}{prefix}lab"), result
    assert result["shell"] and result["started"], result
    assert result["loginForm"] == 0 and "/login" not in result["url"], result
    assert "JupyterLab" in result["title"], result
    assert f"{prefix}api/events/subscribe" in result["sockets"], result
    assert not result["socketErrors"], result
    assert any(p.startswith(f"{prefix}api/") for p in forwarded), forwarded
    assert shot.stat().st_size > 10_000
