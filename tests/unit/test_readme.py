"""The docs stay true: the configuration reference in docs/configuration.md is the schema's."""

from __future__ import annotations

import os

from sh_jupyter.config import reference_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGURATION = os.path.join(ROOT, "docs", "configuration.md")


def test_config_reference_matches_the_schema():
    with open(CONFIGURATION, encoding="utf-8") as fh:
        text = fh.read()
    start = text.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), \
        "docs/configuration.md is stale: paste `sh-jupyter config --reference` between the markers"
