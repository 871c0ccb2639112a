# jupyter_server configuration baked into the sh-jupyter image at /etc/jupyter/.
#
# Authentication: the sh-jupyter supervisor generates a secret and passes it as the environment
# variable JUPYTER_TOKEN (never on the command line, where other users could read it in ps).
# It is *popped* here, before the server starts any kernel or terminal, so user code inside
# JupyterLab never inherits the secret. With jupyter_server 2's PasswordIdentityProvider the
# same secret works both ways the portal may log in:
#   * GET  {base_url}lab?token=SECRET
#   * POST {base_url}login with form fields password=SECRET and _xsrf (XSRF stays on).
# An empty or missing JUPYTER_TOKEN is never turned into an empty token: jupyter_server then
# generates a random one, so authentication can never be switched off by accident.
import os

c = get_config()  # noqa: F821  (injected by traitlets when this file is loaded)

_token = os.environ.pop("JUPYTER_TOKEN", "")
if _token:
    c.IdentityProvider.token = _token
del _token

# The container always runs as uid 0 (rootless Podman maps it to the user outside), so
# JupyterLab would otherwise refuse to start.
c.ServerApp.allow_root = True
# Inside the container's own network namespace only 0.0.0.0 is reachable through the
# published port; the host side of the port mapping decides who can connect.
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.open_browser = False

# The extension manager lists installed JupyterLab extensions but does not search or install
# from PyPI: a trusted research environment has no business calling out to PyPI, and the
# PyPI manager's HTTP client costs start-up time (bench/image.py measures it). Users still
# `pip install` packages (prebuilt JupyterLab extensions included) into /mnt/jupyter_host.
c.LabApp.extension_manager = "readonly"
