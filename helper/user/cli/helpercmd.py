"""`tether helper start|cleanup`: run the privileged helper in the foreground, or undo its leftovers."""

from __future__ import annotations

import argparse
import inspect
import os
import sys

from tether.helper.user.cli import exitcodes

CLEANUP_MODULE = "tether.helper.root.cleanup"


def register(commands: argparse._SubParsersAction) -> None:
    from tether.helper.root import daemon

    helper = commands.add_parser(
        "helper",
        help="run or clean up the privileged helper (root)",
        description="The helper is the root daemon that owns the TUN device, routes and DNS. It normally runs "
        "as the tether-helper service; these commands are for running it by hand and for repairs.",
    )
    sub = helper.add_subparsers(dest="helper_command", metavar="COMMAND", required=True)
    start = sub.add_parser(
        "start",
        help="run the helper in the foreground (root)",
        description="Run the helper in the foreground until Ctrl-C, SIGTERM or `tether quit`.",
    )
    daemon.add_arguments(start)
    start.set_defaults(handler=daemon.run)

    cleanup = sub.add_parser(
        "cleanup",
        help="undo what a crashed helper left behind: devices, routes, firewall and DNS settings (root)",
    )
    cleanup.add_argument("--force", action="store_true", help="clean up even if the journal's helper still runs")
    cleanup.add_argument("--journal", help="the helper's journal (default: /run/tether/journal.json)")
    cleanup.set_defaults(handler=cmd_cleanup)


def cmd_cleanup(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("tether: cleanup needs root: run `sudo tether helper cleanup`", file=sys.stderr)
        return exitcodes.PERMISSION
    try:
        import tether.helper.root.cleanup as cleanup
    except ModuleNotFoundError as exc:
        if exc.name != CLEANUP_MODULE:
            raise
        print("nothing to clean up: this build has no cleanup hook")
        return exitcodes.OK
    accepted = inspect.signature(cleanup.run).parameters
    kwargs: dict[str, object] = {}
    if args.force and "force" in accepted:
        kwargs["force"] = True
    if args.journal and "journal_path" in accepted:
        kwargs["journal_path"] = args.journal
    try:
        result = cleanup.run(**kwargs)
    except RuntimeError as exc:  # e.g. CleanupRefused: the journal's helper is still running
        print(f"tether: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    if result is None or isinstance(result, int):
        return int(result or 0)
    print(result)
    return exitcodes.OK if getattr(result, "ok", True) else exitcodes.FAILURE
