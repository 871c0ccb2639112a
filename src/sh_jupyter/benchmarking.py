"""Named seams for bench/ (and nothing else): what a benchmark needs to run the very container
a session runs, outside a session, and to probe it as the supervisor does.

bench/ imports only this module, the public API and the CLI, so a rename inside the package
cannot silently break it (a unit test checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sh_jupyter import config as config_mod
from sh_jupyter.container import oci_runtime
from sh_jupyter.container.podman_args import pasta_installed
from sh_jupyter.container.spec import HostMount, SessionFacts, create_kwargs, host_mounts
from sh_jupyter.node.procs import real_uid
from sh_jupyter.paths import TemplateContext
from sh_jupyter.supervisor import ports, readiness

__all__ = ["api_answers", "create_spec", "pasta_installed", "port_is_free", "real_uid",
           "runtime_choice", "session_mounts"]


def runtime_choice(config: str) -> oci_runtime.Choice:
    """The OCI runtime the supervisor would choose for this config on this node."""
    cfg = config_mod.load(config)
    return oci_runtime.choose(cfg["podman.runtime"], cfg["podman.keep_groups"],
                              oci_runtime.node_facts())


def session_mounts(config: str, user: str, home: str, uid: int,
                   session_id: str) -> list[HostMount]:
    """The host mounts a session of this user would get (sources expanded)."""
    ctx = TemplateContext(user, home, uid, session_id, "local")
    return host_mounts(config_mod.load(config).mounts, ctx)


def create_spec(config: str, user: str, home: str, uid: int, session_id: str, port: int,
                ulimits: tuple[tuple[str, int, int], ...], present: set[str],
                podman_version: str, user_env: Mapping[str, str],
                token: str) -> dict[str, Any]:
    """podman-py's create arguments for the container a session would run (no CPU or memory
    limits, base URL "/"), exactly as the supervisor builds them."""
    cfg = config_mod.load(config)
    ctx = TemplateContext(user, home, uid, session_id, "local")
    facts = SessionFacts(ctx, port, 0, 0, False, "/", ulimits,
                         keep_groups=runtime_choice(config).keep_groups,
                         podman_version=podman_version, have_pasta=pasta_installed(user_env))
    kwargs = create_kwargs(cfg, facts, {}, host_mounts(cfg.mounts, ctx), present)
    # A bare `podman run` floor hands the token over in the environment (jupyter_server
    # honours JUPYTER_TOKEN); a session mounts a config file instead (no file to manage here).
    kwargs["environment"]["JUPYTER_TOKEN"] = token
    return kwargs


def api_answers(host: str, port: int, base_url: str = "/", timeout: float = 2.0) -> bool:
    """The supervisor's readiness probe: JupyterLab's unauthenticated /api answers."""
    return readiness.api_answers(host, port, base_url, timeout=timeout)


def port_is_free(address: str, port: int) -> bool:
    """The supervisor's free-port test."""
    return ports.is_free(address, port)
