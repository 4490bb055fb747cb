"""The manager's table of client sessions (pure: the clock is injected)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass


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


class SessionTable:
    """Sessions keyed by id; one that is not seen for idle_timeout seconds expires."""

    def __init__(self, idle_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle timeout must be positive, got {idle_timeout}")
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: dict[str, ClientSession] = {}

    def arrive(self, name: str, namespace: str, version: str) -> ClientSession:
        now = self._clock()
        # Unguessable ids: a session id is the only thing that lets a caller use a session.
        session = ClientSession(secrets.token_hex(16), name, namespace, version, now, now)
        self._sessions[session.session_id] = session
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
        return self._sessions.pop(session_id, None)

    def expire(self) -> list[ClientSession]:
        now = self._clock()
        expired = [s for s in self._sessions.values() if self._is_idle(s, now)]
        for session in expired:
            del self._sessions[session.session_id]
        return expired

    def __len__(self) -> int:
        return len(self._sessions)

    def _is_idle(self, session: ClientSession, now: float) -> bool:
        return now - session.last_seen > self._idle_timeout
