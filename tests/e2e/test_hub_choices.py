"""The JupyterHub side of the queue estimate and the image choice, with the real hub, Slurm
and Podman (tests/hub_bed.py): while another user's job holds the node's CPUs, the spawn page's
progress shows Slurm's pending reason and expected start; the options form offers exactly the
site's images; a chosen image runs (its label says so) and an unlisted one fails the spawn
with the list."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request

import pytest

import bed
import hub_bed

U1, U2 = bed.USERS
VARIANT = "localhost/sh-jupyter/jupyterlab-minimal:latest"
PORTS = "[network]\nport_min = 34000\nport_max = 34999\n"


@pytest.fixture(scope="module")
def hubenv(testbed) -> dict[str, str]:
    if not os.path.exists(hub_bed.HUB_ENV):
        pytest.fail(f"missing {hub_bed.HUB_ENV}: run testbed/provision (step 80)")
    return hub_bed.hub_env()


@pytest.fixture(scope="module")
def hub(hubenv, jobs):
    cfg = bed.write_config(
        f'{PORTS}[image]\nname = "{hubenv["HUB_IMAGE"]}"\nstore = "{hubenv["HUB_STORE"]}"\n'
        f'[[images]]\nname = "python"\ndescription = "the site image"\n'
        f'reference = "{hubenv["HUB_IMAGE"]}"\n'
        f'[[images]]\nname = "minimal"\ndescription = "the thin test variant"\n'
        f'reference = "{VARIANT}"\n')
    h = hub_bed.Hub(cfg)
    try:
        h.start()
        yield h
    finally:
        h.close()


def _hog(jobs: list[str]) -> str:
    cpus = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    out = bed.as_user(U1, ["sbatch", "--parsable", f"--cpus-per-task={cpus}", "--mem=1G",
                           "--time=20", "--output=/dev/null", "--chdir=/tmp",
                           "--wrap=sleep 1200"])
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    jobs.append(job)
    bed.wait_for(lambda: bed.job_state(job) == "RUNNING", 60, "the hog job running")
    return job


def _spawn_page(hub: hub_bed.Hub, user: str) -> str:
    """The spawn page as the user sees it after logging in (dummy authenticator)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login = opener.open(f"{hub.url}/hub/login", timeout=30).read().decode()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login)
    assert xsrf, login[:500]
    form = urllib.parse.urlencode({"username": user, "password": hub.password,
                                   "_xsrf": xsrf[1]}).encode()
    opener.open(f"{hub.url}/hub/login", form, timeout=30).read()
    return opener.open(f"{hub.url}/hub/spawn/{user}", timeout=30).read().decode()


def test_the_options_form_offers_exactly_the_sites_images(hub):
    page = _spawn_page(hub, U2)
    assert page.count("<option") == 2 and 'value="python" selected' in page, page[-3000:]
    assert 'value="minimal"' in page and "the thin test variant" in page


def test_a_queued_spawn_shows_slurms_estimate_then_runs_the_chosen_image(hub, jobs):
    hog = _hog(jobs)
    status, body = hub.api("POST", f"users/{U2}/server", body={"image": "minimal"})
    assert status == 202, (status, body)
    messages, last = [], {}
    for event in hub.progress(U2, timeout=300):
        last = event
        messages.append(event.get("message", ""))
        if "Slurm expects it to start at" in messages[-1]:
            subprocess.run(["scancel", hog], check=True)  # now let it run
        if event.get("ready") or event.get("failed"):
            break
    assert any(m.startswith("Queued: waiting in Slurm's queue (Resources: the CPUs, memory "
                            "or GPUs asked for are in use by other jobs); Slurm expects it "
                            "to start at ") for m in messages), messages
    assert last.get("ready"), messages
    state = hub.server(U2).get("state") or {}
    jobs.append(state.get("job_id", ""))
    name = f"epcc-ces-jupyter-{state['session_id']}"
    info = json.loads(bed.podman(U2, "inspect", name).stdout)[0]
    assert info["Config"]["Labels"]["sh-jupyter.image"] == "minimal"
    assert info["ImageName"] == VARIANT
    status, _ = hub.api("DELETE", f"users/{U2}/server", timeout=180)
    assert status in (202, 204)
    bed.wait_for(lambda: not hub.server(U2), 180, "the hub to stop the server", interval=0.5)


def test_an_image_outside_the_list_fails_the_spawn_with_the_list(hub, jobs):
    status, body = hub.api("POST", f"users/{U2}/server", body={"image": "julia"})
    if status == 202:
        events = list(hub.progress(U2))
        failed = events[-1]
    else:
        failed = {"failed": status >= 400, "message": f"HTTP {status}: {json.dumps(body)}"}
    assert failed.get("failed"), failed
    assert "must be one of the site's images: python (the site image); minimal (the thin " \
           "test variant)" in failed["message"], failed
    assert not hub.server(U2)
