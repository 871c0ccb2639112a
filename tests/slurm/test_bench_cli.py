"""bench/ stays runnable: every benchmark answers --help on the bed (CI runs this), so a rename
in the package or a broken import in bench/ fails here rather than on the next benchmark day."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "benchlib.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_answers_help(testbed, script: str):
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True,
                         text=True, timeout=60, check=False, cwd=BENCH)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout[:200]


def test_bench_run_answers_help():
    out = subprocess.run(["bash", str(BENCH / "run"), "--help"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0 and "bench/run" in out.stdout, out.stderr
