"""Tunables of the netstack, with defaults sized for a local TUN with a large MTU."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetStackConfig:
    # The TUN device's MTU: the biggest packet we build, and what our MSS is derived from.
    mtu: int = 1500
    # Per TCP flow: app bytes the owner may hold unconsumed (= our advertised receive window, at most).
    rcv_buf: int = 1 << 20
    # Per TCP flow: bytes queued towards the app (unsent + unacked); send() takes no more.
    snd_buf: int = 1 << 20
    # Retransmission timeout (RFC 6298), seconds. The minimum is Linux's, not the RFC's 1 s: the peer is local.
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 60.0
    # Give up (RST, Closed "timeout") after this many RTOs in a row without progress.
    max_retries: int = 10
    syn_ack_retries: int = 5
    # Delayed ACK (RFC 1122 4.2.3.2, RFC 5681 4.2), seconds; 0 (the default) ACKs every batch of received data at
    # once. Otherwise an ACK for in-order data is held this long, or until a segment we send carries it, or until
    # two full-sized segments are unacknowledged: a request's ACK then rides on its response (one TUN write less).
    delayed_ack: float = 0.0
    # Initial congestion window, in segments (RFC 6928 uses 10).
    initial_cwnd: int = 10
    # Holes (out-of-order blocks) kept per flow; data making more is dropped (the app retransmits). Bytes are
    # bounded by the receive window anyway.
    max_out_of_order: int = 256
    # TIME-WAIT after we closed first; a new SYN on the same 4-tuple ends it at once.
    time_wait: float = 1.0
    # Backstop for an owner that never answers a DialRequested: then the app gets a RST.
    dial_timeout: float = 75.0
    udp_idle_timeout: float = 60.0
    # Flow table sizes; beyond them new TCP flows are refused (RST) and new UDP flows dropped.
    max_tcp_flows: int = 65536
    max_udp_flows: int = 16384
    # Answer ICMP/ICMPv6 echo requests to any routed address locally.
    answer_ping: bool = True
    # Verify IP/TCP/UDP/ICMP checksums on input (drop bad ones). input(..., checksum_verified=True) skips the
    # TCP/UDP check for one packet (a virtio-net header said NEEDS_CSUM or DATA_VALID).
    verify_checksums: bool = True
    # Leave outgoing TCP/UDP checksums partial (pseudo-header sum only) for a TUN opened with IFF_VNET_HDR and
    # TUNSETOFFLOAD(TUN_F_CSUM): the owner writes each packet behind a virtio_net_hdr with NEEDS_CSUM,
    # csum_start = IP header length (20 or 40) and csum_offset 16 (TCP) or 6 (UDP); see partial_checksum_offsets().
    # Locally delivered packets are then never summed at all. ICMP is always complete.
    partial_checksums: bool = False
    # Seed for initial sequence numbers (tests); None draws from the OS.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 576 <= self.mtu <= 65535:
            raise ValueError(f"mtu {self.mtu} is outside 576..65535")
        if self.rcv_buf < 1 or self.snd_buf < 1:
            raise ValueError("rcv_buf and snd_buf must be positive")
        if self.rcv_buf > 1 << 30:
            raise ValueError("rcv_buf above 1 GiB cannot be advertised")
        if not 0 <= self.delayed_ack <= 0.5:
            raise ValueError(f"delayed_ack {self.delayed_ack} is outside 0..0.5 s (RFC 1122's limit)")
