"""The `sh-jupyter` command (submit side and node verbs): thin argument handling over the library.

`entry` parses the arguments and dispatches; `sessions` holds the user's session verbs over the
public API; `render` draws the job card for a terminal.
"""

from __future__ import annotations

from sh_jupyter.cli.entry import main

__all__ = ["main"]
