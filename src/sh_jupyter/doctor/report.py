"""doctor's findings and how they are shown: one line each for a person, or JSON.

Exit status follows the monitoring (Nagios) convention, 0 ok, 1 warning, 2 error, so a probe
can run `sh-jupyter doctor` as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

OK, WARN, ERROR = "ok", "warn", "error"
_RANK = {OK: 0, WARN: 1, ERROR: 2}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str
    fix: str = ""


def worst(findings: list[Finding]) -> int:
    return max((_RANK[f.status] for f in findings), default=0)


def render(findings: list[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps({"status": worst(findings),
                           "findings": [asdict(f) for f in findings]}, indent=2)
    marks = {OK: "ok   ", WARN: "WARN ", ERROR: "ERROR"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.status]} {f.check:15} {f.message}")
        if f.fix and f.status != OK:
            lines.append(f"      {'':15} fix: {f.fix}")
    return "\n".join(lines)
