"""sh-jupyter's JupyterHub spawner (`pip install sh-jupyter[jupyterhub]`):
`c.JupyterHub.spawner_class = "sh-jupyter"`. docs/integrators.md, "JupyterHub".

The spawner class loads on first use, so the pure parts of this package import without
JupyterHub installed.
"""

from __future__ import annotations

__all__ = ["SHJupyterSpawner"]


def __getattr__(name: str):
    if name == "SHJupyterSpawner":
        from sh_jupyter.jupyterhub.spawner import SHJupyterSpawner

        return SHJupyterSpawner
    raise AttributeError(f"module 'sh_jupyter.jupyterhub' has no attribute {name!r}")
