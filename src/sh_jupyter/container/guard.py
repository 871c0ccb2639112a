"""JupyterLab's walltime guard in a session's container (pure: paths, mounts, page config).

The guard is a prebuilt JupyterLab extension shipped with sh-jupyter (labextension/, built by
packaging/labextension/build). It is mounted read-only into every session's container rather
than baked into one image, so every image a site offers ([[images]]) gets it, and a site image
needs no rebuild. JupyterLab finds it through JUPYTER_PATH, and reads the job's end from a
labconfig/page_config.json on JUPYTER_CONFIG_PATH: both only add search paths, so an image's
own extensions and page config are kept.
"""

from __future__ import annotations

import json
import os

from sh_jupyter.config import Config

LABEXTENSION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labextension")
NAME = "@sh-jupyter/walltime-guard"
# Under the container's /run tmpfs: a read-only root from the shared store lets no mount point
# be made in the image's own directories (crun: "mkdir /opt/sh-jupyter: Permission denied"),
# and the tmpfs, mounted first, is the container's own.
DATA_TARGET = "/run/sh-jupyter/jupyter"
CONFIG_TARGET = "/run/sh-jupyter/jupyter-config"
CONFIG_DIR = "jupyter-config"  # in the session directory
PAGE_CONFIG = os.path.join("labconfig", "page_config.json")


def page_config(cfg: Config, job_end: int) -> str:
    """What the extension reads (PageConfig options are strings)."""
    warnings = [w for w in (cfg["walltime.first_warning"], cfg["walltime.last_warning"]) if w]
    return json.dumps({
        "shJupyterJobEnd": str(job_end),
        "shJupyterWalltimeWarnings": ",".join(str(w) for w in warnings),
        "shJupyterWalltimeSave": str(cfg["walltime.save_before"]),
    }, indent=2) + "\n"


def mounts(config_dir: str) -> list[dict]:
    """The extension and the session's page config, read-only."""
    return [
        {"type": "bind", "source": LABEXTENSION_DIR, "read_only": True,
         "target": f"{DATA_TARGET}/labextensions/{NAME}"},
        {"type": "bind", "source": config_dir, "target": CONFIG_TARGET, "read_only": True},
    ]


# The container's environment adds DATA_TARGET to JUPYTER_PATH and CONFIG_TARGET to
# JUPYTER_CONFIG_PATH (after the token's config directory: spec.environment).
