"""The rootless network helper of a session's container (slirp4netns, pasta): is it alive?

Both forward the published port into the container's network namespace; once one dies nothing
reaches JupyterLab and nothing restarts it, so the supervisor looks for it by the namespace
path it serves (its command line names it).
"""

from __future__ import annotations

import psutil

NETWORK_HELPERS = {"slirp4netns": ("slirp4netns",), "pasta": ("pasta", "passt", "pasta.avx2")}


def helper_alive(mode: str, netns: str, uid: int) -> bool | None:
    """Is the rootless network helper that serves this network namespace still running?
    None when the mode has no helper of its own to look for."""
    names = NETWORK_HELPERS.get(mode)
    if not names:
        return None
    for proc in psutil.process_iter(["name", "uids", "cmdline"]):
        info = proc.info
        if info["name"] in names and info["uids"] and info["uids"].real == uid \
                and any(netns in part for part in info["cmdline"] or ()):
            return True
    return False


def helper_gone(mode: str, after_conmon: bool = False) -> str:
    """The card's words for a dead helper. slirp4netns ends when conmon does (conmon holds its
    exit pipe), so a killed conmon shows as a dead helper: say that conmon went first."""
    return f"its network helper ({mode}) is gone{', after conmon' if after_conmon else ''}, " \
           "so nothing reaches it"
