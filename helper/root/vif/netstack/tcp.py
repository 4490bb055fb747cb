"""One TCP connection, server side: we stand in for the cluster destination the app connected to.

The app is the active opener. A SYN creates the flow in ``DIALING`` and the
owner gets ``DialRequested``; nothing goes back to the app until the owner
answers: ``accept()`` sends the SYN-ACK (→ ``SYN_RECEIVED``), ``refuse()``
sends RST|ACK, which is what a closed port answers, so the app's connect()
fails with ECONNREFUSED, and ``unreachable()`` sends ICMP host/address
unreachable, which aborts the app's connect() with EHOSTUNREACH. SYNs repeated
while dialing are absorbed. The rest is RFC 793/9293 with these choices:

* Sequence numbers are kept unwrapped (plain growing ints); incoming 32-bit
  values are unwrapped against ``rcv_nxt``/``snd_una``, outgoing ones masked.
* Receive side: in-order bytes are queued for the owner and reported as one
  ``Data`` event per flow per ``events()`` call. The advertised window is
  ``rcv_buf`` minus what the owner has not ``consumed()``, so a slow tunnel
  closes the app's window instead of growing a buffer. Out-of-order segments
  within the window are kept as merged blocks (at most ``max_out_of_order``
  holes; bytes are bounded by the window) and each one is answered at once
  with a duplicate ACK carrying SACK blocks when the app offered SACK, so the
  app's own loss recovery repairs holes quickly. In-order data is ACKed once per
  batch: ACKs are generated at ``output()`` time, piggybacked on data when there
  is some (no delayed-ACK timer), or at once when a quarter of the window has
  gone un-ACKed within a big batch.
* Send side: ``send()`` appends to a bounded buffer and returns how much it
  took; segments go out at ``output()``, so several sends in a batch coalesce
  into full segments (no Nagle timer). Each segment respects the app's window
  and a congestion window: NewReno (``congestion``: slow start, congestion
  avoidance, fast retransmit/recovery on three duplicate ACKs with limited
  transmit), an RTO with go-back-N, timed as ``recovery`` says (RFC 6298 with
  Linux's 200 ms minimum, Karn's rule). We do not keep a SACK scoreboard: the
  app's SACK blocks only mark its ACKs as duplicates. A local TUN rarely loses
  (a burst can overflow the kernel's backlog, or the reader's queue drop ACKs)
  and then this backs off and recovers; there is no tail-loss probe, so a lost
  last ACK of a flight costs one RTO. Zero windows are probed by the persist
  timer (with an old sequence number, like Linux) until the app reads again;
  that never times the flow out.
* Sequence checks follow RFC 5961: a RST is taken only when its sequence number
  is exactly ``rcv_nxt`` (in-window others get a challenge ACK, the rest are
  dropped); a SYN on a synchronized connection gets a challenge ACK.
* TIME-WAIT lasts ``time_wait`` (1 s by default; we are the server and the
  peer is local) and a new SYN on the same 4-tuple ends it at once.
* No urgent data, no timestamps, no ECN: options we do not answer in the
  SYN-ACK are simply not used by the app.

Owner-facing methods never raise for a flow that has meanwhile ended; they do
nothing (``send`` returns 0) and the owner learns the end from ``Closed``.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from typing import Any

from tether.helper.root.vif.netstack.congestion import FAST_RETRANSMIT, SEND, NewReno
from tether.helper.root.vif.netstack.context import StackContext
from tether.helper.root.vif.netstack.events import Closed, Data, PeerClosed, Reset, Writable
from tether.helper.root.vif.netstack.icmp import destination_unreachable
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH, RST, SYN, TcpTemplate, has_sack_blocks, tcp_options
from tether.helper.root.vif.netstack.reassembly import OutOfOrder
from tether.helper.root.vif.netstack.recovery import RetransmitTimer

M32 = 0xFFFFFFFF

CLOSED, DIALING, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSING, TIME_WAIT, CLOSE_WAIT, LAST_ACK = range(10)
STATE_NAMES = (
    "CLOSED", "DIALING", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT",
    "CLOSE-WAIT", "LAST-ACK",
)  # fmt: skip
# States in which we may still (re)transmit data or our FIN.
_SENDING = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
# States in which the app may still send data (it has not sent FIN).
_RECEIVING = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))

_T_NONE, _T_DIAL, _T_RTO, _T_PERSIST, _T_TIME_WAIT = range(5)
_DEFAULT_MSS = {4: 536, 6: 1220}
_QUOTE = 1232  # enough of the SYN to quote in an ICMP error
# With delayed ACKs, a window update waits for the next segment while the app can still send this much.
_UPDATE_SLACK = 32 * 1024


def _window_shift(buffer: int) -> int:
    shift = 0
    while (buffer >> shift) > 0xFFFF and shift < 14:
        shift += 1
    return shift


class TcpTable:
    """The stack's TCP flows by key, and the lists of flows its next ``output()`` and ``events()`` go through."""

    __slots__ = ("delacks", "dirty", "flows", "readable")

    def __init__(self) -> None:
        self.flows: dict[bytes, TcpFlow] = {}
        self.dirty: list[TcpFlow] = []  # flows with something to transmit at the next output()
        self.readable: list[TcpFlow] = []  # flows with Data to report at the next events()
        # Delayed ACKs in the order they fall due (one delay for all): (due, flow); stale when the flow's own
        # ``delack_due`` differs (its ACK went out meanwhile, on data or at once).
        self.delacks: deque[tuple[float, TcpFlow]] = deque()


class TcpFlow:
    """The owner's handle on one TCP connection (and the connection itself)."""

    __slots__ = (
        "ack_every", "ack_pending", "app_addr", "app_port", "buf_seq", "cc", "ctx", "deadline", "delack_due",
        "dst_addr", "dst_port", "fin_queued", "heap_deadline", "in_dirty", "in_readable", "irs", "iss", "key",
        "max_snd_wnd", "mss", "ooo", "rcv_acked", "rcv_adv", "rcv_buf", "rcv_nxt", "rcv_wscale", "rtt_seq", "rtt_time",
        "rtx", "rx", "sack_ok", "snd_buf", "snd_max", "snd_nxt", "snd_una", "snd_wl1", "snd_wl2", "snd_wnd",
        "snd_wscale", "sndbuf", "state", "syn_packet", "table", "tag", "timer_kind", "tpl", "unconsumed",
        "update_threshold", "want_writable", "wscale_ok",
    )  # fmt: skip

    protocol = "tcp"

    def __init__(
        self,
        ctx: StackContext,
        table: TcpTable,
        key: bytes,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        irs: int,
        peer_mss: int | None,
        peer_wscale: int | None,
        peer_sack: bool,
        syn_packet: bytes,
    ) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.table = table
        self.key = key
        self.app_addr, self.app_port, self.dst_addr, self.dst_port = src, sport, dst, dport
        self.tpl = TcpTemplate(dst, src, dport, sport, cfg.partial_checksums)
        self.tag: Any = None
        self.state = DIALING
        self.syn_packet = syn_packet[:_QUOTE]
        version = 6 if len(src) == 16 else 4
        own_mss = cfg.mtu - (60 if version == 6 else 40)
        self.mss = min(peer_mss or _DEFAULT_MSS[version], own_mss)
        # Window scaling only if the app offered it (RFC 7323).
        self.wscale_ok = peer_wscale is not None
        self.sack_ok = peer_sack
        if peer_wscale is None:
            self.snd_wscale = self.rcv_wscale = 0
        else:
            self.snd_wscale = peer_wscale
            self.rcv_wscale = _window_shift(cfg.rcv_buf)
        # Receive side.
        self.irs = irs
        self.rcv_nxt = irs + 1
        self.rcv_buf = cfg.rcv_buf
        self.rcv_adv = self.rcv_acked = self.rcv_nxt
        self.ack_every = max(cfg.rcv_buf // 4, 1)
        self.unconsumed = 0
        self.rx: list[bytes] = []
        self.ooo = OutOfOrder(cfg.max_out_of_order)
        self.update_threshold = min(cfg.rcv_buf // 2, 2 * own_mss) or 1
        # Send side.
        iss = ctx.rng.getrandbits(32)
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.buf_seq = iss + 1
        self.sndbuf = bytearray()
        self.snd_buf = cfg.snd_buf
        self.fin_queued = False
        self.want_writable = False
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.cc = NewReno(self.mss, cfg.initial_cwnd, iss)
        # Timing: one segment at a time is timed (the sequence number an ACK must reach, and when it went out;
        # -1: none), and none that was retransmitted (Karn).
        self.rtx = RetransmitTimer(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        self.rtt_seq = -1
        self.rtt_time = 0.0
        self.timer_kind = _T_NONE
        self.deadline: float | None = None
        self.heap_deadline: float | None = None
        self.ack_pending = False
        self.delack_due = 0.0  # when a held ACK is due; 0: none held
        self.in_dirty = False
        self.in_readable = False
        self._arm(_T_DIAL, ctx.now + cfg.dial_timeout)

    # --- what the owner sees ---

    @property
    def src(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
        """The app's end: (address, port)."""
        return ipaddress.ip_address(self.app_addr), self.app_port

    @property
    def dst(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
        """The destination the app asked for: (address, port)."""
        return ipaddress.ip_address(self.dst_addr), self.dst_port

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def closed(self) -> bool:
        """True once ``Closed`` has been emitted (TIME-WAIT counts as closed)."""
        return self.state in (CLOSED, TIME_WAIT)

    @property
    def send_space(self) -> int:
        """How many bytes ``send()`` would take now."""
        if self.fin_queued or self.state not in (DIALING, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return 0
        return max(self.snd_buf - len(self.sndbuf), 0)

    @property
    def unsent(self) -> int:
        """Bytes queued towards the app and not yet acknowledged by it."""
        return len(self.sndbuf)

    def __repr__(self) -> str:
        (sa, sp), (da, dp) = self.src, self.dst
        if sa.version == 6:
            return f"tcp [{sa}]:{sp}->[{da}]:{dp} {self.state_name}"
        return f"tcp {sa}:{sp}->{da}:{dp} {self.state_name}"

    def accept(self) -> None:
        """The dial succeeded: answer the app's SYN."""
        if self.state != DIALING:
            return
        self.state = SYN_RECEIVED
        self.snd_nxt = self.snd_max = self.iss + 1
        self.rtx.syn_sent(self.ctx.now)
        self._send_syn_ack()
        self._arm(_T_RTO, self.ctx.now + self.rtx.rto)

    def refuse(self) -> None:
        """The destination refused: RST the app's SYN (connection refused). After accept() this is abort()."""
        if self.state != DIALING:
            self.abort()
            return
        self.ctx.out.append(self.tpl.segment(0, self.rcv_nxt, RST | ACK, 0))
        self._finish("refused")

    def unreachable(self) -> None:
        """The destination cannot be reached: answer the SYN with ICMP host unreachable. After accept(): abort()."""
        if self.state != DIALING:
            self.abort()
            return
        self.ctx.out.append(destination_unreachable(self.syn_packet, self.app_addr, self.dst_addr, port=False))
        self._finish("unreachable")

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue bytes for the app; returns how many were taken (fewer when the send buffer is full).

        After a short count, wait for ``Writable``. 0 is also the answer once the
        flow is closing or closed.
        """
        size = len(data)
        if not size or self.fin_queued or self.state not in (DIALING, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return 0
        space = self.snd_buf - len(self.sndbuf)
        if size > space:
            self.want_writable = True
            if space <= 0:
                return 0
            self.sndbuf += memoryview(data)[:space]
            size = space
        else:
            self.sndbuf += data
        if not self.in_dirty:
            self.in_dirty = True
            self.table.dirty.append(self)
        return size

    def consumed(self, count: int) -> None:
        """The owner has passed on ``count`` bytes of ``Data``: they no longer hold the window shut."""
        if count <= 0 or self.state == CLOSED:
            return
        left = self.unconsumed - count
        self.unconsumed = left if left > 0 else 0
        if self.state in _RECEIVING:
            ws = self.rcv_wscale
            free = (self.rcv_buf - self.unconsumed) >> ws
            edge = self.rcv_nxt + ((free if free < 0xFFFF else 0xFFFF) << ws)
            if edge - self.rcv_adv >= self.update_threshold:
                if self.ctx.config.delayed_ack and self.rcv_adv - self.rcv_nxt >= _UPDATE_SLACK:
                    # The app may still send plenty (the first window of a connection, 64 KiB unscaled): the
                    # update can wait for our next segment, as a held ACK does.
                    if not self.delack_due:
                        self._delay_ack()
                else:
                    self._need_ack()

    def close(self) -> None:
        """No more data from the owner: FIN after everything queued has been sent. Before accept(): refuse()."""
        state = self.state
        if state == DIALING:
            self.refuse()
            return
        if self.fin_queued or state not in (SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT):
            return
        self.fin_queued = True
        if state == ESTABLISHED:
            self.state = FIN_WAIT_1
        elif state == CLOSE_WAIT:
            self.state = LAST_ACK
        self._mark_dirty()

    def abort(self) -> None:
        """Reset the connection now, dropping queued data. Before accept(): refuse()."""
        state = self.state
        if state == CLOSED:
            return
        if state == DIALING:
            self.refuse()
            return
        if state == TIME_WAIT:
            self._terminate()
            return
        self.ctx.out.append(self.tpl.segment(self.snd_max, self.rcv_nxt, RST | ACK, 0))
        self._finish("aborted")

    # --- segments from the app ---

    def segment(
        self, seq32: int, ack32: int, flags: int, window: int, payload: memoryview, options: memoryview | bytes = b""
    ) -> None:
        state = self.state
        if state == DIALING:
            self._while_dialing(seq32, flags)
            return
        rcv_nxt = self.rcv_nxt
        d = (seq32 - rcv_nxt) & M32
        if d & 0x80000000:
            d -= 0x100000000
        rwnd = self.rcv_buf - self.unconsumed
        advertised = self.rcv_adv - rcv_nxt
        if advertised > rwnd:
            rwnd = advertised
        if flags & RST:
            if d == 0:
                self._peer_reset()
            elif 0 < d < rwnd:
                self._challenge_ack()
            else:
                self.ctx.counters["tcp_rst_ignored"] += 1
            return
        if flags & SYN:
            if state == SYN_RECEIVED and d == -1:
                self.ctx.counters["tcp_syn_duplicate"] += 1
                self._send_syn_ack()
            else:
                self._challenge_ack()
            return
        fin = flags & FIN
        seglen = len(payload) + fin
        if seglen:
            acceptable = (d < rwnd and d + seglen > 0) or (d == 0 and not payload)
        else:
            acceptable = d == 0 if rwnd <= 0 else 0 <= d < rwnd
        if not acceptable:
            self._need_ack()
            if d == 0 and flags & ACK:
                self._ack(ack32, rcv_nxt, window, 1, options)
            return
        if not flags & ACK:
            return
        if not self._ack(ack32, rcv_nxt + d, window, seglen, options):
            return
        if seglen:
            self._receive(d, payload, fin, rwnd)

    def _while_dialing(self, seq32: int, flags: int) -> None:
        counters = self.ctx.counters
        if flags & RST:
            if seq32 in (self.irs & M32, (self.irs + 1) & M32):
                self._peer_reset()
            else:
                counters["tcp_rst_ignored"] += 1
        elif flags & SYN and not flags & ACK:
            if seq32 != self.irs & M32:
                # The app gave up and retried with a new ISN on the same port: answer that one.
                self.irs = seq32
                self.rcv_nxt = self.rcv_adv = seq32 + 1
            counters["tcp_syn_duplicate"] += 1
        else:
            counters["tcp_before_accept"] += 1

    def _ack(self, ack32: int, seq: int, window: int, seglen: int, options: memoryview | bytes) -> bool:
        """Process the ACK field; False when the segment must be dropped."""
        una = self.snd_una
        d = (ack32 - una) & M32
        if d & 0x80000000:
            d -= 0x100000000
        ack = una + d
        if self.state == SYN_RECEIVED:
            if d <= 0 or ack > self.snd_max:
                self.ctx.out.append(self.tpl.segment(ack32, 0, RST, 0))
                return False
            self._established(ack, seq, window)
            return True
        if ack > self.snd_max:
            self._need_ack()
            return False
        self.rtx.retries = 0
        if d < 0:
            return True
        wnd = window << self.snd_wscale
        window_changed = False
        if seq > self.snd_wl1 or (seq == self.snd_wl1 and ack >= self.snd_wl2):
            old = self.snd_wnd
            if wnd != old:
                window_changed = True
                self.snd_wnd = wnd
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
                if wnd > old:
                    self.rtx.window_opened()
                    self._mark_dirty()
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        if d:
            self._new_ack(ack, d)
        elif not seglen and self.snd_max > una and (not window_changed or (options and has_sack_blocks(options))):
            # RFC 5681 wants the window unchanged, but a receiver whose app keeps reading moves it in every
            # duplicate; one that reports SACK blocks is clearly repeating itself (as RFC 6675 counts them).
            self._dup_ack()
        return True

    def _established(self, ack: int, seq: int, window: int) -> None:
        ctx = self.ctx
        self.snd_una = ack
        wnd = window << self.snd_wscale
        self.snd_wnd = self.max_snd_wnd = wnd
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self.rtx.established(ctx.now)
        self.state = FIN_WAIT_1 if self.fin_queued else ESTABLISHED
        self._arm(_T_NONE, None)
        self._mark_dirty()

    def _new_ack(self, ack: int, acked: int) -> None:
        ctx = self.ctx
        buf_seq = self.buf_seq
        sndbuf = self.sndbuf
        data_end = buf_seq + len(sndbuf)
        upto = ack if ack < data_end else data_end
        if upto > buf_seq:
            del sndbuf[: upto - buf_seq]
            self.buf_seq = upto
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        rtx = self.rtx
        if 0 <= self.rtt_seq <= ack:
            rtx.sample(ctx.now - self.rtt_time)
            self.rtt_seq = -1
        if self.cc.on_ack(ack, acked, self.max_snd_wnd if self.max_snd_wnd > self.snd_buf else self.snd_buf):
            self._retransmit_first()
        if self.snd_max > ack:
            self._arm(_T_RTO, ctx.now + rtx.rto)
        else:
            self._arm(_T_NONE, None)
        if self.fin_queued and ack > data_end:
            state = self.state
            if state == FIN_WAIT_1:
                self.state = FIN_WAIT_2
            elif state == CLOSING:
                self._enter_time_wait()
                return
            elif state == LAST_ACK:
                self._finish("done")
                return
        self._mark_dirty()
        if self.want_writable and self.snd_buf - len(sndbuf) >= self.snd_buf >> 1:
            self.want_writable = False
            ctx.events.append(Writable(self))

    def _dup_ack(self) -> None:
        action = self.cc.on_duplicate_ack(self.snd_una, self.snd_max)
        if action == SEND:
            self._mark_dirty()
        elif action == FAST_RETRANSMIT:
            self.rtt_seq = -1
            self._retransmit_first()
            self.ctx.counters["tcp_fast_retransmit"] += 1

    def _receive(self, d: int, payload: memoryview, fin: int, rwnd: int) -> None:
        if self.state not in _RECEIVING:
            self._need_ack()  # data after the app's FIN: ignore, re-ACK
            return
        if d < 0:
            payload = payload[-d:]
            d = 0
        room = rwnd - d
        if len(payload) > room:
            payload = payload[: room if room > 0 else 0]
            fin = 0
        if d:
            if payload or fin:
                kept = self.ooo.add(self.rcv_nxt + d, payload.tobytes(), fin)
                self.ctx.counters["tcp_ooo_queued" if kept else "tcp_ooo_dropped"] += 1
            self._send_ack()  # a duplicate ACK (with SACK) at once: the app's fast retransmit needs three
            return
        if payload:
            self._deliver(payload.tobytes())
        if fin:
            self.ooo.clear()
            self._peer_fin()
        elif self.ooo:
            chunks, fin_follows = self.ooo.take(self.rcv_nxt)
            for chunk in chunks:
                self._deliver(chunk)
            if fin_follows:
                self._peer_fin()
        unacked = self.rcv_nxt - self.rcv_acked
        if unacked >= self.ack_every:
            self._send_ack()  # a big batch: don't let the app's window run dry waiting for output()
        elif unacked >= 2 * self.mss or (fin and self.state != CLOSE_WAIT) or not self.ctx.config.delayed_ack:
            # Every second full-sized segment is ACKed at once (RFC 5681), and so is a FIN after ours: no segment
            # of ours is coming to carry its ACK.
            self._need_ack()
        elif not self.delack_due:
            self._delay_ack()

    def _delay_ack(self) -> None:
        due = self.ctx.now + self.ctx.config.delayed_ack
        self.delack_due = due
        self.table.delacks.append((due, self))

    def delayed_ack_due(self) -> None:
        """The stack's delayed-ACK timer: the held ACK goes out at the next output()."""
        self.delack_due = 0.0
        if self.state >= ESTABLISHED:
            self.ctx.counters["tcp_delayed_ack"] += 1
            self._need_ack()

    def _deliver(self, data: bytes) -> None:
        size = len(data)
        self.rcv_nxt += size
        self.unconsumed += size
        self.rx.append(data)
        if not self.in_readable:
            self.in_readable = True
            self.table.readable.append(self)

    def _peer_fin(self) -> None:
        self.rcv_nxt += 1
        self.flush_rx()
        self.ctx.events.append(PeerClosed(self))
        state = self.state
        if state == ESTABLISHED:
            self.state = CLOSE_WAIT
        elif state == FIN_WAIT_1:
            self.state = CLOSING
        elif state == FIN_WAIT_2:
            self._enter_time_wait()

    def _peer_reset(self) -> None:
        if self.state == TIME_WAIT:
            self._terminate()
            return
        self.flush_rx()
        self.ctx.events.append(Reset(self))
        self._terminate()

    # --- output ---

    def _mark_dirty(self) -> None:
        if not self.in_dirty:
            self.in_dirty = True
            self.table.dirty.append(self)

    def _need_ack(self) -> None:
        self.ack_pending = True
        if not self.in_dirty:
            self.in_dirty = True
            self.table.dirty.append(self)

    def _challenge_ack(self) -> None:
        self.ctx.counters["tcp_challenge_ack"] += 1
        self._need_ack()

    def _window_field(self) -> int:
        ws = self.rcv_wscale
        free = (self.rcv_buf - self.unconsumed) >> ws
        if free <= 0:
            free = 0
        elif free > 0xFFFF:
            free = 0xFFFF
        edge = self.rcv_nxt + (free << ws)
        if edge > self.rcv_adv:
            self.rcv_adv = edge
        self.rcv_acked = self.rcv_nxt
        return free

    def _send_ack(self) -> None:
        self.ack_pending = False
        self.delack_due = 0.0
        options = self.ooo.sack_option() if self.ooo and self.sack_ok else b""
        self.ctx.out.append(self.tpl.segment(self.snd_nxt, self.rcv_nxt, ACK, self._window_field(), b"", options))

    def _send_syn_ack(self) -> None:
        window = min(self.rcv_buf - self.unconsumed, 0xFFFF)  # never scaled in a SYN
        self.rcv_adv = max(self.rcv_adv, self.rcv_nxt + window)
        wscale = self.rcv_wscale if self.wscale_ok else None
        options = tcp_options(self.ctx.config.mtu - (60 if self.tpl.v6 else 40), wscale, self.sack_ok)
        self.ctx.out.append(self.tpl.segment(self.iss, self.rcv_nxt, SYN | ACK, window, b"", options))

    def flush(self) -> None:
        """Called by the stack at output(): send what the windows allow, then a pure ACK if one is owed."""
        self.in_dirty = False
        state = self.state
        if state in _SENDING:
            self._transmit()
        if self.ack_pending and state >= ESTABLISHED:
            self._send_ack()

    def _transmit(self, force: bool = False) -> None:
        sndbuf = self.sndbuf
        buf_seq = self.buf_seq
        data_end = buf_seq + len(sndbuf)
        nxt = self.snd_nxt
        fin_queued = self.fin_queued
        if nxt >= data_end and not (fin_queued and nxt == data_end):
            return
        ctx = self.ctx
        wnd = self.snd_wnd
        cc = self.cc
        cwnd = cc.window() if cc.dupacks else cc.cwnd  # limited transmit only counts while duplicates come
        limit = self.snd_una + (wnd if wnd < cwnd else cwnd)
        mss = self.mss
        segment = self.tpl.segment
        out = ctx.out
        rcv_nxt = self.rcv_nxt
        wfield = self._window_field()
        start = nxt
        rtx = self.rtx
        if nxt < data_end:
            snd_max = self.snd_max
            timing = self.rtt_seq < 0  # none is being timed: time the first one sent anew
            half_window = 0 if force else self.max_snd_wnd >> 1
            last_flags = ACK | PSH | FIN if fin_queued else ACK | PSH
            with memoryview(sndbuf) as view:
                while nxt < data_end:
                    n = data_end - nxt
                    if n > mss:
                        n = mss
                    room = limit - nxt
                    if n > room:
                        # Sender-side silly window avoidance (RFC 1122 4.2.3.4); the persist timer unblocks.
                        if room <= 0 or (room < mss and room < half_window):
                            break
                        n = room
                    off = nxt - buf_seq
                    end = nxt + n
                    flags = last_flags if end == data_end else ACK
                    out.append(segment(nxt, rcv_nxt, flags, wfield, view[off : off + n]))
                    if timing and end > snd_max:
                        self.rtt_seq = end
                        self.rtt_time = ctx.now
                        timing = False
                    nxt = end + 1 if flags & FIN else end
        if fin_queued and nxt == data_end:
            out.append(segment(nxt, rcv_nxt, ACK | FIN, wfield))
            nxt += 1
        if nxt != start:
            self.snd_nxt = nxt
            if nxt > self.snd_max:
                self.snd_max = nxt
            self.ack_pending = False
            self.delack_due = 0.0  # our data carried the ACK
            if self.timer_kind != _T_RTO:
                self._arm(_T_RTO, ctx.now + rtx.rto)
        elif self.snd_max == self.snd_una and self.timer_kind != _T_PERSIST:
            self._arm_persist()

    def _retransmit_first(self) -> int:
        """Resend the oldest unacknowledged segment (and the FIN if it ends there); returns the seq after it."""
        una = self.snd_una
        sndbuf = self.sndbuf
        data_end = self.buf_seq + len(sndbuf)
        wfield = self._window_field()
        self.ctx.counters["tcp_retransmit"] += 1
        self.ack_pending = False
        self.delack_due = 0.0
        if una < data_end:
            n = min(self.mss, data_end - una)
            end = una + n
            flags = ACK | PSH
            if end == data_end and self.fin_queued:
                flags |= FIN
            off = una - self.buf_seq
            with memoryview(sndbuf) as view:
                self.ctx.out.append(self.tpl.segment(una, self.rcv_nxt, flags, wfield, view[off : off + n]))
            end += flags & FIN
        elif self.fin_queued and una == data_end:
            self.ctx.out.append(self.tpl.segment(una, self.rcv_nxt, ACK | FIN, wfield))
            end = una + 1
        else:
            return una
        if end > self.snd_max:
            self.snd_max = end
        return end

    # --- timers ---

    def _arm(self, kind: int, deadline: float | None) -> None:
        self.timer_kind = kind
        self.ctx.timers.set(self, deadline)

    def _arm_persist(self) -> None:
        self._arm(_T_PERSIST, self.ctx.now + self.rtx.next_probe())

    def on_timer(self, now: float) -> None:
        kind = self.timer_kind
        self.timer_kind = _T_NONE
        if kind == _T_RTO:
            self._on_rto()
        elif kind == _T_PERSIST:
            self._on_persist()
        elif kind == _T_TIME_WAIT:
            self._terminate()
        elif kind == _T_DIAL and self.state == DIALING:
            self.ctx.out.append(self.tpl.segment(0, self.rcv_nxt, RST | ACK, 0))
            self._finish("timeout")

    def _on_rto(self) -> None:
        ctx = self.ctx
        cfg = ctx.config
        rtx = self.rtx
        if self.state == SYN_RECEIVED:
            if rtx.expired() > cfg.syn_ack_retries:
                self._finish("timeout")
                return
            self._send_syn_ack()
            self._arm(_T_RTO, ctx.now + rtx.rto)
            return
        if self.snd_max == self.snd_una or self.state not in _SENDING:
            return
        if rtx.expired() > cfg.max_retries:
            ctx.out.append(self.tpl.segment(self.snd_max, self.rcv_nxt, RST | ACK, 0))
            self._finish("timeout")
            return
        self.cc.on_timeout(self.snd_una, self.snd_max)
        self.rtt_seq = -1
        self.snd_nxt = self._retransmit_first()
        ctx.counters["tcp_rto"] += 1
        self._arm(_T_RTO, ctx.now + rtx.rto)

    def _on_persist(self) -> None:
        if self.state not in _SENDING:
            return
        if self.snd_max != self.snd_una:
            self._arm(_T_RTO, self.ctx.now + self.rtx.rto)
            return
        data_end = self.buf_seq + len(self.sndbuf)
        if self.snd_nxt >= data_end:
            return
        room = self.snd_una + min(self.snd_wnd, self.cc.cwnd) - self.snd_nxt
        if room > 0:
            self._transmit(force=True)  # a window too small for the silly-window rule: send what fits after all
            return
        self.ctx.counters["tcp_window_probe"] += 1
        self.ctx.out.append(self.tpl.segment(self.snd_una - 1, self.rcv_nxt, ACK, self._window_field()))
        self.ack_pending = False
        self.delack_due = 0.0
        self.rtx.probed()
        self._arm(_T_PERSIST, self.ctx.now + self.rtx.probe_interval)

    # --- endings ---

    def flush_rx(self) -> None:
        """Turn the bytes received since the last call into one Data event."""
        self.in_readable = False
        rx = self.rx
        if rx:
            data = rx[0] if len(rx) == 1 else b"".join(rx)
            self.rx = []
            self.ctx.events.append(Data(self, data))

    def _enter_time_wait(self) -> None:
        self.flush_rx()
        self.ctx.events.append(Closed(self, "done"))
        self.state = TIME_WAIT
        self.sndbuf = bytearray()
        self._arm(_T_TIME_WAIT, self.ctx.now + self.ctx.config.time_wait)

    def _finish(self, reason: str) -> None:
        self.flush_rx()
        self.ctx.events.append(Closed(self, reason))
        self._terminate()

    def _terminate(self) -> None:
        self.state = CLOSED
        self.sndbuf = bytearray()
        self.ooo.clear()
        self._arm(_T_NONE, None)
        table = self.table.flows
        if table.get(self.key) is self:
            del table[self.key]
