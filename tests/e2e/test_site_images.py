"""A choice of site images through real Slurm sessions: the site's list and nothing else; the
card and the container's labels say which image runs, and the container really runs it (the
bed's thin variant sets SH_JUPYTER_TESTBED_IMAGE=minimal, testbed/steps/40-image.sh)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import bed

U1 = bed.USERS[0]
VARIANT = "localhost/sh-jupyter/jupyterlab-minimal:latest"
SITE = bed.E2E_PORTS + f"""
[[images]]
name = "python"
description = "JupyterLab on Debian's Python"
reference = "{bed.IMAGE}"
[[images]]
name = "minimal"
description = "the thin test variant"
reference = "{VARIANT}"
"""
SESSIONS_REL = "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output"


def _sessions(user: str) -> set[str]:
    root = os.path.join(pwd.getpwnam(user).pw_dir, SESSIONS_REL)
    return set(os.listdir(root)) if os.path.isdir(root) else set()


def _queue(user: str) -> str:
    return subprocess.run(["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True,
                          text=True, check=False).stdout


def _inspect(user: str, name: str) -> dict:
    out = bed.podman(user, "inspect", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_an_image_outside_the_sites_list_is_refused_before_anything_exists(testbed):
    cfg = bed.write_config(SITE)
    queued, sessions = _queue(U1), _sessions(U1)
    for how in ("flags", "stdin"):
        if how == "flags":
            out = bed.submit(U1, "--image", bed.IMAGE, config=cfg)
        else:
            out = bed.as_user(U1, [bed.SH, "--config", cfg, "submit", "--stdin", "--json"],
                              input=json.dumps({"image": "julia"}))
        assert out.returncode == 2, out.stdout + out.stderr
        line = out.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith("sh-jupyter: --image = ")
        assert "must be one of the site's images: python (JupyterLab on Debian's Python); " \
               "minimal (the thin test variant)" in line, line
    assert _queue(U1) == queued and _sessions(U1) == sessions


def test_the_chosen_image_runs_and_is_on_the_card_and_labels(testbed, cleanup):
    cfg = bed.write_config(SITE)
    listed = json.loads(bed.as_user(U1, [bed.SH, "--config", cfg, "images", "--json"]).stdout)
    assert [(i["name"], i["default"]) for i in listed] == [("python", True), ("minimal", False)]
    for choice, marker in (("minimal", "minimal"), (None, None)):
        args = ("--image", choice) if choice else ()
        sub, ready = bed.start(U1, cfg, cleanup, "--time", "10", *args)
        name = f"epcc-ces-jupyter-{sub['session_id']}"
        assert ready["status"] == "Running" and ready["image"] == (choice or "python"), ready
        card = bed.card(U1, sub["session_id"], cfg)
        assert card["image"] == (choice or "python")
        info = _inspect(U1, name)
        assert info["Config"]["Labels"]["sh-jupyter.image"] == (choice or "python")
        assert info["ImageName"] == (VARIANT if choice else bed.IMAGE), info["ImageName"]
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])
        assert env.get("SH_JUPYTER_TESTBED_IMAGE") == marker
        out = bed.as_user(U1, [bed.SH, "--config", cfg, "cancel", sub["session_id"]])
        assert out.returncode == 0, out.stderr


def test_request_json_edited_to_another_image_fails_the_session_with_the_list(testbed,
                                                                              cleanup):
    """As shjuser1, rewrite the queued session's request.json (the user's own file) to run an
    image reference of one's own: the supervisor checks the name against the site's list
    again, and the session fails with the list on the card; no container is created."""
    cfg = bed.write_config(SITE)
    cpus = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    hog = bed.as_user(bed.USERS[1], ["sbatch", "--parsable", f"--cpus-per-task={cpus}",
                                     "--mem=1G", "--time=10", "--output=/dev/null",
                                     "--chdir=/tmp", "--wrap=sleep 600"])
    assert hog.returncode == 0, hog.stderr
    cleanup.append(hog.stdout.strip())
    bed.wait_for(lambda: bed.job_state(hog.stdout.strip()) == "RUNNING", 60, "hog running")
    out = bed.submit(U1, "--image", "minimal", "--time", "5", config=cfg)
    assert out.returncode == 0, out.stderr
    sub = json.loads(out.stdout)
    cleanup.append(sub["job_id"])
    assert bed.job_state(sub["job_id"]) == "PENDING"
    path = os.path.join(sub["session_dir"], "request.json")
    edit = ("import json,sys; p=sys.argv[1]; d=json.load(open(p)); d['image']='" + bed.IMAGE
            + "'; json.dump(d, open(p, 'w'))")
    done = bed.as_user(U1, ["/usr/bin/python3", "-c", edit, path])
    assert done.returncode == 0, done.stderr
    subprocess.run(["scancel", hog.stdout.strip()], check=True)
    card = bed.wait_for(lambda: (c := bed.card(U1, sub["session_id"], cfg))["status"]
                        == "Completed" and c, 120, "the session to fail", interval=0.5)
    assert card["failed"] and "must be one of the site's images: python" in card["reason"], card
    assert f"epcc-ces-jupyter-{sub['session_id']}" not in bed.containers_of(U1)
