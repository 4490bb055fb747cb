"""Congestion control for one TCP connection we send on: NewReno (RFC 5681, RFC 6582, RFC 3042). Pure.

The connection tells it what the app's ACKs did (new data acknowledged, a duplicate, a retransmission
timeout) and asks how much may be in flight; it answers in numbers and in what to do next (send more,
retransmit the first unacknowledged segment), never touching segments itself. Sequence numbers are the
connection's unwrapped ints. The choices:

* Slow start below ``ssthresh`` grows the window by every byte acknowledged (no ABC limit: the peer is a
  local app and ACKs every second segment); above it, congestion avoidance adds about one MSS per window.
* Three duplicate ACKs enter fast recovery (unless they are about data sent before the last one, RFC 6582's
  ``recover``); each further one inflates the window by an MSS; a partial ACK retransmits the next hole and
  deflates; the full ACK sets the window to ``ssthresh``.
* The first two duplicates each let one more new segment out (limited transmit) to draw the third.
* A timeout halves the flight into ``ssthresh`` and restarts from one segment.
* The window never grows past twice what the peer's window or our send buffer could use: an app that reads
  slowly would otherwise let it climb without bound, and the next loss would then be met with a burst.
"""

from __future__ import annotations

# What on_duplicate_ack asks of the connection.
HOLD, SEND, FAST_RETRANSMIT = range(3)


class NewReno:
    __slots__ = ("cwnd", "dupacks", "in_recovery", "mss", "recover", "ssthresh")

    def __init__(self, mss: int, initial_segments: int, iss: int) -> None:
        self.mss = mss
        self.cwnd = initial_segments * mss
        self.ssthresh = 1 << 62  # none yet: slow start until the first loss
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss  # the highest sequence sent when the last recovery began

    def window(self) -> int:
        """Bytes that may be in flight now: the congestion window, plus a segment per duplicate ACK that has not
        (yet) started a fast retransmit (limited transmit)."""
        dupacks = self.dupacks
        if 0 < dupacks < 3 and not self.in_recovery:
            return self.cwnd + dupacks * self.mss
        return self.cwnd

    def on_ack(self, ack: int, acked: int, usable: int) -> bool:
        """``acked`` new bytes were acknowledged, up to ``ack``; ``usable`` is the larger of the peer's biggest
        window and our send buffer. True: a partial ACK in recovery, retransmit the first unacknowledged
        segment now (RFC 6582)."""
        mss = self.mss
        retransmit = False
        if self.in_recovery:
            if ack >= self.recover:
                # Full ACK: cwnd = ssthresh (RFC 6582's first option). The other, min(ssthresh, flight + MSS),
                # is 1 MSS when the retransmission filled the only hole, and a lone segment waits out the
                # receiver's delayed ACK.
                self.in_recovery = False
                self.cwnd = self.ssthresh
            else:
                retransmit = True  # the next hole was lost too
                cwnd = self.cwnd - acked + mss
                self.cwnd = cwnd if cwnd > mss else mss
        elif self.cwnd < self.ssthresh:
            self.cwnd += acked
        else:
            grow = mss * acked // self.cwnd
            self.cwnd += grow if grow > 1 else 1
        cap = usable * 2 + 2 * mss
        if self.cwnd > cap:
            self.cwnd = cap
        self.dupacks = 0
        return retransmit

    def on_duplicate_ack(self, snd_una: int, snd_max: int) -> int:
        """A duplicate ACK while ``snd_una``..``snd_max`` is in flight: HOLD, SEND (the window has room for more),
        or FAST_RETRANSMIT (resend the first unacknowledged segment; recovery has begun)."""
        self.dupacks += 1
        mss = self.mss
        if self.in_recovery:
            self.cwnd += mss
            return SEND
        if self.dupacks < 3:
            return SEND  # limited transmit
        if self.dupacks == 3 and snd_una >= self.recover:
            flight = snd_max - snd_una
            self.ssthresh = max(flight >> 1, 2 * mss)
            self.recover = snd_max
            self.in_recovery = True
            self.cwnd = self.ssthresh + 3 * mss
            return FAST_RETRANSMIT
        return HOLD

    def on_timeout(self, snd_una: int, snd_max: int) -> None:
        """The retransmission timer expired with ``snd_una``..``snd_max`` in flight: start over from one segment."""
        mss = self.mss
        self.ssthresh = max((snd_max - snd_una) >> 1, 2 * mss)
        self.cwnd = mss
        self.in_recovery = False
        self.dupacks = 0
        self.recover = snd_max
