"""Tunnel stream messages: building them and checking the first one (pure).

A flow is one gRPC stream. The client's first message is an Open that names
the protocol and the destination; the manager answers with a DialResult; after
that both sides send data, an eof (TCP half-close) or an abort.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

from tether.manager.api import manager_pb2 as pb
from tether.manager.api.wire import IPAddress, endpoint_from_pb, endpoint_to_pb

# One message carries at most this much payload. Large frames keep the
# per-message cost of Python gRPC off the bulk path; 256 KiB measured best.
MAX_CHUNK = 256 * 1024
# The gRPC channel's message limit must leave room above MAX_CHUNK.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The biggest UDP payload a datagram can carry.
MAX_DATAGRAM = 65507

DEFAULT_DIAL_TIMEOUT = 5.0
DEFAULT_UDP_IDLE_TIMEOUT = 60.0
MAX_DIAL_TIMEOUT = 60.0


class Protocol(Enum):
    TCP = pb.TCP
    UDP = pb.UDP


class TunnelError(ValueError):
    """A tunnel message that breaks the protocol; the text names the offending value."""


@dataclass(frozen=True)
class FlowSpec:
    session_id: str
    protocol: Protocol
    destination: tuple[IPAddress, int]
    source: tuple[IPAddress, int] | None
    dial_timeout: float
    idle_timeout: float
    via: tuple[str, str, str] | None = None  # (namespace, name, kind): dial from that workload's agent

    def describe(self) -> str:
        dst_ip, dst_port = self.destination
        host = f"[{dst_ip}]" if dst_ip.version == 6 else str(dst_ip)
        return f"{self.protocol.name.lower()}://{host}:{dst_port}"


def open_message(
    session_id: str,
    protocol: Protocol,
    destination: tuple[IPAddress, int],
    source: tuple[IPAddress, int] | None = None,
    dial_timeout: float = 0.0,
    idle_timeout: float = 0.0,
    via: tuple[str, str, str] | None = None,
) -> pb.TunnelMessage:
    """``via``: (namespace, name, kind) of the workload whose agent dials (--proxy-via); None: the manager."""
    return pb.TunnelMessage(
        open=pb.TunnelOpen(
            session_id=session_id,
            protocol=protocol.value,
            destination=endpoint_to_pb(*destination),
            source=endpoint_to_pb(*source) if source else None,
            dial_timeout_ms=int(dial_timeout * 1000),
            idle_timeout_ms=int(idle_timeout * 1000),
            via=pb.WorkloadRef(namespace=via[0], name=via[1], kind=via[2]) if via else None,
        )
    )


def parse_open(message: pb.TunnelMessage) -> FlowSpec:
    """Check a stream's first message and return what it asks for."""
    kind = message.WhichOneof("kind")
    if kind != "open":
        raise TunnelError(f"the first tunnel message must be open, got {kind or 'an empty message'}")
    request = message.open
    try:
        protocol = Protocol(request.protocol)
    except ValueError:
        raise TunnelError(f"unsupported tunnel protocol {request.protocol}") from None
    if not request.HasField("destination"):
        raise TunnelError("tunnel open has no destination")
    try:
        destination = endpoint_from_pb(request.destination)
        source = endpoint_from_pb(request.source) if request.HasField("source") else None
    except ValueError as exc:
        raise TunnelError(f"bad tunnel endpoint: {exc}") from None
    dst_ip, dst_port = destination
    if dst_port == 0:
        raise TunnelError(f"destination port 0 is not dialable ({dst_ip})")
    if dst_ip.is_unspecified or dst_ip.is_multicast or _is_broadcast(dst_ip):
        raise TunnelError(f"destination {dst_ip} is not a unicast address")
    dial_timeout = request.dial_timeout_ms / 1000 or DEFAULT_DIAL_TIMEOUT
    idle_timeout = request.idle_timeout_ms / 1000 or DEFAULT_UDP_IDLE_TIMEOUT
    return FlowSpec(
        session_id=request.session_id,
        protocol=protocol,
        destination=destination,
        source=source,
        dial_timeout=min(dial_timeout, MAX_DIAL_TIMEOUT),
        idle_timeout=idle_timeout,
        via=_parse_via(request.via) if request.HasField("via") else None,
    )


# --- proxy-via: the workload whose agent dials ------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
VIA_KINDS = ("", "Deployment", "ReplicaSet", "StatefulSet")


def _parse_via(via: pb.WorkloadRef) -> tuple[str, str, str]:
    for what, value in (("namespace", via.namespace), ("name", via.name)):
        if len(value) > 63 or not _LABEL.fullmatch(value):
            raise TunnelError(f'tunnel via workload {what} "{value}" is not a valid DNS-1123 label')
    if via.kind not in VIA_KINDS:
        raise TunnelError(f'tunnel via workload kind "{via.kind}" is not one of {", ".join(VIA_KINDS[1:])}')
    return via.namespace, via.name, via.kind


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _is_broadcast(address: IPAddress) -> bool:
    return address == _BROADCAST


def data_message(payload: bytes) -> pb.TunnelMessage:
    return pb.TunnelMessage(data=payload)


def chunks(payload: bytes, limit: int = MAX_CHUNK) -> list[bytes]:
    """Split a TCP payload into frames no larger than limit (UDP datagrams are never split)."""
    if len(payload) <= limit:
        return [payload]
    view = memoryview(payload)
    return [bytes(view[i : i + limit]) for i in range(0, len(payload), limit)]


def dial_ok() -> pb.TunnelMessage:
    return pb.TunnelMessage(dial=pb.DialResult(ok=True))


def dial_failed(reason: pb.DialResult.Reason, error: str) -> pb.TunnelMessage:
    return pb.TunnelMessage(dial=pb.DialResult(ok=False, reason=reason, error=error))


def eof_message() -> pb.TunnelMessage:
    return pb.TunnelMessage(eof=pb.Empty())


def abort_message(reason: str) -> pb.TunnelMessage:
    return pb.TunnelMessage(abort=reason)


def dial_reason_for(error: BaseException) -> pb.DialResult.Reason:
    """Map a dial failure to the reason a client turns into RST or ICMP unreachable."""
    if isinstance(error, ConnectionRefusedError):
        return pb.DialResult.REFUSED
    if isinstance(error, TimeoutError):
        return pb.DialResult.TIMEOUT
    if isinstance(error, OSError):
        return pb.DialResult.UNREACHABLE
    return pb.DialResult.INVALID
