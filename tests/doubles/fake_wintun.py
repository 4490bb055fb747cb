"""Stand-ins for wintun.dll (``tether.helper.root.vif.wintun``): adapters and a session kept in memory.

``FakeWintunSession`` follows ``WintunSession``: ``deliver`` puts a packet in its receive ring (as if
the OS routed it into the adapter) and sets the read event; ``sent`` collects what the device wrote;
``send_capacity`` bounds the send ring; ``end`` makes ``receive`` raise EOFError. ``FakeWintunApi``
has the adapter calls the device makes, over a set of existing adapter names.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from tether.helper.root.vif.wintun import WintunError


class FakeWintunSession:
    def __init__(self, send_capacity: int = 1000) -> None:
        self.ring: collections.deque[bytes] = collections.deque()
        self.sent: list[bytes] = []
        self.send_capacity = send_capacity
        self.event = threading.Event()
        self.ended = False
        self.fail_with: BaseException | None = None
        self._lock = threading.Lock()

    def deliver(self, *packets: bytes) -> None:
        with self._lock:
            self.ring.extend(packets)
        self.event.set()

    def receive(self) -> bytes | None:
        if self.fail_with is not None:
            raise self.fail_with
        if self.ended:
            raise EOFError("the session ended")
        with self._lock:
            if self.ring:
                return self.ring.popleft()
            self.event.clear()
            return None

    def wait_readable(self, timeout: float) -> None:
        self.event.wait(timeout)

    def send(self, packet: bytes | bytearray | memoryview) -> bool:
        if self.ended or len(self.sent) >= self.send_capacity:
            return False
        self.sent.append(bytes(packet))
        return True

    def end(self) -> None:
        self.ended = True
        self.event.set()


class FakeWintunApi:
    """The adapter calls of wintun.dll; handles are ints, ``created``/``closed`` record what happened."""

    def __init__(self, existing: set[str] | None = None, fail_create: bool = False) -> None:
        self.adapters: dict[int, str] = {}
        self.existing = set(existing or ())
        self.created: list[str] = []
        self.closed: list[str] = []
        self.fail_create = fail_create
        self._next = 100

    def _handle(self, name: str) -> int:
        self._next += 1
        self.adapters[self._next] = name
        return self._next

    def WintunOpenAdapter(self, name: str) -> int:
        return self._handle(name) if name in self.existing else 0

    def WintunCreateAdapter(self, name: str, tunnel_type: str, guid: Any) -> int:
        if self.fail_create:
            return 0
        self.existing.add(name)
        self.created.append(name)
        return self._handle(name)

    def WintunCloseAdapter(self, handle: int) -> None:
        name = self.adapters.pop(handle)
        if name in self.created:
            self.existing.discard(name)
            self.closed.append(name)

    def fail(self, call: str) -> WintunError:
        return WintunError(5, f"{call} failed: Access is denied.")
