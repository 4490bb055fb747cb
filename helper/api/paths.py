"""Where the helper listens, and the names both sides agree on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SOCKET = Path("/run/tether/helper.sock")
SOCKET_ENV = "TETHER_HELPER_SOCKET"
DEFAULT_GROUP = "tether"
TOKEN_METADATA = "tether-token"
API_LEVEL = 1
# sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL.
MAX_SOCKET_PATH = 103


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """The main socket: $TETHER_HELPER_SOCKET when set, else /run/tether/helper.sock."""
    value = (os.environ if environ is None else environ).get(SOCKET_ENV, "")
    return Path(value) if value else DEFAULT_SOCKET


def auth_socket_for(socket_path: Path) -> Path:
    """The credentials ("token") socket that sits next to the main one: helper.sock -> helper-auth.sock."""
    return socket_path.with_name(f"{socket_path.stem}-auth{socket_path.suffix or '.sock'}")
