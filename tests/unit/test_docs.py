"""The docs hold together: every relative link in them leads somewhere (and to a heading, where
it names one), the README stays a short front door with the two commands on its first screen,
and no file in the repository names a package registry's host (the test bed and the image build
use the host's configured mirrors; docs say "PyPI", "Debian's archive", "npm")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted({README, ROOT / "CHANGELOG.md", ROOT / "bench" / "results" / "README.md",
               *(ROOT / "docs").glob("*.md")})

# Registry hosts, each written in parts so that this file does not name them itself.
REGISTRY_HOSTS = tuple(".".join(parts) for parts in (
    ("pypi", "org"), ("pypi", "python", "org"), ("files", "pythonhosted"),
    ("deb", "debian", "org"), ("security", "debian", "org"), ("ftp", "debian", "org"),
    ("registry", "npmjs"), ("npmjs", "com"), ("registry", "yarnpkg", "com"),
    ("docker", "io"), ("quay", "io"), ("ghcr", "io"), ("gcr", "io"),
    ("crates", "io"), ("proxy", "golang", "org"), ("rubygems", "org"),
))
# Directories never part of the repository, for a tree that is not a git checkout.
NOT_SOURCE = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist",
              "test-artifacts", "node_modules", ".venv", "venv"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
NOT_PROSE = ("lesson", "issue")  # numbered references to notes that readers do not have


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    out, fence = [], ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
            continue
        if opened:
            fence = opened.group(1)
            continue
        out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation other than '-' and '_'
    dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the file's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    previous = ""
    for _number, line in _prose_lines(path):
        heading = None
        atx = ATX.match(line)
        if atx:
            heading = atx.group(2)
        elif SETEXT.match(line) and previous.strip() and not re.match(r"^\s*([#>|*+-]|\d+[.)])",
                                                                       previous):
            heading = previous
        if heading is not None:
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
        previous = line
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and link reference outside code."""
    out = []
    for number, line in _prose_lines(path):
        text = INLINE_CODE.sub("", line)
        out += [(number, m.group(1)) for m in LINK.finditer(text)]
        ref = REFERENCE.match(text)
        if ref:
            out.append((number, ref.group(1)))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
    broken = []
    for number, target in links(doc):
        if not target or SCHEME.match(target):
            continue
        where, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(where)).resolve() if where else doc
        name = f"{doc.relative_to(ROOT)}:{number}: {target}"
        if ROOT not in (dest, *dest.parents):
            broken.append(f"{name} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{name} (no such file)")
        elif anchor and dest.suffix.lower() != ".md":
            broken.append(f"{name} (an anchor into a file that is not Markdown)")
        elif anchor and unquote(anchor) not in anchors(dest):
            broken.append(f"{name} (no heading with that anchor in {dest.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slugs_follow_github():
    assert slug("How a session runs") == "how-a-session-runs"
    assert slug("The image: what it trims") == "the-image-what-it-trims"
    assert slug("Command-line output with `--json`") == "command-line-output-with---json"
    assert slug("Python API (sh_jupyter.api)") == "python-api-sh_jupyterapi"
    assert slug("0.2.0 (unreleased, third release)") == "020-unreleased-third-release"


def test_the_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    first_screen = "\n".join(lines[:60])
    for command in ("testbed/demo", "testbed/test"):
        assert command in first_screen, f"README's first 60 lines lack {command}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_cite_nothing_readers_cannot_see(doc: Path):
    words = "|".join(NOT_PROSE)
    pattern = re.compile(rf"\b(?:{words}) \d+|\bthe seed\b", re.IGNORECASE)
    hits = [f"{doc.relative_to(ROOT)}:{n}: {m.group(0)}"
            for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
            for m in pattern.finditer(line)]
    assert not hits, "write the decision and its reason instead:\n" + "\n".join(hits)


def _repository_files() -> list[Path]:
    """Tracked files and new ones not ignored (git), or the tree without build and cache
    directories where this is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-c", "safe.directory=*", "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        names = [n for n in out.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
        if names:
            return [ROOT / n for n in names]
    except (OSError, subprocess.SubprocessError):
        pass
    return [p for p in ROOT.rglob("*") if p.is_file()
            and not NOT_SOURCE.intersection(p.relative_to(ROOT).parts)
            and not p.name.endswith(".egg-info")
            and (p.relative_to(ROOT).parts[:2] != ("bench", "results")
                 or p.relative_to(ROOT) == Path("bench", "results", "README.md"))]


def test_no_file_names_a_package_registry_host():
    hits = []
    for path in _repository_files():
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # deleted but still tracked; a submodule
            continue
        if b"\0" in data[:8192]:
            continue  # not text
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            low = line.lower()
            hits += [f"{path.relative_to(ROOT)}:{number}: {host}"
                     for host in REGISTRY_HOSTS if host in low]
    assert not hits, ("name the registry (PyPI, Debian's archive, npm), not its host:\n"
                      + "\n".join(hits))
