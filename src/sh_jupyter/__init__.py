"""sh-jupyter: JupyterLab in a rootless Podman container whose life is tied to a Slurm job.

The public Python API is `sh_jupyter.api`; its names are also importable from here
(`from sh_jupyter import submit, wait, connection`). They load on first use, so importing the
package stays as cheap as the Slurm prolog and epilog need it to be.
"""

from __future__ import annotations

from sh_jupyter._version import __version__

__all__ = ["REQUEST_KEYS", "Card", "Connection", "Session", "SessionFailure", "UsageError",
           "__version__", "cancel", "card", "connection", "estimate", "find", "request_from_json",
           "run", "sessions", "submit", "wait"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    """The API's names, imported on first use (PEP 562)."""
    if name in _API:
        from sh_jupyter import api

        return getattr(api, name)
    raise AttributeError(f"module 'sh_jupyter' has no attribute {name!r}")
