"""Every `cfg["section.key"]` the code, the tests or bench read names a key of the schema: a
typo would otherwise fail only at run time, on the path it sits on."""

from __future__ import annotations

import re
from pathlib import Path

from sh_jupyter.config import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
LOOKUP = re.compile(r"""\[\s*f?["']([a-z_]+)\.([a-z_]+)["']\s*\]""")


def _lookups() -> list[tuple[str, str, str]]:
    found = []
    for top in ("src", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            found += [(str(path.relative_to(ROOT)), s, k) for s, k in LOOKUP.findall(text)]
    return found


def test_the_code_reads_config_through_literal_keys():
    assert len({(s, k) for _, s, k in _lookups()}) > 30  # the scan sees the lookups


def test_every_literal_key_is_in_the_schema():
    unknown = [f"{where}: {s}.{k}" for where, s, k in _lookups()
               if s in SCHEMA and k not in SCHEMA[s]]
    unknown += [f"{where}: {s}.{k}" for where, s, k in _lookups()
                if s not in SCHEMA and s in {"session", "image", "network", "podman", "proxy",
                                             "limits", "gpu", "mounts"}]
    assert unknown == []
