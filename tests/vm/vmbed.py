"""What the VM tier's tests share besides the bed: findings kept for the host."""

from __future__ import annotations

import os

# Where the guest's tier runner collects results for the host (testbed/vm-guest).
RESULTS = os.environ.get("SHJ_VM_RESULTS", "")


def record(name: str, text: str) -> None:
    """Keep a finding for the host (test-artifacts/trixie-vm/NAME) and show it in the log."""
    print(f"\n--- {name} ---\n{text}")
    if RESULTS and os.path.isdir(RESULTS):
        with open(os.path.join(RESULTS, name), "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
