"""The user's session commands (submit, status, list, connect, wait, cancel): thin over the
public API (api.py), human output by default and `--json` for portals and launchers."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sh_jupyter import api
from sh_jupyter import config as config_mod
from sh_jupyter.cli.render import render, when
from sh_jupyter.errors import EXIT_SESSION_FAILED, SessionFailure, UsageError

# The request flags of `submit`; with --stdin the request comes as JSON instead.
_REQUEST_FLAGS = {"cpus": "--cpus", "memory": "--memory", "time": "--time",
                  "partition": "--partition", "cluster": "--cluster", "gpus": "--gpus",
                  "nodelist": "--nodelist", "image": "--image"}


def _emit(args: argparse.Namespace, data, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _progress_line(fields: api.Card) -> str:
    stamp = time.strftime("%H:%M:%S")
    unknown = (f" (job state unknown: {fields['scheduler_error']})"
               if fields.get("scheduler_error") else "")
    return f"{stamp} {fields['status']}" + (f": {fields['reason']}" if fields["reason"] else "") \
        + unknown


def _request(args: argparse.Namespace) -> dict:
    """The request from the flags, or (--stdin) one JSON object on standard input, which is
    how launchers pass a command, base_url, auth and secret environment (never argv)."""
    if not args.stdin:
        return {"cpus": args.cpus, "memory_gib": args.memory, "walltime": args.time,
                "partition": args.partition, "cluster": args.cluster, "gpus": args.gpus,
                "nodelist": args.nodelist, "image": args.image, "notify": args.notify}
    given = [flag for dest, flag in {**_REQUEST_FLAGS, "notify": "--notify"}.items()
             if getattr(args, dest)]
    if given:
        raise UsageError(given[0], getattr(args, given[0].lstrip("-")),
                         "cannot be combined with --stdin (put it in the JSON request)")
    return api.request_from_json(sys.stdin.read())


def _finish(args: argparse.Namespace, final: api.Card, session: api.SessionArg,
            cfg: config_mod.Config, streamed: bool = False) -> int:
    """The end of a wait: the connect URL when it runs, the reason when it ended. `streamed`:
    the cards went out as JSON lines already, the last one included."""
    if final["status"] == "Running" and not (streamed and args.json):
        url = api.connection(session, cfg).login_url
        _emit(args, {**final, "connect_url": url}, f"{final['message']}\nconnect: {url}")
    elif final["status"] != "Running" and not (streamed and args.json):
        _emit(args, final, f"session ended: {final['reason'] or 'completed'}")
    return EXIT_SESSION_FAILED if final["failed"] else 0


def _estimate_text(est: api.Estimate) -> str:
    def what(e: dict) -> str:
        part = f", partition {e['partition']}" if e["partition"] else ""
        return f"{e['cpus']} CPUs, {e['memory_gib']} GiB{part}"
    if est["refused"]:
        lines = [f"Slurm would never start this request ({what(est)}): {est['refused']}"]
    elif est["starts_now"]:
        lines = [f"Slurm would start this request ({what(est)}) now."]
    else:
        lines = [f"Slurm would start this request ({what(est)}) at "
                 f"{when(est['start_at']) if est['start_at'] else 'an unknown time'}."]
        flags = {"cpus": "--cpus", "memory_gib": "--memory", "partition": "--partition"}
        for alt in est["alternatives"]:
            lines.append(f"  would start now: {flags[alt['changed']]} {alt[alt['changed']]} "
                         f"({what(alt)})")
        if not est["alternatives"]:
            lines.append("  no smaller request within the site's limits would start sooner")
    lines.append("Nothing was submitted (--test-only).")
    return "\n".join(lines)


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if args.test_only:
        if args.wait:
            raise UsageError("--wait", True, "cannot be combined with --test-only")
        est = api.estimate(**_request(args), config=cfg)
        _emit(args, est, _estimate_text(est))
        return 0
    done = api.submit(**_request(args), config=cfg)
    data = {"session_id": done.session_id, "job_id": done.job_id,
            "session_dir": done.session_dir}
    _emit(args, data, f"session {done.session_id} submitted as job {done.job_id} "
          f"({cfg['session.job_name']}); `sh-jupyter status {done.session_id[:8]}` shows its card")
    if not args.wait:
        return 0

    def progress(fields: api.Card) -> None:
        if not args.json:
            print(_progress_line(fields), flush=True)
    return _finish(args, api.wait(done, progress, config=cfg), done, cfg)


def cmd_wait(args: argparse.Namespace) -> int:
    """Follow a session until it runs or ends; with --json one card per line as it changes."""
    cfg = config_mod.load(args.config)
    session = api.find(args.session, cfg)

    def progress(fields: api.Card) -> None:
        if args.json:
            print(json.dumps(fields, sort_keys=True), flush=True)
        else:
            print(_progress_line(fields), flush=True)
    final = api.wait(session, progress, ask_scheduler=not args.no_scheduler, config=cfg)
    return _finish(args, final, session, cfg, streamed=True)


def cmd_status(args: argparse.Namespace) -> int:
    fields = api.card(args.session, args.config)
    _emit(args, fields, render(fields))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cards = api.sessions(args.config)
    lines = [f"{c['session_id']}  {c['job_id'] or '-':>8}  {c['created_at']}  {c['status']}"
             + (" (failed)" if c["failed"] else "")
             + (" (job state unknown)" if c["scheduler_error"] else "") for c in cards]
    error = next((c["scheduler_error"] for c in cards if c["scheduler_error"]), "")
    if error and not args.json:
        lines.append(f"job states unknown, shown as last recorded: {error}")
    _emit(args, cards, "\n".join(lines) or "no sessions")
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    session = api.find(args.session, cfg)
    fields = api.card(session, cfg)  # the job's state now, not only what status.json recorded
    if fields["status"] != "Running":
        why = f": {fields['reason']}" if fields["reason"] else ""
        raise SessionFailure(f"session {fields['session_id']} is not running "
                             f"({fields['status']}{why})")
    conn = api.connection(session, cfg)
    _emit(args, {"url": conn.login_url, "host": conn.host, "port": conn.port,
                 "password": conn.password}, conn.login_url)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    done = api.cancel(args.session, args.config)
    _emit(args, {"session_id": done.session_id, "job_id": done.job_id, "cancelled": True},
          f"job {done.job_id} of session {done.session_id} cancelled")
    return 0


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "list": cmd_list,
            "connect": cmd_connect, "wait": cmd_wait, "cancel": cmd_cancel}
