"""Where the helper listens, and the names both sides agree on."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Per platform: macOS has no /run, its runtime directory is /var/run (cleared at boot, like Linux's /run).
SOCKET_PATHS = {"linux": Path("/run/tether/helper.sock"), "darwin": Path("/var/run/tether/helper.sock")}


def platform_socket(platform: str = sys.platform) -> Path:
    """The helper's socket on ``platform`` (a ``sys.platform`` value); Linux's for platforms not listed."""
    return SOCKET_PATHS.get(platform, SOCKET_PATHS["linux"])


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
