"""`tether helper start|cleanup`: run the privileged helper in the foreground, or undo its leftovers."""

from __future__ import annotations

import argparse
import os
import sys

from tether.helper.user.cli import exitcodes


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
    start.set_defaults(handler=cmd_start)

    cleanup = sub.add_parser(
        "cleanup",
        help="undo what a crashed helper left behind: devices, routes, firewall and DNS settings (root)",
    )
    cleanup.add_argument("--force", action="store_true", help="clean up even if the journal's helper still runs")
    cleanup.add_argument("--journal", help="the helper's journal (default: /run/tether/journal.json)")
    cleanup.set_defaults(handler=cmd_cleanup)


def cmd_start(args: argparse.Namespace) -> int:
    from tether.helper.root import allocator, daemon

    words = sys.argv[1:]
    # Only where this process is the command (not a test calling it): it may be re-executed under mimalloc.
    if any(words[i : i + 2] == ["helper", "start"] for i in range(len(words))):
        try:
            allocator.adopt()
        except ValueError as exc:
            print(f"tether-helper: {exc}", file=sys.stderr)
            return exitcodes.USAGE
    return daemon.run(args)


def cmd_cleanup(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("tether: cleanup needs root: run `sudo tether helper cleanup`", file=sys.stderr)
        return exitcodes.PERMISSION
    import tether.helper.root.cleanup as cleanup  # root-side code, loaded only when this command runs

    try:
        report = cleanup.run(args.journal or cleanup.DEFAULT_JOURNAL_PATH, force=args.force)
    except RuntimeError as exc:  # e.g. CleanupRefused: the journal's helper is still running
        print(f"tether: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    print(report)
    return exitcodes.OK if report.ok else exitcodes.FAILURE
