"""A userspace TCP/UDP/ICMP stack for the TUN device: pure state machines, no I/O.

Apps' packets to routed (cluster) addresses come in as raw IP packets; each
TCP connection and UDP flow is terminated here and surfaces as a flow handle
with events, whose bytes the owner carries over the tunnel. See ``stack`` for
how to drive it, ``events`` for what it reports, ``tcp``/``udp``/``icmp`` for
the protocol choices.
"""

from tether.helper.root.vif.netstack.config import NetStackConfig
from tether.helper.root.vif.netstack.events import (
    Closed,
    Data,
    Datagram,
    DialRequested,
    Event,
    PeerClosed,
    Reset,
    Writable,
)
from tether.helper.root.vif.netstack.packets import PacketError
from tether.helper.root.vif.netstack.stack import NetStack
from tether.helper.root.vif.netstack.tcp import TcpFlow
from tether.helper.root.vif.netstack.udp import UdpFlow

__all__ = [
    "Closed",
    "Data",
    "Datagram",
    "DialRequested",
    "Event",
    "NetStack",
    "NetStackConfig",
    "PacketError",
    "PeerClosed",
    "Reset",
    "TcpFlow",
    "UdpFlow",
    "Writable",
]
