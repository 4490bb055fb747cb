"""The agent's credential: its pod's projected service-account token, read from a file and re-read when the
kubelet replaces it (it rotates projected tokens before they expire, swapping the file atomically)."""

from __future__ import annotations

import os
from pathlib import Path

from tether.manager.agentauth import TOKEN_METADATA_KEY
from tether.manager.api.sidecar import DEFAULT_TOKEN_FILE as AGENT_TOKEN_PATH

DEFAULT_TOKEN_FILE = Path(AGENT_TOKEN_PATH)  # where the injected sidecar mounts it
#: A token is a JWT of a few KB; anything far larger is not one.
MAX_TOKEN_BYTES = 64 * 1024

Metadata = tuple[tuple[str, str], ...]


class TokenFileError(OSError):
    """The token file cannot be read or holds no token; the text names the file."""


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) of the file last read
        self._token = ""

    def read(self) -> str:
        """The token, read again only when the file changed."""
        try:
            # stat follows the ..data symlink a projected volume swaps, so a new token is a new inode.
            info = self.path.stat()
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
            if seen != self._seen:
                if info.st_size > MAX_TOKEN_BYTES:
                    raise TokenFileError(f"token file {self.path} is {info.st_size} bytes: not a token")
                token = self.path.read_text(encoding="ascii").strip()
                if not token or any(c.isspace() for c in token):
                    raise TokenFileError(f"token file {self.path} holds no token")
                self._token, self._seen = token, seen
        except TokenFileError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise TokenFileError(f"cannot read token file {self.path}: {reason}") from None
        return self._token

    def metadata(self) -> Metadata:
        """gRPC call metadata carrying the token."""
        return ((TOKEN_METADATA_KEY, f"Bearer {self.read()}"),)


def default_token_file() -> Path:
    return Path(os.environ.get("TETHER_TOKEN_FILE") or DEFAULT_TOKEN_FILE)
