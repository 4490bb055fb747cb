"""Retransmission timing for one TCP connection we send on: RTT estimate, RTO, backoff, persist interval. Pure.

RFC 6298 with Linux's floor: ``srtt``/``rttvar`` from the round trips the connection measures, an RTO of
``srtt + 4 rttvar`` clamped to ``min_rto``..``max_rto`` (the floor is Linux's 200 ms, not the RFC's 1 s:
the peer is a local app), doubled on each timeout; a handshake whose SYN-ACK was resent gives no sample
and restarts from the initial RTO. ``retries`` counts timeouts in a row without an acceptable ACK; the
connection decides when that is too many. The persist timer (zero-window probes) starts at the RTO and
doubles up to ``max_rto``.

Which segment is timed is the connection's business (it knows its sequence space, and drops the
measurement once anything is retransmitted: Karn's rule); it hands the round trip to ``sample`` and arms
its one timer with the durations read here. Nothing here knows the clock but through the times it is
handed.
"""

from __future__ import annotations


class RetransmitTimer:
    __slots__ = (
        "initial_rto", "max_rto", "min_rto", "probe_interval", "retries", "rto", "rttvar", "srtt", "syn_sent_at",
    )  # fmt: skip

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.initial_rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt = -1.0  # no sample yet
        self.rttvar = 0.0
        self.rto = initial_rto
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
        """The retransmission timer went off: back off. Returns the timeouts in a row so far."""
        self.retries += 1
        rto = self.rto * 2
        self.rto = rto if rto < self.max_rto else self.max_rto
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
