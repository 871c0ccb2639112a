"""The package's shape is its architecture: imports run one way, from the execution contexts
down to Slurm access and the container model, and from those to the core; nothing imports
upwards, no two contexts import each other, and there is no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "sh_jupyter"

# Layer of each top-level name of the package (a module of the core, or a subpackage).
CORE = {"_version", "errors", "config", "session", "paths", "files", "durations", "users",
        "progress", "launch", "runner"}
LAYERS = {**dict.fromkeys(CORE, 0), "slurm": 1, "container": 1, "gpu": 2,
          "submitter": 3, "supervisor": 3, "node": 3, "doctor": 3, "api": 4, "benchmarking": 4,
          "cli": 5, "jupyterhub": 5, "": 6}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["sh_jupyter", *parts])] = path
    return out


MODULES = _modules()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """The package's modules this file imports, anywhere in it but under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "sh_jupyter":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "sh_jupyter"}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the package imports absolutely)")
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_top_level_name_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LAYERS), "add the new module to LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module: str):
    here = _top(module)
    for target in GRAPH[module]:
        there = _top(target)
        assert LAYERS[there] <= LAYERS[here], f"{module} imports {target}: upwards"
        if LAYERS[here] == LAYERS[there] and LAYERS[here] in (1, 3):
            assert here == there, f"{module} imports {target}: another context's package"


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == node or nxt not in MODULES:
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_each_module_imports_alone_in_a_fresh_interpreter():
    """A cycle that only bites in one import order shows when each module is imported first.
    (The spawner needs JupyterHub and the pyslurm backend pyslurm: those are left out.)"""
    optional = {"sh_jupyter.jupyterhub.spawner", "sh_jupyter.slurm.pyslurm_backend",
                "sh_jupyter.node.__main__"}
    code = ("import importlib, subprocess, sys\n"
            "bad = []\n"
            "for m in sys.argv[1:]:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {m}'], capture_output=True,"
            " text=True)\n"
            "    bad += [f'{m}: {r.stderr.strip().splitlines()[-1]}'] if r.returncode else []\n"
            "print('\\n'.join(bad))\n")
    names = sorted(set(MODULES) - optional)
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(PKG.parent), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == ""


def test_bench_uses_only_public_seams():
    """bench/ reaches the package through the API, the CLI and `sh_jupyter.benchmarking` only."""
    allowed = {"sh_jupyter", "sh_jupyter.api", "sh_jupyter.benchmarking"}
    bench = PKG.parents[1] / "bench"
    used = {f"{path.name}: {name}" for path in bench.rglob("*.py")
            for name in _imports(path) if name not in allowed}
    assert used == set()


def test_test_module_basenames_are_unique():
    """pytest imports test modules by basename (rootdir-relative, no packages): two tests/
    directories holding the same test_*.py clash when collected together."""
    tests = PKG.parents[1] / "tests"
    seen: dict[str, list[str]] = {}
    for path in sorted(tests.rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
