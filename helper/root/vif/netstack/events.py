"""What the stack tells its owner. Events are small slotted objects made per flow and batch, not per packet.

Every flow announced by ``DialRequested`` ends with exactly one ``Closed`` (or
its subclass ``Reset``), whoever ended it; after that its handle is inert.
Within one flow, events come in order: ``Data`` before ``PeerClosed`` before
``Closed``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Flow(Protocol):
    """What an event's flow offers its owner; ``TcpFlow`` and ``UdpFlow`` both are one (described here, not
    imported, so that the flows may import their events)."""

    protocol: str
    tag: Any

    @property
    def src(self) -> tuple[IPAddress, int]: ...

    @property
    def dst(self) -> tuple[IPAddress, int]: ...

    @property
    def closed(self) -> bool: ...

    def accept(self) -> None: ...

    def refuse(self) -> None: ...

    def unreachable(self) -> None: ...

    def send(self, data: bytes | bytearray | memoryview) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Event:
    __slots__ = ("flow",)
    __match_args__ = ("flow",)

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flow!r})"


class DialRequested(Event):
    """A new TCP connection (its SYN) or UDP flow (its first datagram) arrived.

    TCP: dial the destination, then call ``flow.accept()``, ``flow.refuse()`` or
    ``flow.unreachable()``; the app sees no SYN-ACK before ``accept()``.
    UDP: datagrams are delivered right away; ``refuse()``/``unreachable()``
    answer the app with an ICMP error if the dial fails.
    """

    __slots__ = ()


class Data(Event):
    """In-order TCP bytes from the app (all that arrived for this flow in the batch, joined).

    Call ``flow.consumed(len(data))`` once they are handed on: until then they
    count against the receive window the app sees.
    """

    __slots__ = ("data",)
    __match_args__ = ("flow", "data")

    def __init__(self, flow: Flow, data: bytes) -> None:
        self.flow = flow
        self.data = data

    def __repr__(self) -> str:
        return f"Data({self.flow!r}, {len(self.data)} bytes)"


class Datagram(Event):
    """One UDP datagram from the app; boundaries are kept."""

    __slots__ = ("data",)
    __match_args__ = ("flow", "data")

    def __init__(self, flow: Flow, data: bytes) -> None:
        self.flow = flow
        self.data = data

    def __repr__(self) -> str:
        return f"Datagram({self.flow!r}, {len(self.data)} bytes)"


class PeerClosed(Event):
    """The app sent FIN after all its data: forward eof. The flow may still send until the owner closes it."""

    __slots__ = ()


class Writable(Event):
    """A ``send()`` that took less than offered has been followed by room (at least half the send buffer)."""

    __slots__ = ()


class Closed(Event):
    """The flow is over and forgotten; ``reason`` says how.

    Reasons: ``done`` (both directions closed), ``reset`` (the app sent RST, see
    ``Reset``), ``aborted``/``refused``/``unreachable``/``closed`` (the owner asked),
    ``timeout`` (handshake or retransmissions gave up, or no dial answer), ``idle`` (UDP).
    """

    __slots__ = ("reason",)
    __match_args__ = ("flow", "reason")

    def __init__(self, flow: Flow, reason: str) -> None:
        self.flow = flow
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flow!r}, {self.reason!r})"


class Reset(Closed):
    """The app reset the TCP connection: abort the tunnel stream. Any data before the RST came first."""

    __slots__ = ()

    def __init__(self, flow: Flow, reason: str = "reset") -> None:
        super().__init__(flow, reason)
