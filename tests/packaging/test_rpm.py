"""The RPM, built for real: packaging/rpm/build-rpm runs rpmbuild on this work tree once per
session, then rpm queries the package and rpm2cpio | cpio unpacks its payload. No test bed needed;
a missing rpmbuild (or rpm, rpm2cpio, cpio) is a failure, never a skip."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
BUILD_RPM = ROOT / "packaging" / "rpm" / "build-rpm"
SPEC = ROOT / "packaging" / "rpm" / "sh-jupyter.spec"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = re.search(r'^__version__ = "(.+)"$', (ROOT / "src/sh_jupyter/_version.py").read_text(
    encoding="utf-8"), re.M).group(1)
SCRIPTS = PYPROJECT["project"]["scripts"]
ENTRY_POINTS = {"console_scripts": SCRIPTS, **PYPROJECT["project"].get("entry-points", {})}

PYTHON = "/usr/bin/python3"
CONSOLE = "/usr/bin/sh-jupyter"
LIBEXEC = "/usr/libexec/sh-jupyter"
CONFIG = "/etc/sh-jupyter/config.toml"
IMAGE = "/usr/share/sh-jupyter/image"
TMPFILES = "/usr/lib/tmpfiles.d/sh-jupyter.conf"
LOG_DIR = "/var/log/sh-jupyter"
# The repository's defaults (the test bed's venv) and what the RPM must turn them into.
VENV_PYTHON = "${SH_JUPYTER_PYTHON:-/opt/sh-jupyter/venv/bin/python}"
VENV_BIN = "${SH_JUPYTER_BIN:-/opt/sh-jupyter/venv/bin/sh-jupyter}"
RPM_PYTHON = "${SH_JUPYTER_PYTHON:-/usr/bin/python3}"
RPM_BIN = "${SH_JUPYTER_BIN:-/usr/bin/sh-jupyter}"
SITELIB_RE = re.compile(r"^/usr/lib/python3\.\d+/site-packages$")
DOC_RE = re.compile(r"^/usr/share/doc/sh-jupyter(-[^/]+)?/(README\.md|CHANGELOG\.md|docs(/.*)?)$")
LICENSE_RE = re.compile(r"^/usr/share/licenses/sh-jupyter(-[^/]+)?/LICENSE$")


def _run(*cmd: str, **kwargs) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _repo_files(directory: str) -> list[str]:
    """Files under ROOT/directory, relative to it, without bytecode caches."""
    base = ROOT / directory
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="session")
def rpm_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    missing = [t for t in ("rpmbuild", "rpm", "rpm2cpio", "cpio") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: testbed/provision installs them "
                    "(Debian packages rpm and cpio)")
    out = tmp_path_factory.mktemp("rpm")
    printed = _run(str(BUILD_RPM), "--outdir", str(out)).strip()
    assert printed == str(out / f"sh-jupyter-{VERSION}-1.noarch.rpm"), printed
    assert os.listdir(out) == [os.path.basename(printed)]
    return printed


@pytest.fixture(scope="session")
def files(rpm_file: str) -> list[str]:
    return _run("rpm", "-qlp", rpm_file).splitlines()


@pytest.fixture(scope="session")
def sitelib(files: list[str]) -> str:
    inits = [f for f in files if f.endswith("/sh_jupyter/__init__.py")]
    assert len(inits) == 1, inits
    lib = inits[0].removesuffix("/sh_jupyter/__init__.py")
    assert SITELIB_RE.match(lib), lib
    return lib


@pytest.fixture(scope="session")
def payload(rpm_file: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("payload")
    with subprocess.Popen(["rpm2cpio", rpm_file], stdout=subprocess.PIPE) as rpm2cpio:
        cpio = subprocess.run(["cpio", "-idm", "--quiet"], stdin=rpm2cpio.stdout, cwd=dest,
                              capture_output=True, check=False, timeout=60)
    assert rpm2cpio.returncode == 0
    assert cpio.returncode == 0, cpio.stderr
    return dest


def _in(payload: Path, path: str) -> Path:
    return payload / path.lstrip("/")


def test_spec_version_is_pyproject_version():
    """A plain rpmbuild of the spec (no build-rpm) must build the same version."""
    text = SPEC.read_text(encoding="utf-8")
    fallback = re.search(r"^%\{!\?sh_jupyter_version:%global sh_jupyter_version (\S+)\}$",
                         text, re.M)
    assert fallback and fallback.group(1) == VERSION, "bump the spec's fallback version"
    changelog = text.split("\n%changelog\n", 1)[1]
    newest = changelog.split("\n", 1)[0]
    assert newest.endswith(f" - {VERSION}-1"), f"add a %changelog entry for {VERSION}: {newest}"


def test_file_list_has_everything(files: list[str], sitelib: str):
    modules = _repo_files("src/sh_jupyter")
    assert "py.typed" in modules and "node/entry.py" in modules
    expected = [f"{sitelib}/sh_jupyter/{m}" for m in modules]
    expected += [f"{sitelib}/sh_jupyter-{VERSION}.dist-info/{m}"
                 for m in ("METADATA", "entry_points.txt", "top_level.txt", "INSTALLER")]
    expected += [f"/usr/bin/{name}" for name in SCRIPTS]
    expected += ["/usr/bin/sh-jupyter-sbatch", CONSOLE]
    expected += [f"{LIBEXEC}/{name}" for name in ("prolog", "epilog", "jupyter_app.sbatch")]
    expected += [f"{IMAGE}/{name}" for name in _repo_files("packaging/image")]
    expected += [f"{IMAGE}/{name}" for name in ("Containerfile", "build",
                                                "jupyter_server_config.py")]
    expected += [f"/usr/share/sh-jupyter/ondemand/jupyter_app/{name}"
                 for name in _repo_files("packaging/ondemand/jupyter_app")]
    expected += [CONFIG, TMPFILES, LOG_DIR]
    missing = sorted(set(expected) - set(files))
    assert not missing, f"not in the RPM: {missing}"
    docs = {f.split("/sh-jupyter", 1)[1].split("/", 1)[1] for f in files if DOC_RE.match(f)}
    assert {"README.md", "CHANGELOG.md", "docs/admin-guide.md"} <= docs, f"%doc has {docs}"
    assert [f for f in files if LICENSE_RE.match(f)], "LICENSE is not packaged as %license"


def _expected_outside_sitelib(path: str) -> bool:
    dirs = (LIBEXEC, "/etc/sh-jupyter", "/usr/share/sh-jupyter", LOG_DIR)
    return (path in {CONSOLE, "/usr/bin/sh-jupyter-sbatch", TMPFILES}
            or DOC_RE.match(path) is not None or LICENSE_RE.match(path) is not None
            or re.fullmatch(r"/usr/share/(doc|licenses)/sh-jupyter(-[^/]+)?", path) is not None
            or any(path == d or path.startswith(d + "/") for d in dirs))


def test_file_list_has_nothing_else(files: list[str], sitelib: str):
    modules = set(_repo_files("src/sh_jupyter"))
    modules |= {os.path.dirname(m) for m in modules if "/" in m}  # subpackages' directories
    package, distinfo = f"{sitelib}/sh_jupyter", f"{sitelib}/sh_jupyter-{VERSION}.dist-info"
    stray = []
    for f in files:
        if f in (package, distinfo) or f.startswith(distinfo + "/"):
            continue
        if f.startswith(package + "/"):
            rel = f.removeprefix(package + "/")
            # Byte-code only from the platform's brp-python-bytecompile (RHEL), never copied.
            if rel in modules \
                    or re.fullmatch(r"([^/]+/)?__pycache__(/[^/]+\.pyc)?", rel):
                continue
        elif _expected_outside_sitelib(f):
            continue
        stray.append(f)
    assert not stray, f"unexpected paths in the RPM: {stray}"
    for f in files:
        assert not f.startswith(("/opt", "/root", "/home", "/tmp", "/usr/local", "/work")), f
        assert not re.search(r"egg-info|/build/|/dist/|BUILDROOT|/\.git|direct_url\.json|"
                             r"/RECORD$|\.orig$|\.rej$|~$|/tests?/|/testbed/", f), f


def test_metadata(rpm_file: str):
    info = dict(re.findall(r"^(\w[\w ]*?)\s*: (.*)$", _run("rpm", "-qip", rpm_file), re.M))
    assert info["Name"] == "sh-jupyter"
    assert info["Version"] == VERSION
    assert info["Architecture"] == "noarch"
    assert info["License"] == "MIT"
    assert info["URL"]
    assert info["Summary"] == PYPROJECT["project"]["description"]


def test_requires(rpm_file: str):
    requires = _run("rpm", "-qp", "--requires", rpm_file).splitlines()
    names = {r.split()[0] for r in requires}
    for name in ("python3", "python3-podman", "python3-psutil", "podman", "slirp4netns",
                 "shadow-utils"):
        assert name in names, f"{name} not required: {requires}"
    assert "python3 >= 3.9" in requires
    tomli = [r for r in requires if "python3-tomli" in r]
    assert tomli == ["(python3-tomli >= 1.1 if python3 < 3.11)"], requires
    assert not [r for r in requires if "/opt" in r or "/usr/local" in r], requires
    recommends = _run("rpm", "-qp", "--recommends", rpm_file).split()
    assert "slurm" in recommends and "python3-pyyaml" in recommends


def test_config_file_is_noreplace(rpm_file: str):
    assert _run("rpm", "-qp", "--configfiles", rpm_file).splitlines() == [CONFIG]
    flags = dict(line.split(" ", 1)[::-1] for line in _run(
        "rpm", "-qp", "--queryformat", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpm_file
    ).splitlines())
    assert set(flags[CONFIG]) >= {"c", "n"}, f"{CONFIG} is not %config(noreplace): {flags[CONFIG]}"


def test_packaged_config_is_the_repository_one(payload: Path):
    shipped = _in(payload, CONFIG)
    assert shipped.read_bytes() == (ROOT / "packaging/config/config.toml").read_bytes()
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o644


@pytest.mark.parametrize(("source", "installed", "old", "new"), [
    ("slurm/prolog", f"{LIBEXEC}/prolog", VENV_PYTHON, RPM_PYTHON),
    ("slurm/epilog", f"{LIBEXEC}/epilog", VENV_PYTHON, RPM_PYTHON),
    ("slurm/jupyter_app.sbatch", f"{LIBEXEC}/jupyter_app.sbatch", VENV_BIN, RPM_BIN),
    ("bin/sh-jupyter-sbatch", "/usr/bin/sh-jupyter-sbatch", VENV_BIN, RPM_BIN),
])
def test_wrappers_use_the_rpm_paths(payload: Path, source: str, installed: str, old: str,
                                    new: str):
    original = (ROOT / source).read_text(encoding="utf-8")
    assert old in original, f"{source} no longer has the default the spec rewrites"
    shipped = _in(payload, installed)
    text = shipped.read_text(encoding="utf-8")
    assert text == original.replace(old, new), f"{installed}: more than the default changed"
    assert new in text and "/opt/" not in text
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o755
    assert os.access(shipped, os.X_OK)


def test_hooks_run_isolated_with_the_system_python(payload: Path):
    for hook in ("prolog", "epilog"):
        text = _in(payload, f"{LIBEXEC}/{hook}").read_text(encoding="utf-8")
        assert f'exec "{RPM_PYTHON}" -I -m sh_jupyter.node {hook}' in text


def test_library_and_image_files_are_the_repository_ones(payload: Path, sitelib: str):
    for rel in _repo_files("src/sh_jupyter"):
        assert _in(payload, f"{sitelib}/sh_jupyter/{rel}").read_bytes() == \
            (ROOT / "src/sh_jupyter" / rel).read_bytes(), rel
    for rel in _repo_files("packaging/image"):
        shipped = _in(payload, f"{IMAGE}/{rel}")
        assert shipped.read_bytes() == (ROOT / "packaging/image" / rel).read_bytes(), rel
        want = 0o755 if rel == "build" else 0o644
        assert stat.S_IMODE(shipped.stat().st_mode) == want, rel


def test_console_script_runs_the_packaged_library(payload: Path, sitelib: str):
    script = _in(payload, CONSOLE)
    assert script.read_text(encoding="utf-8").splitlines()[0] == f"#!{PYTHON} -s"
    assert os.access(script, os.X_OK)
    # Every [project.scripts] entry point is what the console script runs.
    assert SCRIPTS == {"sh-jupyter": "sh_jupyter.cli:main"}
    assert "from sh_jupyter.cli import main" in script.read_text(encoding="utf-8")
    # ...and every other entry point (the JupyterHub spawner) is declared as pip would.
    entry_points = _in(payload, f"{sitelib}/sh_jupyter-{VERSION}.dist-info/entry_points.txt")
    assert entry_points.read_text(encoding="utf-8") == "\n".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in ENTRY_POINTS.items())
    metadata = _in(payload, f"{sitelib}/sh_jupyter-{VERSION}.dist-info/METADATA")
    assert f"\nVersion: {VERSION}\n" in metadata.read_text(encoding="utf-8")
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} missing (the test bed installs Debian's python3)")
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(_in(payload, sitelib))}
    assert _run(str(script), "--version", env=env).strip() == f"sh-jupyter {VERSION}"


def test_tmpfiles_snippet_excludes_node_local_dirs_from_age_cleanup(payload: Path):
    lines = [line.split() for line in _in(payload, TMPFILES).read_text(encoding="utf-8")
             .splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [["d", "/var/tmp/sh-jupyter", "0755", "root", "root", "-"],
                     ["x", "/var/tmp/sh-jupyter"]]


def test_payload_names_no_build_paths(payload: Path):
    for path in payload.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in (b"BUILDROOT", b"sh-jupyter-rpm.", b"/opt/sh-jupyter/venv"):
                if needle == b"/opt/sh-jupyter/venv" and path.suffix == ".md":
                    continue  # the docs describe the test bed's venv
                assert needle not in data, f"{path.relative_to(payload)} contains {needle!r}"
