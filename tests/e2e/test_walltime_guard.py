"""The walltime guard in headless Chromium through a real Slurm session of a few minutes: the
notice shows the right time left, and a notebook cell edited and left unsaved by an idle user
is on disk after the job's walltime ends it."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

import bed

U1 = bed.USERS[0]
REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "e2e" / "browser" / "walltime.js"
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
ARTIFACTS = REPO / "test-artifacts"
FIRST, LAST, SAVE = 150, 100, 60
SITE = bed.E2E_PORTS + (f"[walltime]\nfirst_warning = {FIRST}\nlast_warning = {LAST}\n"
                        f"save_before = {SAVE}\n")
PERSIST = ".local/share/ondemand/apps/jupyter_app"
TYPED = "  # typed and never saved by hand"


def _seconds(text: str) -> int:
    """'This session ends in 2 min 25 s, ...' -> 145."""
    match = re.search(r"ends in (?:(\d+) min)?\s*(?:(\d+) s)?", text)
    assert match and (match[1] or match[2]), text
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def _slurm_end(job: str) -> int:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                         check=True, env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
    return int(out.stdout.strip())


def _put_notebook(port: int, token: str, path: str) -> None:
    notebook = {"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
                   "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/{path}", method="PUT",
                                 data=json.dumps(notebook).encode(),
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


def test_an_idle_users_unsaved_cell_is_saved_before_the_walltime_ends_the_session(
        testbed, cleanup):
    missing = [t for t in ("node", "/usr/bin/chromium", f"{BROWSER_MODULES}/playwright-core")
               if not (shutil.which(t) or os.path.exists(t))]
    if missing:
        pytest.fail(f"missing {missing}: run testbed/provision (steps 10 and 70)")
    cfg = bed.write_config(SITE)
    sub, _ = bed.start(U1, cfg, cleanup, "--time", "3")
    sid, job = sub["session_id"], sub["job_id"]
    conn = bed.connection(U1, sid, cfg)
    end = _slurm_end(job)
    with open(os.path.join(sub["session_dir"], "jupyter-config", "labconfig",
                           "page_config.json"), encoding="utf-8") as fh:
        page = json.load(fh)
    assert page == {"shJupyterJobEnd": str(end), "shJupyterWalltimeWarnings": f"{FIRST},{LAST}",
                    "shJupyterWalltimeSave": str(SAVE)}, (page, end)

    name = f"guard-{sid[:8]}.ipynb"
    _put_notebook(conn["port"], conn["password"], f"mnt/jupyter_host/{name}")
    on_disk = Path(pwd.getpwnam(U1).pw_dir) / PERSIST / name
    assert on_disk.exists() and TYPED not in on_disk.read_text(encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    shots = ARTIFACTS / "walltime-guard"
    url = (f"http://127.0.0.1:{conn['port']}/lab/tree/mnt/jupyter_host/{name}"
           f"?token={conn['password']}")
    browser = subprocess.run(["node", str(DRIVER), url, TYPED, str(shots), "240"],
                             capture_output=True, text=True, check=False, timeout=300,
                             env={**os.environ, "NODE_PATH": BROWSER_MODULES})
    result = json.loads(browser.stdout.strip().splitlines()[-1]) if browser.stdout.strip() \
        else {}
    assert browser.returncode == 0, (browser.stderr, result)
    assert result["dirty"] and name in result["tab"], result
    # The notice: the time left as the job's own end says, within the guard's 5 s tick.
    stated = _seconds(result["notice"])
    assert FIRST - 10 <= stated <= FIRST, result
    assert abs(stated - (end - result["noticeAt"])) <= 8, (result, end)
    # The save: shortly before the end, of the notebook, and on disk at once.
    # (JupyterLab cuts a long notice short: the file on disk is the proof of what was saved.)
    assert result["saved"].startswith("Saved before the session ends: ") \
        and result["savedAt"] < end, (result, end)
    assert end - result["savedAt"] <= SAVE + 8, (result, end)
    assert TYPED in on_disk.read_text(encoding="utf-8")
    # Then the walltime ends the session as ever; the edit stays.
    bed.wait_for(lambda: bed.job_state(job) == "TIMEOUT", end - result["savedAt"] + 90,
                 "job TIMEOUT", interval=1)
    assert f"epcc-ces-jupyter-{sid}" not in bed.containers_of(U1)
    saved = json.loads(on_disk.read_text(encoding="utf-8"))
    assert TYPED in "".join(saved["cells"][0]["source"]), saved["cells"][0]
    on_disk.unlink()
