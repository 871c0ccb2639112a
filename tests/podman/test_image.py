"""The image as published in the shared store: the start-up trims are in force, they take away
no more than docs/admin-guide.md says, and the versions launchers rely on are recorded in its
labels."""

from __future__ import annotations

import json
import re

import bed

USER = bed.USERS[0]
# How sessions run it: read-only root, tmpfs where Jupyter writes.
RUN = ("run", "--rm", "--read-only", "--tmpfs", "/root", "--tmpfs", "/tmp", "--tmpfs", "/run")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def in_image(*argv: str) -> str:
    out = bed.podman(USER, *RUN, bed.IMAGE, *argv, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def labels() -> dict[str, str]:
    out = bed.podman(USER, "image", "inspect", "--format", "{{json .Labels}}", bed.IMAGE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_labels_record_the_installed_versions_including_jupyterhub(testbed):
    """A JupyterHub spawner runs `jupyterhub-singleuser` in this image: its version must match
    the hub's, so it is recorded like the others, and it is the version actually installed."""
    found = labels()
    assert found["sh-jupyter.jupyterhub-version"] == "6.1.1"
    script = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
              "('jupyterlab', 'jupyter_server', 'ipykernel', 'jupyterhub')}))")
    installed = json.loads(in_image("python", "-c", script))
    assert installed == {
        "jupyterlab": found["sh-jupyter.jupyterlab-version"],
        "jupyter_server": found["sh-jupyter.jupyter-server-version"],
        "ipykernel": found["sh-jupyter.ipykernel-version"],
        "jupyterhub": found["sh-jupyter.jupyterhub-version"],
    }
    assert in_image("jupyterhub-singleuser", "--version").strip() == "6.1.1"


def test_start_up_trims_are_in_force_and_lose_only_the_iri_format_checks(testbed):
    """docs/admin-guide.md, "The image: what it trims": rfc3987-syntax is gone, so jsonschema
    has no `iri` checks (and only those); notebook_shim is disabled; the default command
    exists."""
    script = (
        "import importlib.util, json, shutil, jsonschema\n"
        "checks = set(jsonschema.FormatChecker().checkers)\n"
        "print(json.dumps({'rfc3987_syntax': importlib.util.find_spec('rfc3987_syntax') is not "
        "None, 'iri': sorted(c for c in checks if c.startswith('iri')), 'kept': sorted(checks & "
        "{'uri', 'uri-reference', 'date-time', 'duration', 'email', 'ipv4', 'json-pointer', "
        "'uri-template', 'color'}), 'jupyter-lab': shutil.which('jupyter-lab')}))\n"
    )
    found = json.loads(in_image("python", "-c", script))
    assert found == {"rfc3987_syntax": False, "iri": [],
                     "kept": ["color", "date-time", "duration", "email", "ipv4", "json-pointer",
                              "uri", "uri-reference", "uri-template"],
                     "jupyter-lab": "/opt/jupyter/bin/jupyter-lab"}
    states = {}
    for line in in_image("jupyter", "server", "extension", "list").splitlines():
        words = ANSI.sub("", line).split()
        if len(words) == 2 and words[1] in ("enabled", "disabled"):
            states[words[0]] = words[1]
    assert states == {"jupyterlab": "enabled", "jupyter_lsp": "enabled",
                      "jupyter_server_terminals": "enabled", "notebook_shim": "disabled"}
