"""The manager's table of client sessions (pure: the clock is injected); one client address holds a capped
number of them."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tether.manager.limits import DEFAULT_SESSIONS_PER_ADDRESS, LimitReachedError


class UnknownSessionError(KeyError):
    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"unknown or expired session {self.session_id!r}"


@dataclass
class ClientSession:
    session_id: str
    name: str
    namespace: str
    version: str
    arrived_at: float
    last_seen: float
    address: str = ""  # where the client called from ("" when unknown)


class SessionTable:
    """Sessions keyed by id; one that is not seen for idle_timeout seconds expires."""

    def __init__(
        self,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        per_address: int = DEFAULT_SESSIONS_PER_ADDRESS,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle timeout must be positive, got {idle_timeout}")
        if per_address < 1:
            raise ValueError(f"sessions per address must be at least 1, got {per_address}")
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._per_address = per_address
        self._sessions: dict[str, ClientSession] = {}
        self._by_address: Counter[str] = Counter()

    def arrive(self, name: str, namespace: str, version: str, address: str = "") -> ClientSession:
        """A new session; LimitReachedError when ``address`` holds as many as it may (idle ones expire first)."""
        now = self._clock()
        if self._by_address[address] >= self._per_address:
            self.expire()
            held = self._by_address[address]
            if held >= self._per_address:
                raise LimitReachedError(
                    f"client address {address or '?'} has {held} sessions, at most {self._per_address}"
                )
        # Unguessable ids: a session id is the only thing that lets a caller use a session.
        session = ClientSession(secrets.token_hex(16), name, namespace, version, now, now, address)
        self._sessions[session.session_id] = session
        self._by_address[address] += 1
        return session

    def get(self, session_id: str) -> ClientSession:
        session = self._sessions.get(session_id)
        if session is None or self._is_idle(session, self._clock()):
            raise UnknownSessionError(session_id)
        return session

    def remain(self, session_id: str) -> ClientSession:
        session = self.get(session_id)
        session.last_seen = self._clock()
        return session

    def depart(self, session_id: str) -> ClientSession | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._forget_address(session)
        return session

    def expire(self) -> list[ClientSession]:
        now = self._clock()
        expired = [s for s in self._sessions.values() if self._is_idle(s, now)]
        for session in expired:
            del self._sessions[session.session_id]
            self._forget_address(session)
        return expired

    def _forget_address(self, session: ClientSession) -> None:
        self._by_address[session.address] -= 1
        if self._by_address[session.address] <= 0:
            del self._by_address[session.address]

    def __len__(self) -> int:
        return len(self._sessions)

    def _is_idle(self, session: ClientSession, now: float) -> bool:
        return now - session.last_seen > self._idle_timeout
