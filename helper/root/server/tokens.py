"""Short-lived tokens that stand for a caller the kernel identified on the credentials socket.

gRPC over a unix socket does not tell a Python handler who the peer is, so a client first connects
to the small credentials socket; the helper reads the peer's uid, gid, pid and groups from the kernel
and answers with a random token bound to them. The client then sends that token as ``tether-token``
metadata on every call, and the server resolves it back to the ``Caller``.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tether.helper.api.paths import TOKEN_METADATA
from tether.helper.root.server.caller import Caller

DEFAULT_TTL = 600.0
MAX_TOKENS = 4096
MAX_TOKENS_PER_UID = 64
REFETCH_HINT = "fetch a new token from the helper's credentials socket (the client library does this by itself)"


class TokenError(Exception):
    """Missing, unknown or expired token; the message says what to do."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: float
    caller: Caller


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    expires_at: float


class TokenStore:
    """Issue and resolve tokens. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = MAX_TOKENS,
        max_per_uid: int = MAX_TOKENS_PER_UID,
    ) -> None:
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        self.ttl = ttl
        self._clock = clock
        self._max = max_tokens
        self._max_per_uid = max_per_uid
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def issue(self, caller: Caller) -> IssuedToken:
        self._expire()
        # One uid asking over and over only pushes out its own oldest tokens, not other users'.
        mine = [token for token, entry in self._entries.items() if entry.caller.uid == caller.uid]
        for token in mine[: max(0, len(mine) - self._max_per_uid + 1)]:
            del self._entries[token]
        token = secrets.token_hex(32)
        self._entries[token] = _Entry(caller, self._clock() + self.ttl)
        while len(self._entries) > self._max:  # the oldest go first
            self._entries.popitem(last=False)
        return IssuedToken(token=token, expires_in=self.ttl, caller=caller)

    def resolve(self, token: str | None) -> Caller:
        if not token:
            raise TokenError(f"no {TOKEN_METADATA} metadata on the call: {REFETCH_HINT}")
        entry = self._entries.get(token)
        if entry is None:
            raise TokenError(f"unknown token (the helper may have restarted): {REFETCH_HINT}")
        if self._clock() >= entry.expires_at:
            del self._entries[token]
            raise TokenError(f"the token has expired: {REFETCH_HINT}")
        return entry.caller

    def revoke(self, token: str) -> None:
        self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        # Entries are in issue order and share one ttl, so the expired ones are at the front.
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                break
            del self._entries[token]
