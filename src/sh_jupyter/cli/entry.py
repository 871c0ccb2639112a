"""The `sh-jupyter` command: thin argument handling over the library.

Bad input anywhere (flags, config file, environment) ends here with one line on stderr and
exit status 2, before anything is created, submitted or started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sh_jupyter import config as config_mod
from sh_jupyter._version import __version__
from sh_jupyter.errors import (
    EXIT_SCHEDULER_UNAVAILABLE,
    EXIT_SESSION_FAILED,
    EXIT_USAGE,
    SchedulerUnavailable,
    SessionFailure,
    UsageError,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are our one-line, exit-2 errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"sh-jupyter: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


def _positive_int(field: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{field} = {text!r}: must be a positive whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{field} = {text!r}: must be at least 1")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sh-jupyter", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sh-jupyter {__version__}")
    parser.add_argument("--config", help=f"site config file (default ${config_mod.ENV_VAR} "
                        f"or {config_mod.DEFAULT_PATH})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a session's supervisor (inside the job, or --local)")
    run.add_argument("--local", action="store_true", help="run on this machine without Slurm")
    run.add_argument("--session-dir", help="session directory (default: the job's working "
                     "directory, or a new one under session.sessions_dir with --local)")
    run.add_argument("--session-id", help="session id (a UUID; default: new, or the session "
                     "directory's name)")
    run.add_argument("--cpus", type=_positive_int("--cpus"), default=0)
    run.add_argument("--memory", type=_positive_int("--memory"), default=0,
                     help="memory in GiB")

    submit = sub.add_parser("submit", help="submit a JupyterLab session job (sbatch wrapper)")
    submit.add_argument("-M", "--cluster", default="", help="back-end cluster")
    submit.add_argument("-p", "--partition", default="")
    submit.add_argument("-c", "--cpus", help="CPUs/cores (default and maximum: site config)")
    submit.add_argument("--memory", help="memory in GiB (default and maximum: site config)")
    submit.add_argument("-t", "--time", help="walltime, e.g. 2:00:00 (maximum: site config)")
    submit.add_argument("--gpus", help="GPUs, where the site allows them")
    submit.add_argument("-w", "--nodelist", default="",
                        help="run on these nodes only (Slurm node names or ranges)")
    submit.add_argument("--image", help="one of the site's images by name (default: the "
                        "site's first; `sh-jupyter images` lists them)")
    submit.add_argument("--notify", action="store_true",
                        help="e-mail me when JupyterLab is ready, if the session fails, and "
                        "before its walltime runs out")
    submit.add_argument("--wait", action="store_true",
                        help="follow the job until JupyterLab is ready, then print the URL")
    submit.add_argument("--json", action="store_true", help="machine-readable output")
    submit.add_argument("--test-only", action="store_true",
                        help="submit nothing: print when Slurm would start this request and "
                        "which smaller request within the site's limits would start now")
    submit.add_argument("--stdin", action="store_true",
                        help="read the request as one JSON object from standard input instead "
                        "of the flags (launchers: also command, base_url, auth and a secret "
                        "environment, which never appear in argv)")

    wait = sub.add_parser("wait", help="follow a session until JupyterLab is ready or the "
                          "session ends (exit 0 ready, 3 failed)")
    wait.add_argument("session", help="session id (or a unique prefix of it)")
    wait.add_argument("--json", action="store_true",
                      help="one JSON card per line, each time the card changes")
    wait.add_argument("--no-scheduler", action="store_true",
                      help="read only the session's status file, never ask Slurm (for a "
                      "launcher that watches the job itself)")

    for name, text in (("status", "show a session's job card"),
                       ("connect", "print the session's auto-login URL"),
                       ("cancel", "cancel the session's job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("session", help="session id (or a unique prefix of it)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
    lst = sub.add_parser("list", help="your sessions, like My Interactive Sessions")
    lst.add_argument("--json", action="store_true", help="machine-readable output")

    doc = sub.add_parser("doctor", help="check this node (and you on it) for what a session "
                         "needs; exit 0 ok, 1 warning, 2 error")
    doc.add_argument("--json", action="store_true", help="machine-readable output")

    imgs = sub.add_parser("images", help="the site's images a session may run")
    imgs.add_argument("--json", action="store_true", help="machine-readable output")

    cfg = sub.add_parser("config", help="check the site config or print its reference")
    cfg.add_argument("--reference", action="store_true", help="print the key reference")
    return parser


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(config_mod.reference_markdown())
        return 0
    cfg = config_mod.load(args.config)
    print(f"{cfg.path}: valid")
    return 0


def _cmd_images(args: argparse.Namespace) -> int:
    import json

    images = config_mod.load(args.config).images
    if args.json:
        print(json.dumps([{"name": i.name, "description": i.description, "gpu": i.gpu,
                           "default": n == 0} for n, i in enumerate(images)], indent=2))
    else:
        for n, i in enumerate(images):
            print(f"{i.name}{' (default)' if n == 0 else ''}: {i.description}"
                  + (" [needs GPUs]" if i.gpu else ""))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from sh_jupyter.doctor.node import Doctor
    from sh_jupyter.doctor.report import render, worst

    findings = Doctor(args.config).run()
    print(render(findings, args.json))
    return worst(findings)


def _cmd_run(args: argparse.Namespace) -> int:
    # the supervisor's side only: the path to Connect
    from sh_jupyter.supervisor.entry import supervise

    return supervise(handoff=True, local=args.local, session_dir=args.session_dir,
                     session_id=args.session_id, cpus=args.cpus, memory_gib=args.memory,
                     config=config_mod.load(args.config))


def _handler(command: str):
    """The command's function; the submit side's modules load only for its commands, so the
    supervisor (`run`, on the path to Connect) does not pay for them."""
    own = {"run": _cmd_run, "config": _cmd_config, "doctor": _cmd_doctor,
           "images": _cmd_images}
    if command in own:
        return own[command]
    from sh_jupyter.cli import sessions as commands

    return commands.COMMANDS[command]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _handler(args.command)(args)
    except UsageError as exc:
        sys.stderr.write(f"sh-jupyter: {exc}\n")
        return EXIT_USAGE
    except SessionFailure as exc:
        sys.stderr.write(f"sh-jupyter: {exc}\n")
        return EXIT_SESSION_FAILED
    except SchedulerUnavailable as exc:  # unknown, not failed: the session may well run
        sys.stderr.write(f"sh-jupyter: {exc}\n")
        return EXIT_SCHEDULER_UNAVAILABLE

