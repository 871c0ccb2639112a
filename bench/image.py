#!/opt/sh-jupyter/venv/bin/python
"""Image start-up benchmark: what each start-up trim of the sh-jupyter image saves, as shjuser1.

Every variant is a bare `podman run -d` of the container a session runs (launch.py's floor: the
launcher's own spec, read-only root, tmpfs, mounts, published port, JUPYTER_TOKEN), timed from
Popen until `GET /api` answers 200; all interleaved in every run (the order rotates):
  stock: the same versions installed the plain way (bench/stock/Containerfile), `jupyter lab`;
  ours: the sh-jupyter image as built, every trim in place;
  ours with ONE trim undone, one row per trim: the trim's saving is that row's median minus
      ours (leave-one-out, so the savings are those of the image as shipped);
  ours with a candidate applied that the image does not adopt (informational).
Then where the server's start goes, stock and ours, in starts that are not timed: its own
milestones and per-extension timings at `--debug` (from the container's start), and the import
profile over the whole start, extensions included (PYTHONPROFILEIMPORTTIME=1).

Run as root: `/opt/sh-jupyter/venv/bin/python bench/image.py [--runs N]`. Builds the stock
image into the shared store first if it is missing or stale (minutes; seconds otherwise).
Measurements only: the table reports, never asserts.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import benchlib as bl
import launch
from benchlib import Series, bed, say

USER = launch.USER
STOCK = "stock JupyterLab (same versions, plain pip install, `jupyter lab`)"
OURS = "sh-jupyter image, every trim"
UNDO_DIR = "/tmp/shj-bench-undo"  # inside the container (under its /tmp tmpfs)
IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass
class Variant:
    """One row: a floor of `image` with extra `podman run` options and JupyterLab options."""

    name: str
    config: str
    extra: Sequence[str] = ()
    args: Sequence[str] = ()
    lost: str = ""  # what users lose with the trim (or would lose with the candidate)
    kind: str = "trim"  # "base", "trim" (undone in this row) or "candidate" (applied)
    series: Series = field(init=False)

    def __post_init__(self) -> None:
        self.series = Series(self.name)


def variants(undo_dir: str) -> list[Variant]:
    """The rows. A trim row undoes exactly one trim of the shipped image."""
    ours = bl.write_config()
    stock = bl.image_config(bl.STOCK_IMAGE, bl.STOCK_COMMAND)
    return [
        Variant(STOCK, stock, kind="base"),
        Variant(OURS, ours, kind="base"),
        Variant("undone: `jupyter lab` (a second interpreter that execs `jupyter-lab`)",
                bl.image_config(bed.IMAGE, bl.STOCK_COMMAND),
                lost="nothing (`jupyter lab` still works in terminals)"),
        Variant("undone: rfc3987-syntax installed (the stock image's copy on PYTHONPATH)", ours,
                extra=["--mount", f"type=bind,source={undo_dir},target={UNDO_DIR},ro=true",
                       "-e", f"PYTHONPATH={UNDO_DIR}"],
                lost="jsonschema's optional `iri` and `iri-reference` format checks"),
        Variant("undone: notebook_shim server extension enabled", ours,
                args=["--ServerApp.jpserver_extensions=notebook_shim=True"],
                lost="classic-Notebook server extensions (none in the image)"),
        Variant("undone: PyPI extension manager", ours,
                args=["--LabApp.extension_manager=pypi"],
                lost="searching and installing extensions from PyPI in the Extension "
                     "Manager (`pip install` still works)"),
        Variant("candidate (not adopted): language-server autodetection off", ours,
                args=["--LanguageServerManager.autodetect=False"], kind="candidate",
                lost="language servers users `pip install` are no longer found"),
        Variant("candidate (not adopted): jupyter_lsp server extension off", ours,
                args=["--ServerApp.jpserver_extensions=jupyter_lsp=False"], kind="candidate",
                lost="JupyterLab's language-server features (completion, diagnostics)"),
    ]


def stock_package(package: str) -> str:
    """Copy one package of the stock image's site-packages (with its byte-code) into a directory
    the test user can mount: the "undone" row of a package the image uninstalls."""
    path = bl.shared_dir()
    pw = pwd.getpwnam(USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    out = bed.podman(USER, "run", "--rm", "--read-only", "--tmpfs", "/root", "--tmpfs", "/tmp",
                     "-v", f"{path}:/scratch", bl.STOCK_IMAGE, "sh", "-c",
                     f"cp -a /opt/jupyter/lib/python3*/site-packages/{package} /scratch/",
                     timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"copying {package} out of {bl.STOCK_IMAGE}: {out.stderr.strip()}")
    return path


# -- import time -----------------------------------------------------------------------------
@dataclass
class Imports:
    """`-X importtime` of one server start (all interpreters of the container)."""

    total_s: float  # sum of every import's own time
    modules: int
    cumulative: dict[str, float]  # top-level package -> its largest cumulative time, s


def parse_importtime(text: str) -> Imports | None:
    total, count, cumulative = 0, 0, {}
    for line in text.splitlines():
        m = IMPORTTIME.match(line)
        if not m:
            continue
        own, cum, name = int(m[1]), int(m[2]), m[4]
        total += own
        count += 1
        top = name.split(".")[0]
        cumulative[top] = max(cumulative.get(top, 0.0), cum / 1e6)
    return Imports(total / 1e6, count, cumulative) if count else None


def profiled_start(variant: Variant, extra: Sequence[str] = (), args: Sequence[str] = (),
                   timeout: float = 180) -> tuple[str, float] | None:
    """Start the variant's container with more options, wait until it answers, and return its
    log and when Podman started it (epoch seconds); the container is removed."""
    floor = launch.Floor(variant.config, [*variant.extra, *extra], [*variant.args, *args])
    try:
        t0 = floor.start()
        while not floor.api_answers():
            if floor.failed() or time.monotonic() - t0 > timeout:
                say(f"  profiled start of {variant.name}: no answer ({floor.failed()})")
                return None
            time.sleep(0.05)
        out = bed.podman(USER, "logs", floor.name, timeout=60)
        started = bed.podman(USER, "inspect", "--format", "{{.State.StartedAt}}", floor.name)
        when = podman_time(started.stdout.strip())
        return (out.stdout + out.stderr, when) if when is not None else None
    finally:
        floor.remove()


def podman_time(text: str) -> float | None:
    """Podman's time format, e.g. `2026-11-29 00:10:55.123456789 +0000 UTC`, as epoch s."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})", text)
    if not m:
        return None
    whole = datetime.strptime(f"{m[1]} {m[3]}", "%Y-%m-%d %H:%M:%S %z").timestamp()
    return whole + float(f"0.{m[2] or 0}")


# -- the server's own milestones at debug level ---------------------------------------------
LOG_LINE = re.compile(r"^\[(\w) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\w+)\] (.*)$")
EXT_IMPORT = re.compile(r"^Extension package (\S+) took ([\d.]+)s to import")
EXT_LOADED = re.compile(r"^(\S+) \| extension was successfully loaded")


def timeline(log: str, started: float) -> dict[str, float]:
    """Milestones of one start at debug level, seconds from the container's start; and each
    extension's import and load time (load: since the previous milestone; they load in turn)."""
    out: dict[str, float] = {}
    previous = None
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        when = datetime.strptime(m[2] + "+0000", "%Y-%m-%d %H:%M:%S.%f%z").timestamp() - started
        message = m[4]
        out.setdefault("first server log line (interpreter, imports, config files)", when)
        if (imp := EXT_IMPORT.match(message)):
            out[f"extension {imp[1]}: import (its own figure)"] = float(imp[2])
        elif "extension was successfully linked" in message:
            out["every extension linked"] = previous = when
        elif (loaded := EXT_LOADED.match(message)):
            if previous is not None:
                out[f"extension {loaded[1]}: load"] = when - previous
            previous = when
        elif re.match(r"^Jupyter Server \S+ is running at", message):
            out["Jupyter Server is running (listening)"] = when
            break
    return out


def timeline_table(stock: list[dict[str, float]], ours: list[dict[str, float]]) -> str:
    names: list[str] = []
    for tl in [*stock, *ours]:
        names += [n for n in tl if n not in names]

    def med(items: list[dict[str, float]], name: str) -> str:
        values = [tl[name] for tl in items if name in tl]
        return bl.fmt(statistics.median(values)) if values else "not there"

    rows = [[name, med(stock, name), med(ours, name)] for name in names]
    return bl.table(("server milestone (median; milestones from the container's start)",
                     "stock", "ours"), rows)


WATCHED = (("rfc3987_syntax", "rfc3987_syntax (jsonschema's IRI check)"),
           ("IPython", "IPython (notebook_shim)"),
           ("httpx", "httpx (extension manager, jupyterlab.extensions)"),
           ("jupyterhub", "jupyterhub"))


def import_table(stock: list[Imports], ours: list[Imports]) -> str:
    def med(items: list[Imports], get) -> str:
        values = [get(i) for i in items]
        return "n/a" if not values else bl.fmt(statistics.median(values))

    def top(name: str):
        return lambda i: i.cumulative.get(name, 0.0)

    def count(items: list[Imports]) -> str:
        return f"{statistics.median(i.modules for i in items):.0f}" if items else "n/a"

    rows = [["every import of the start, summed (self times)", med(stock, lambda i: i.total_s),
             med(ours, lambda i: i.total_s)],
            ["imports (modules, and failed attempts at optional ones)", count(stock),
             count(ours)]]
    for name, label in WATCHED:
        def shown(items: list[Imports], name: str = name) -> str:
            if items and not any(name in i.cumulative for i in items):
                return "not imported"
            value = statistics.median(top(name)(i) for i in items) if items else None
            return "< 0.001 s (not installed)" if value is not None and value < 0.001 \
                else bl.fmt(value)
        rows.append([f"of which {label}, cumulative", shown(stock), shown(ours)])
    return bl.table(("import time during start-up (median)", "stock", "ours"), rows)


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per variant")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first")
    parser.add_argument("--profile-runs", type=int, default=3,
                        help="starts per image profiled at debug level, and for import time "
                             "(0: skip)")
    args = parser.parse_args()
    why = bl.ensure_stock_image()
    if why:
        say(why)
        bl.write_result("image", f"## Image start-up: did not run\n\n{why}\n")
        return 1
    rows = variants(stock_package("rfc3987_syntax"))
    load0 = os.getloadavg()
    for i in range(args.warmup + args.runs):
        warm = i < args.warmup
        say(f"{'warm-up' if warm else 'run'} {i + 1 - (0 if warm else args.warmup)}")
        for v in bl.rotated(rows, i):
            target = Series(v.name) if warm else v.series
            launch.run_floor(v.config, target, [], extra=v.extra, args=v.args)
            if target.values:
                say(f"  {v.name}: {target.values[-1]:.3f} s")
    imports: dict[str, list[Imports]] = {"stock": [], "ours": []}
    timelines: dict[str, list[dict[str, float]]] = {"stock": [], "ours": []}
    for _ in range(args.profile_runs):
        for v, key in ((rows[0], "stock"), (rows[1], "ours")):
            got = profiled_start(v, args=["--debug"])
            if got:
                timelines[key].append(timeline(*got))
            got = profiled_start(v, extra=["-e", "PYTHONPROFILEIMPORTTIME=1"])
            parsed = parse_importtime(got[0]) if got else None
            if parsed:
                imports[key].append(parsed)

    text = ["## Image start-up: what each trim saves (as shjuser1)\n",
            f"{bl.machine_note()}. {args.runs} runs, variants interleaved (order rotated), "
            f"{args.warmup} warm-up round(s) not counted. Load average before: "
            f"{load0[0]:.2f}. Every row is a bare `podman run -d` of the session's container "
            "until `GET /api` = 200; \"ratio to floor\" is to our image with every trim.\n",
            bl.table(bl.SERIES_HEADERS, bl.series_rows([v.series for v in rows], rows[1].series)),
            saving_table(rows)]
    if timelines["stock"] or timelines["ours"]:
        text.append(f"#### Where the server's start goes ({len(timelines['stock'])}/"
                    f"{len(timelines['ours'])} starts of stock/ours at `--debug`, not timed)\n\n"
                    + timeline_table(timelines["stock"], timelines["ours"]))
    if imports["stock"] or imports["ours"]:
        text.append(f"#### Where the import time goes ({len(imports['stock'])}/"
                    f"{len(imports['ours'])} starts of stock/ours with "
                    "`PYTHONPROFILEIMPORTTIME=1`, not timed)\n\n"
                    + import_table(imports["stock"], imports["ours"]))
    failures = [f"- {v.name}: {why}" for v in rows for why in v.series.failures]
    if failures:
        text.append("Failures:\n" + "\n".join(failures) + "\n")
    bl.write_result("image", "\n".join(text))
    return 0


def saving_table(rows: list[Variant]) -> str:
    ours = rows[1].series.median()
    stock = rows[0].series.median()
    out = []
    for v in rows[2:]:
        m = v.series.median()
        delta = None if m is None or ours is None else m - ours
        if v.kind == "trim":
            out.append([v.name.removeprefix("undone: "), bl.fmt(delta), v.lost])
        else:
            out.append([v.name, bl.fmt(None if delta is None else -delta), v.lost])
    if ours is not None and stock is not None:
        out.append(["everything: stock floor minus ours", bl.fmt(stock - ours), ""])
    return ("#### Saving of each trim (median of its row minus ours; a candidate: ours minus "
            "its row)\n\n" + bl.table(("trim", "saving", "what users lose (would lose)"), out))


if __name__ == "__main__":
    raise SystemExit(bl.main_wrapper(main))
