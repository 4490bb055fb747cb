"""Where the helper listens and keeps its runtime files, and the names both sides agree on."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath, PureWindowsPath

# The helper's runtime directory per platform (sockets, journal): cleared at boot on Linux (/run) and
# macOS (/var/run, as it has no /run); Windows has no such directory, so it is under %ProgramData%.
RUNTIME_DIRS: dict[str, PurePath] = {
    "linux": Path("/run/tether"),
    "darwin": Path("/var/run/tether"),
    "win32": PureWindowsPath(r"C:\ProgramData\Tether"),
}
PROGRAMDATA_ENV = "ProgramData"
# Windows: where clients get their token (and the gRPC address); see helper.root.server.pipe_windows.
AUTH_PIPE = r"\\.\pipe\tether-helper-auth"


def runtime_dir(platform: str = sys.platform, environ: Mapping[str, str] | None = None) -> Path:
    """The helper's runtime directory on ``platform`` (a ``sys.platform`` value); Linux's for platforms not listed.

    On Windows it follows %ProgramData% when that is set (it is not always on C:)."""
    if platform == "win32":
        base = (os.environ if environ is None else environ).get(PROGRAMDATA_ENV, "")
        if base:
            return Path(PureWindowsPath(base, "Tether"))
    return Path(RUNTIME_DIRS.get(platform, RUNTIME_DIRS["linux"]))


def journal_for(socket_path: Path) -> Path:
    """The helper's journal beside its socket (it exists only while a session is up, or after a crash)."""
    return socket_path.parent / "journal.json"


def platform_socket(platform: str = sys.platform) -> Path:
    """The helper's socket on ``platform``: ``helper.sock`` in its runtime directory.

    On Windows nothing listens there (gRPC is on loopback TCP, tokens come from ``AUTH_PIPE``); the
    path only places the runtime directory."""
    return runtime_dir(platform) / "helper.sock"


DEFAULT_SOCKET = platform_socket()
SOCKET_ENV = "TETHER_HELPER_SOCKET"
DEFAULT_GROUP = "tether"
TOKEN_METADATA = "tether-token"
API_LEVEL = 1
# sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL.
MAX_SOCKET_PATH = 103


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """The main socket: $TETHER_HELPER_SOCKET when set, else the platform's (/run/tether/helper.sock on Linux)."""
    value = (os.environ if environ is None else environ).get(SOCKET_ENV, "")
    return Path(value) if value else DEFAULT_SOCKET


def auth_socket_for(socket_path: Path) -> Path:
    """The credentials ("token") socket that sits next to the main one: helper.sock -> helper-auth.sock."""
    return socket_path.with_name(f"{socket_path.stem}-auth{socket_path.suffix or '.sock'}")
