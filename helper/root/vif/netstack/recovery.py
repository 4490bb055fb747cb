"""Retransmission timing for one TCP connection we send on: RTT estimate, RTO, backoff, persist interval. Pure.

RFC 6298 with Linux's floor: ``srtt``/``rttvar`` from one timed segment per flight (Karn's rule: a sample
is dropped once anything is retransmitted, and a handshake whose SYN-ACK was resent gives none), an RTO of
``srtt + 4 rttvar`` clamped to ``min_rto``..``max_rto`` (the floor is Linux's 200 ms, not the RFC's 1 s:
the peer is a local app), doubled on each timeout. ``retries`` counts timeouts in a row without an
acceptable ACK; the connection decides when that is too many. The persist timer (zero-window probes)
starts at the RTO and doubles up to ``max_rto``.

The connection owns its one timer and arms it with the durations read here; nothing here knows the clock
but through the times it is handed.
"""

from __future__ import annotations


class RetransmitTimer:
    __slots__ = (
        "initial_rto", "max_rto", "min_rto", "probe_interval", "retries", "rto", "rttvar", "srtt", "syn_sent_at",
        "timed_at", "timed_seq",
    )  # fmt: skip

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.initial_rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt = -1.0  # no sample yet
        self.rttvar = 0.0
        self.rto = initial_rto
        # The segment being timed: the sequence number an ACK must reach, and when it was sent (-1: none).
        self.timed_seq = -1
        self.timed_at = 0.0
        self.syn_sent_at = 0.0
        self.retries = 0
        self.probe_interval = 0.0  # the persist timer's next interval; 0: not probing

    def sample(self, rtt: float) -> None:
        """One round-trip measurement (RFC 6298 2.2, 2.3)."""
        if rtt < 0:
            return
        if self.srtt < 0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        rto = self.srtt + max(0.001, 4 * self.rttvar)
        self.rto = self.min_rto if rto < self.min_rto else self.max_rto if rto > self.max_rto else rto

    def time_segment(self, end: int, now: float) -> None:
        """A segment ending at ``end`` went out for the first time at ``now``: time it. The connection asks only
        while ``timed_seq`` < 0 (one sample per flight), and checks that itself on its transmit loop."""
        self.timed_seq = end
        self.timed_at = now

    def acked(self, ack: int, now: float) -> None:
        """New data was acknowledged up to ``ack``: the timed segment, if this covers it, gives a sample."""
        timed = self.timed_seq
        if timed >= 0 and ack >= timed:
            self.sample(now - self.timed_at)
            self.timed_seq = -1

    def forget_sample(self) -> None:
        """Something was retransmitted: an ACK can no longer tell which copy it answers (Karn)."""
        self.timed_seq = -1

    def syn_sent(self, now: float) -> None:
        """Our SYN-ACK went out for the first time: the handshake is timed from here, at the initial RTO."""
        self.rto = self.initial_rto
        self.syn_sent_at = now

    def established(self, now: float) -> None:
        """The handshake completed: its round trip is the first sample, unless the SYN-ACK had to be resent; then
        the RTO starts over from its initial value (RFC 6298 5.7)."""
        if self.retries == 0:
            self.sample(now - self.syn_sent_at)
        else:
            self.rto = self.initial_rto
        self.retries = 0

    def expired(self) -> int:
        """The retransmission timer went off: back off, and forget the timed segment. Returns the timeouts in
        a row so far."""
        self.retries += 1
        rto = self.rto * 2
        self.rto = rto if rto < self.max_rto else self.max_rto
        self.timed_seq = -1
        return self.retries

    def next_probe(self) -> float:
        """The persist timer's interval from now: the RTO for the first probe, then what ``probed`` left."""
        if not self.probe_interval:
            self.probe_interval = self.rto
        return self.probe_interval

    def probed(self) -> None:
        """A zero-window probe went out: wait twice as long for the next (up to ``max_rto``)."""
        interval = self.probe_interval * 2
        self.probe_interval = interval if interval < self.max_rto else self.max_rto

    def window_opened(self) -> None:
        """The peer's window grew: a later zero window is probed from the RTO again."""
        self.probe_interval = 0.0
