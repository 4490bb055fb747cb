"""`tether-helper` (also `tether helper start`): the privileged daemon, in the foreground.

Start-up: refuse unless root; undo what a crashed helper left behind (``tether.helper.root.cleanup.run()``,
unless ``--no-cleanup``); build the session (``tether.helper.root.session.create_session(SessionConfig)``);
serve the API (``tether.helper.root.server.server``) until SIGTERM/SIGINT or a Quit call; then stop serving,
close the session (which undoes its changes) and remove the sockets.

Exit status: 0 after a clean stop (signal or Quit), 1 when it cannot start or fails, 4 when not root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.helper.api.paths import default_socket
from tether.helper.root.fdlimit import raise_nofile
from tether.helper.root.server.accounts import accounts
from tether.helper.root.server.server import (
    HelperServer,
    ServerOptions,
    ServerSetupError,
    existed_before_tether,
    preflight,
)
from tether.helper.root.server.session_api import Session, SessionConfig
from tether.manager.api.version import __version__
from tether.runtime import eventloop, logs

log = logging.getLogger("tether.helper")

DEFAULT_STATE_DIR = Path("/var/lib/tether")
EXIT_OK, EXIT_FAILURE, EXIT_NOT_ROOT = 0, 1, 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="the API socket (default: $TETHER_HELPER_SOCKET or /run/tether/helper.sock); "
        "the credentials socket goes next to it",
    )
    parser.add_argument(
        "--group",
        default=None,
        help='group (name or gid) allowed to use the sockets (default: "tether", which must exist)',
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log format on stderr (default: text on a terminal, else json)",
    )
    parser.add_argument("--log-level", default=os.environ.get("TETHER_LOG_LEVEL", "info"), help="log level")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="persistent state (journals)")
    parser.add_argument(
        "--session-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the session (repeatable)",
    )
    parser.add_argument(
        "--no-cleanup", action="store_true", help="skip undoing what a previous (crashed) helper left behind"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether-helper",
        description="Tether's privileged helper: owns the TUN device, routes and DNS for one cluster connection, "
        "and serves the tether CLI and tray on a local socket.",
    )
    parser.add_argument("--version", action="version", version=f"tether-helper {__version__}")
    add_arguments(parser)
    return parser


def create_session(config: SessionConfig) -> Session:
    """The real session (``tether.helper.root.session.create_session``)."""
    # Imported here: every `tether` command imports this module (for `tether helper start`), and the
    # session brings in the TUN, routing, DNS and Kubernetes code.
    import tether.helper.root.session as session_module

    return session_module.create_session(config)


def journal_path(config: SessionConfig) -> Path:
    """Where the session keeps its journal: ``--session-option journal=PATH``, else ``<runtime dir>/journal.json``."""
    return Path(config.options.get("journal", str(config.runtime_dir / "journal.json")))


def startup_cleanup(journal: Path) -> str:
    """Undo a crashed helper's leftovers; what was found of an unclean end, in words ("" after a clean one)."""
    import tether.helper.root.cleanup as cleanup  # here for the same reason as the session

    started = time.monotonic()
    try:
        report = cleanup.run(journal)
    except cleanup.CleanupRefused as exc:
        raise ServerSetupError(str(exc)) from None
    took = round(time.monotonic() - started, 3)
    # A journal left behind means the previous helper did not end cleanly, even when what it changed went
    # with it (its TUN, its owned nftables table) and nothing was left to remove.
    if not report.removed and report.journal == "missing":
        log.info("start-up cleanup found nothing", extra={"seconds": took})
        return ""
    log.info("cleaned up after a previous helper", extra={"removed": report.removed, "seconds": took})
    if report.errors:
        log.warning("cleanup left things behind", extra={"errors": report.errors})
    return recovered_note(report.removed, report.errors)


def recovered_note(removed: Sequence[str], errors: Sequence[str]) -> str:
    """The words clients show for a predecessor's unclean end and what the cleanup did about it."""
    note = "the previous helper ended uncleanly (killed or crashed during a session); "
    if removed:
        note += "its start-up cleanup removed " + ", ".join(removed)
    else:
        note += "nothing of it was left on this machine"
    if errors:
        note += "; left behind: " + "; ".join(errors)
    return note


def _parse_options(pairs: Sequence[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--session-option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


# Given, once the helper serves, a function that asks it to stop from any thread (the Windows service's Stop).
StopReady = Callable[[Callable[[], None]], None]


async def serve(args: argparse.Namespace, stop_ready: StopReady | None = None) -> int:
    socket_path = args.socket or default_socket()
    server_options = ServerOptions(socket_path=socket_path, group=args.group)
    config = SessionConfig(
        runtime_dir=socket_path.parent, state_dir=args.state_dir, options=_parse_options(args.session_option)
    )
    # Before preflight creates it: only a directory Tether made (now or before a crash) is removed at stop.
    directory_existed = existed_before_tether(socket_path.parent)
    preflight(server_options)  # root, group, socket directory, another helper: refuse before changing anything
    # Before any socket: the DNS server's caps are a share of this limit (see fdlimit).
    log.info("open-files limit", extra={"nofile": raise_nofile()})
    if not args.no_cleanup:
        # pyroute2's synchronous API runs an event loop of its own: keep it off this one.
        recovered = await asyncio.to_thread(startup_cleanup, journal_path(config))
        config = dataclasses.replace(config, recovered=recovered)
    session = create_session(config)
    server = HelperServer(session, server_options, directory_existed=directory_existed)
    loop = asyncio.get_running_loop()
    try:
        await server.start()
    except BaseException:
        await session.close()
        raise
    if stop_ready is not None:
        stop_ready(lambda: loop.call_soon_threadsafe(server.request_stop))
    # Windows' event loop has no signal handlers: there Ctrl+C (KeyboardInterrupt) or a Quit call stops it.
    handled = () if sys.platform == "win32" else (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        loop.add_signal_handler(signum, server.request_stop)
    try:
        await server.wait()
        log.info("stopping", extra={"reason": "quit" if server.quit_requested else "signal"})
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await server.stop()
    try:
        await session.close()
    except Exception:
        log.exception("closing the session failed")
        return EXIT_FAILURE
    server.remove_directory()  # empty now that the session's journal is gone
    return EXIT_OK


def run(args: argparse.Namespace, stop_ready: StopReady | None = None) -> int:
    fmt = args.log_format or ("text" if sys.stderr.isatty() else "json")
    logs.configure(args.log_level, fmt)
    if not accounts().is_privileged():
        print(
            "tether-helper: must run as root (it creates a network device, routes and DNS settings); "
            "use `sudo tether helper start` or the tether-helper service",
            file=sys.stderr,
        )
        return EXIT_NOT_ROOT
    try:
        return eventloop.run(serve(args, stop_ready))
    except (ServerSetupError, ValueError) as exc:
        print(f"tether-helper: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
