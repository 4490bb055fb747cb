"""What the VIF asks of whatever carries its flows: a stream creator, the stream it opens, the events it reads.

The engine is given a :data:`StreamCreator`; for each new flow it calls it with the flow's protocol and
ends and gets a :class:`FlowStream`. It reads the stream's answer to the open (:data:`OPENED` or a
:class:`Refused`), then data as plain ``bytes`` and the rest as typed events (:data:`EOF`, a
:class:`Refused` that comes late, an :class:`Aborted`, and last :data:`ENDED`), and writes data, eof and
close. Nothing here knows the manager: ``tunnel.streams`` maps these onto its messages. Optionally a
:class:`Carrier` also hears where the engine's batches end, so that what many flows wrote goes out in one go.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[IPAddress, int]


class FlowProtocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


class DialFailure(enum.Enum):
    """Why a destination was not reached; the app hears it as a RST or an ICMP error (see ``netstack``)."""

    REFUSED = "refused"  # nothing listens there: RST, or ICMP port unreachable (UDP)
    UNREACHABLE = "unreachable"  # ICMP host unreachable
    TIMEOUT = "timeout"  # as unreachable: the app's connect fails at once rather than waiting out its own timer
    INVALID = "invalid"  # the carrier would not take the flow at all: as refused


class Opened:
    """The destination accepted the flow."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OPENED"


class Eof:
    """The far side will send no more (TCP half-close); the flow may still send."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EOF"


class Ended:
    """The stream is over: no event follows. After an ``EOF`` both ways this is a clean end."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ENDED"


OPENED, EOF, ENDED = Opened(), Eof(), Ended()


@dataclass(frozen=True, slots=True)
class Refused:
    """The destination was not reached (or, for UDP, stopped being reachable): ``detail`` says how."""

    reason: DialFailure
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Aborted:
    """The far side ended the flow abnormally; ``detail`` says why."""

    detail: str = ""


StreamEvent = Opened | Refused | Eof | Aborted | Ended


class StreamRefusedError(Exception):
    """Raised by a :data:`StreamCreator` for a flow it cannot carry at all (no session yet, a destination nobody
    handed out): the flow is refused at once, in the batch that brought it."""

    def __init__(self, reason: DialFailure, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FlowStream(Protocol):
    """One flow's stream. A carrier's failure shows as a ConnectionError from what awaits."""

    def on_opened(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` the moment the destination accepts, before ``opened`` returns, if the carrier can
        tell then (so the app's SYN-ACK needs no task switch). Set right after the stream is opened."""

    async def opened(self) -> Opened | Refused:
        """The answer to the open: ``OPENED``, or why the destination was not reached."""

    def read(self) -> Awaitable[bytes | StreamEvent]:
        """Data as bytes (TCP: a piece of the stream; UDP: one datagram), anything else as an event."""

    def write(self, data: bytes) -> Awaitable[None]:
        """Send TCP bytes (any amount: the carrier splits them) or one UDP datagram, once the carrier can."""

    def write_eof(self) -> Awaitable[None]: ...

    def try_write(self, data: bytes) -> bool:
        """Send at once if the carrier can without waiting (any amount); False: nothing was sent, use write."""

    def try_write_eof(self) -> bool:
        """Send the eof at once if the carrier can; False: use write_eof."""

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        """From now on data may be handed to ``sink`` as it arrives while ``read`` waits; the sink returns how many
        bytes it took, the rest comes from ``read``. A carrier that cannot does nothing."""

    def close(self) -> None:
        """Done with the stream; if the far side has not ended it, it is cancelled."""


# Opens the stream that carries a new flow: (protocol, the app's end, the destination the app asked for).
# The open is on its way when this returns, if the carrier sends without waiting. Raises StreamRefusedError.
StreamCreator = Callable[[FlowProtocol, Endpoint, Endpoint], FlowStream]


class Carrier(Protocol):
    """What the engine tells the carrier of its streams besides opening them (all optional for a carrier that
    writes each stream's frames at once)."""

    def flush(self) -> None:
        """The engine's batch is complete: send now what its flows opened and wrote."""

    def set_after_receive(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after the carrier has handed on what it read at once (data to sinks, early opens):
        the engine then writes their packets together, in the same turn of the loop."""

    def close(self) -> None:
        """The engine has stopped."""
