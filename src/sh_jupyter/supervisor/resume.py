"""The full supervisor again, once the idle wait (`idle`) has seen something to do.

Run as `python -c ... PLAN_FD STATE_FD` by `handoff`: the plan says what happened (and the
card's latest state), the state is the supervisor's own, frozen before it handed off.
"""

from __future__ import annotations

import json
import sys

from sh_jupyter.errors import EXIT_SESSION_FAILED
from sh_jupyter.progress import say
from sh_jupyter.supervisor import handoff


def main(argv: list[str]) -> None:
    plan = json.loads(handoff.read_fd(int(argv[0])))
    try:
        from sh_jupyter.supervisor.lifecycle import Supervisor

        supervisor = Supervisor.resumed(handoff.read_fd(int(argv[1])), plan)
    except Exception as exc:  # noqa: BLE001 - e.g. the package was upgraded under the session
        say(f"could not take the session back from its idle wait ({exc!r}); the job ends "
            "and its epilog removes the container")
        sys.exit(EXIT_SESSION_FAILED)
    sys.exit(supervisor.resume(plan["event"]))
