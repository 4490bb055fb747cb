import itertools

import pytest
from linux_capture import CAPTURE
from netstack_helpers import APP, APP6, SVC, SVC6, App, Harness, pump

from tether.helper.root.vif.netstack import Closed, Data, Datagram, DialRequested, PeerClosed, Reset, TcpFlow, Writable
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH, RST, SYN, build_tcp, decode


def established(h: Harness | None = None, **kw: object) -> tuple[Harness, App, TcpFlow]:
    if h is None:
        config = {k: kw.pop(k) for k in list(kw) if k not in App.__init__.__code__.co_varnames}
        h = Harness(**config)
    app = App(h, **kw)
    flow = app.connect()
    assert flow.state_name == "ESTABLISHED"
    assert h.output() == [] and h.events() == []
    return h, app, flow


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


# --- handshake ---


def test_syn_waits_for_accept_then_syn_ack():
    h = Harness()
    app = App(h, mss=1400)
    app.syn()
    assert h.output() == []  # nothing to the app before the owner has dialled
    [event] = h.events()
    assert isinstance(event, DialRequested)
    flow = event.flow
    assert flow.protocol == "tcp"
    assert (str(flow.src[0]), flow.src[1], str(flow.dst[0]), flow.dst[1]) == (APP, 40000, SVC, 80)
    assert flow.state_name == "DIALING"
    flow.accept()
    [syn_ack] = h.output()
    assert syn_ack.flags == SYN | ACK
    assert syn_ack.ack == app.isn + 1
    assert syn_ack.mss == 1460  # ours: MTU 1500 - 40
    assert syn_ack.wscale is None and not syn_ack.sack_permitted  # the app offered neither
    assert syn_ack.window == 65535
    app.absorb([syn_ack])
    app.send_ack()
    assert flow.state_name == "ESTABLISHED"
    assert flow.mss == 1400  # the app's
    assert h.events() == [] and h.output() == []


def test_refused_dial_resets_the_syn():
    h = Harness()
    app = App(h, isn=0xFFFFFFFF)
    app.syn()
    [event] = h.events()
    event.flow.refuse()
    [rst] = h.output()
    assert rst.flags == RST | ACK
    assert (rst.seq, rst.ack) == (0, 0)  # ack = ISN + 1, wrapped
    assert [(type(e), e.reason) for e in h.events()] == [(Closed, "refused")]
    assert h.stack.tcp_flows == 0
    event.flow.accept()  # too late: nothing happens
    assert h.output() == []


def test_unreachable_dial_answers_icmp_host_unreachable():
    h = Harness()
    app = App(h)
    syn = app.syn()
    [event] = h.events()
    event.flow.unreachable()
    [icmp] = h.output()
    assert (icmp.proto, icmp.icmp_type, icmp.icmp_code) == (1, 3, 1)
    assert (str(icmp.src), str(icmp.dst)) == (SVC, APP)
    assert icmp.payload[4:] == syn  # the whole SYN quoted
    assert [e.reason for e in h.events()] == ["unreachable"]


def test_unreachable_dial_v6():
    h = Harness()
    app = App(h, src=APP6, dst=(SVC6, 443))
    app.syn()
    [event] = h.events()
    event.flow.unreachable()
    [icmp] = h.output()
    assert (icmp.version, icmp.proto, icmp.icmp_type, icmp.icmp_code) == (6, 58, 1, 3)


def test_duplicate_syns_while_dialing_are_absorbed():
    h = Harness()
    app = App(h)
    syn = app.syn()
    h.feed(syn, syn)
    events = h.events()
    assert kinds(events) == ["DialRequested"]
    assert h.output() == []
    assert h.stack.counters["tcp_syn_duplicate"] == 2
    events[0].flow.accept()
    assert [p.flags for p in h.output()] == [SYN | ACK]


def test_syn_ack_is_retransmitted_until_acked():
    h = Harness()
    app = App(h)
    app.syn()
    flow = h.events()[0].flow
    flow.accept()
    assert len(h.output()) == 1  # lost
    h.advance(0.5)
    assert h.output() == []
    h.advance(0.5)  # initial RTO: 1 s
    [again] = h.output()
    assert again.flags == SYN | ACK
    # the app's retransmitted SYN is answered with the SYN-ACK too
    app.send(SYN, seq=app.isn, ack=0, options=app.syn_options())
    [third] = h.output()
    assert third.flags == SYN | ACK and third.seq == again.seq
    app.absorb([third])
    app.send_ack()
    assert flow.state_name == "ESTABLISHED"


def test_syn_ack_gives_up():
    h = Harness(syn_ack_retries=2)
    App(h).syn()
    flow = h.events()[0].flow
    flow.accept()
    h.run_until(h.now + 100)
    assert [p.flags for p in h.output()] == [SYN | ACK] * 3
    assert [e.reason for e in h.events()] == ["timeout"]
    assert h.stack.tcp_flows == 0


def test_dial_timeout_backstop():
    h = Harness(dial_timeout=5)
    App(h).syn()
    h.events()
    h.run_until(h.now + 5)
    [rst] = h.output()
    assert rst.flags == RST | ACK
    assert [e.reason for e in h.events()] == ["timeout"]


def test_app_gives_up_while_dialing():
    h = Harness()
    app = App(h)
    app.syn()
    flow = h.events()[0].flow
    app.send(RST, seq=app.isn + 1, ack=0)
    [event] = h.events()
    assert isinstance(event, Reset) and event.flow is flow
    flow.accept()
    assert h.output() == []


def test_bad_ack_in_syn_received_is_reset():
    h = Harness()
    app = App(h)
    app.syn()
    h.events()[0].flow.accept()
    syn_ack = h.output()[0]
    app.send(ACK, ack=syn_ack.seq + 5)
    [rst] = h.output()
    assert rst.flags == RST and rst.seq == syn_ack.seq + 5


def test_window_scale_and_sack_negotiated():
    h = Harness(rcv_buf=1 << 20)
    app = App(h, wscale=7, sack=True)
    app.syn()
    flow = h.events()[0].flow
    flow.accept()
    [syn_ack] = h.output()
    assert syn_ack.wscale == 5  # 1 MiB >> 5 fits in 16 bits
    assert syn_ack.sack_permitted
    app.absorb([syn_ack])
    app.send(ACK, window=100)  # scaled by 2**7: 12800 bytes
    flow.send(bytes(50000))
    sent = h.output()
    assert [len(p.payload) for p in sent] == [1460] * 8  # 11680; the 1120-byte sliver waits (silly window)
    # our window field is scaled by 2**5
    app.absorb(sent)
    app.data(b"x")
    acks = h.output()
    assert acks[-1].window == ((1 << 20) - 1) >> 5


# --- data and closing ---


def test_data_both_ways_then_app_closes_first():
    h, app, flow = established()
    app.data(b"hello")
    [ack] = h.output()
    assert ack.flags == ACK and ack.ack == app.seq
    [data] = h.events()
    assert isinstance(data, Data) and data.data == b"hello" and data.flow is flow
    flow.consumed(5)
    assert flow.send(b"world") == 5
    [seg] = h.output()
    assert seg.flags == ACK | PSH and seg.payload == b"world"
    app.absorb([seg])
    app.send_ack()
    assert h.output() == []
    # the app half-closes; we can still send
    app.fin()
    assert kinds(h.events()) == ["PeerClosed"]
    assert flow.state_name == "CLOSE-WAIT"
    [ack] = h.output()
    assert ack.ack == app.seq
    flow.send(b"more")
    flow.close()
    [seg] = h.output()
    assert seg.flags == ACK | PSH | FIN and seg.payload == b"more"  # FIN rides on the last data
    assert flow.state_name == "LAST-ACK"
    app.absorb([seg])
    assert app.received == b"worldmore" and app.got_fin
    app.send_ack()
    assert [(type(e), e.reason) for e in h.events()] == [(Closed, "done")]
    assert flow.closed and h.stack.tcp_flows == 0
    assert h.output() == []
    assert h.stack.next_deadline() is None


def test_data_in_one_batch_is_one_event_and_one_ack():
    h, app, _flow = established()
    for word in (b"a", b"bb", b"ccc"):
        app.data(word)
    [event] = h.events()
    assert event.data == b"abbccc"
    [ack] = h.output()
    assert ack.ack == app.seq


def test_sends_in_one_batch_coalesce():
    h, _app, flow = established()
    for word in (b"a", b"bb", b"ccc"):
        flow.send(word)
    [seg] = h.output()
    assert seg.payload == b"abbccc"


def test_data_segments_carry_the_ack():
    h, app, flow = established()
    app.data(b"question")
    h.events()
    flow.send(b"answer")
    [seg] = h.output()  # one segment: data with the ACK, no separate pure ACK
    assert seg.payload == b"answer" and seg.ack == app.seq


def test_owner_closes_first_app_keeps_sending():
    h, app, flow = established(time_wait=2.0)
    flow.send(b"bye")
    flow.close()
    assert flow.send(b"late") == 0
    out = h.output()
    assert [p.flags for p in out] == [ACK | PSH | FIN]
    app.absorb(out)
    app.send_ack()
    assert flow.state_name == "FIN-WAIT-2"
    app.data(b"still talking")
    assert [e.data for e in h.events()] == [b"still talking"]
    h.output()
    app.fin()
    events = h.events()
    assert kinds(events) == ["PeerClosed", "Closed"]
    assert events[1].reason == "done"
    assert flow.state_name == "TIME-WAIT" and flow.closed
    [ack] = h.output()
    assert ack.ack == app.seq
    # the app's FIN again (our ACK got lost): re-ACKed
    app.send(ACK | FIN, seq=app.seq - 1)
    [ack] = h.output()
    assert ack.ack == app.seq
    h.advance(2.0)
    assert h.stack.tcp_flows == 0
    assert h.events() == []


def test_simultaneous_close():
    h, app, flow = established()
    flow.close()
    [fin] = h.output()
    app.fin()  # crosses our FIN: the app has not seen it
    assert kinds(h.events()) == ["PeerClosed"]
    assert flow.state_name == "CLOSING"
    h.output()
    app.absorb([fin])
    app.send_ack()
    assert [e.reason for e in h.events()] == ["done"]
    assert flow.state_name == "TIME-WAIT"


def test_new_syn_ends_time_wait():
    h, app, flow = established()
    flow.close()
    app.absorb(h.output())
    app.fin()
    h.events()
    h.output()
    assert flow.state_name == "TIME-WAIT"
    app2 = App(h, isn=app.seq + 100000)
    app2.syn()
    [event] = h.events()
    assert isinstance(event, DialRequested) and event.flow is not flow
    assert flow.state_name == "CLOSED"


def test_close_before_established_sends_fin_after_handshake():
    h = Harness()
    app = App(h)
    app.syn()
    flow = h.events()[0].flow
    flow.accept()
    flow.send(b"early")
    flow.close()
    app.absorb(h.output())
    app.send_ack()
    out = h.output()
    assert [(p.flags, p.payload) for p in out] == [(ACK | PSH | FIN, b"early")]
    assert flow.state_name == "FIN-WAIT-1"


def test_abort_sends_rst():
    h, app, flow = established()
    flow.send(b"x" * 100)
    h.output()
    flow.abort()
    [rst] = h.output()
    assert rst.flags == RST | ACK and rst.seq == (app.ack + 100) & 0xFFFFFFFF
    assert [e.reason for e in h.events()] == ["aborted"]
    assert flow.send(b"x") == 0
    flow.abort()
    flow.close()
    flow.consumed(10)
    assert h.output() == [] and h.events() == []


def test_data_then_reset_from_app():
    h, app, _flow = established()
    app.data(b"last words")
    app.send(RST | ACK)
    events = h.events()
    assert kinds(events) == ["Data", "Reset"]
    assert events[1].reason == "reset"
    assert h.stack.tcp_flows == 0


def test_abort_all():
    h = Harness()
    apps = [App(h, port=p) for p in (1, 2)]
    for app in apps:
        app.connect()
    h.stack.abort_all()
    assert [p.flags for p in h.output()] == [RST | ACK, RST | ACK]
    assert [e.reason for e in h.events()] == ["aborted", "aborted"]


# --- sequence checks ---


def test_out_of_window_rst_is_ignored_in_window_gets_challenge():
    h, app, _flow = established()
    app.send(RST, seq=app.seq + 10_000_000)
    assert h.events() == [] and h.output() == []
    assert h.stack.counters["tcp_rst_ignored"] == 1
    app.send(RST, seq=app.seq + 100)  # in window, not exact: challenge ACK
    [challenge] = h.output()
    assert challenge.flags == ACK and challenge.ack == app.seq
    assert h.events() == []
    app.send(RST, seq=app.seq)
    assert kinds(h.events()) == ["Reset"]


def test_syn_on_established_connection_gets_challenge_ack():
    h, app, flow = established()
    app.send(SYN, seq=app.seq + 5, ack=0)
    [challenge] = h.output()
    assert challenge.flags == ACK and challenge.ack == app.seq
    assert flow.state_name == "ESTABLISHED"


def test_old_duplicate_is_reacked_not_redelivered():
    h, app, _flow = established()
    app.data(b"abc")
    h.output()
    h.events()
    app.send(ACK | PSH, b"abc", seq=app.seq - 3)
    [ack] = h.output()
    assert ack.ack == app.seq
    assert h.events() == []


def test_partially_old_segment_delivers_new_part():
    h, app, _flow = established()
    app.data(b"abc")
    app.send(ACK | PSH, b"abcdef", seq=app.seq - 3)
    app.seq += 3
    assert b"".join(e.data for e in h.events()) == b"abcdef"
    [ack] = h.output()
    assert ack.ack == app.seq


def test_ack_of_unsent_data_is_dropped():
    h, app, _flow = established()
    app.send(ACK | PSH, b"zzz", ack=app.ack + 1000)
    assert h.events() == []
    [ack] = h.output()
    assert ack.ack == app.seq - 3


def test_segment_without_ack_is_dropped():
    h, app, _flow = established()
    app.send(PSH, b"zzz")
    assert h.events() == [] and h.output() == []


# --- retransmission, congestion, windows ---


def test_lost_segment_resent_after_rto():
    h, app, flow = established()
    flow.send(b"y" * 1000)
    [lost] = h.output()
    deadline = h.stack.next_deadline()
    assert deadline is not None and deadline - h.now == pytest.approx(0.2)  # RTT ~0 from the handshake: min RTO
    h.advance(0.19)
    assert h.output() == []
    h.advance(0.02)
    [again] = h.output()
    assert (again.seq, again.payload) == (lost.seq, lost.payload)
    assert h.stack.counters["tcp_retransmit"] == 1
    app.absorb([again])
    app.send_ack()
    assert app.received == b"y" * 1000
    assert h.stack.next_deadline() is None


def test_karn_an_ack_for_a_retransmission_gives_no_rtt_sample():
    h, app, flow = established()
    flow.send(b"a" * 100)
    h.output()
    h.advance(0.2)  # RTO: resent, and the RTO backs off to 0.4
    [again] = h.output()
    h.now += 3.0  # the ACK comes very late: timed, it would take the RTO to seconds
    app.absorb([again])
    app.send_ack()
    flow.send(b"b" * 100)
    [fresh] = h.output()
    assert h.stack.next_deadline() - h.now == pytest.approx(0.4)  # backed off, not measured
    h.now += 0.01
    app.absorb([fresh])
    app.send_ack()  # a clean round trip is timed
    flow.send(b"c" * 100)
    h.output()
    assert h.stack.next_deadline() - h.now == pytest.approx(0.2)


def test_lost_fin_resent():
    h, _app, flow = established()
    flow.close()
    [fin] = h.output()
    h.advance(0.2)
    [again] = h.output()
    assert again.flags == ACK | FIN and again.seq == fin.seq


def test_rto_backs_off_and_gives_up():
    h, _app, flow = established(max_retries=3)
    flow.send(b"z" * 10)
    h.output()
    times = []
    for _ in range(10):
        due = h.stack.next_deadline()
        if due is None:
            break
        h.advance(due - h.now)
        times.append(h.now)
        h.output()
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps == [0.4, 0.8, 1.6]
    assert [e.reason for e in h.events()] == ["timeout"]


def test_rto_resends_one_segment_then_slow_starts():
    h, app, flow = established()
    flow.send(bytes(1460 * 8))
    first = h.output()
    assert len(first) == 8
    h.advance(0.2)
    [again] = h.output()  # cwnd back to one segment
    assert again.seq == first[0].seq
    app.absorb([again])
    app.send_ack()
    resent = h.output()
    assert [p.seq for p in resent] == [first[1].seq, first[2].seq]  # go-back-N, cwnd 2
    app.absorb(resent)
    app.send_ack()
    pump(h, {app.port: app})
    assert len(app.received) == 1460 * 8


def test_fast_retransmit_on_three_duplicate_acks():
    h, app, flow = established()
    payload = bytes(range(256)) * 40  # 10240 bytes: 8 segments
    flow.send(payload)
    segments = h.output()
    assert len(segments) == 8
    app.absorb(segments[:1])
    app.send_ack()
    for _seg in segments[2:5]:  # segment 1 lost: each later one makes the app repeat its ACK
        app.send_ack()
    [resent] = h.output()
    assert resent.seq == segments[1].seq and resent.payload == segments[1].payload
    assert h.stack.counters["tcp_fast_retransmit"] == 1
    for seg in [resent, *segments[2:]]:
        app.absorb([seg])
    app.send_ack()
    pump(h, {app.port: app})
    assert app.received == payload


def test_duplicates_with_sack_blocks_count_even_when_the_window_moves():
    h, app, flow = established(sack=True)
    flow.send(bytes(1460 * 8))
    segs = h.output()
    app.absorb(segs[:1])
    app.send_ack()
    sack = bytes((1, 1, 5, 10)) + (segs[2].seq).to_bytes(4, "big")
    for i in range(3):  # the app's reader keeps draining: each duplicate shows a bigger window
        edge = (segs[3 + i].seq + 1460) & 0xFFFFFFFF
        app.send(ACK, window=60000 + i * 1000, options=sack[:8] + edge.to_bytes(4, "big"))
    [resent] = h.output()
    assert resent.seq == segs[1].seq
    assert h.stack.counters["tcp_fast_retransmit"] == 1


def test_window_updates_without_sack_are_not_duplicates():
    h, app, flow = established()
    flow.send(bytes(1460 * 8))
    h.output()
    for i in range(4):
        app.send(ACK, window=60000 + i * 1000)
    assert h.output() == []
    assert h.stack.counters["tcp_fast_retransmit"] == 0


def test_limited_transmit_sends_new_data_on_early_duplicates():
    h, app, flow = established(initial_cwnd=2)
    flow.send(bytes(1460 * 6))
    first = h.output()
    assert len(first) == 2  # cwnd
    app.send_ack()  # a duplicate (the first segment lost)
    [extra] = h.output()
    assert extra.seq == (first[1].seq + 1460) & 0xFFFFFFFF
    app.send_ack()
    [extra2] = h.output()
    assert extra2.seq == (extra.seq + 1460) & 0xFFFFFFFF
    app.send_ack()  # the third: fast retransmit
    [resent] = h.output()
    assert resent.seq == first[0].seq


def test_full_ack_after_recovery_keeps_ssthresh_worth_of_window():
    h, app, flow = established()
    flow.send(bytes(1460 * 8))
    segs = h.output()
    app.absorb(segs[:1])
    app.send_ack()
    for _ in range(3):
        app.send_ack()
    [resent] = h.output()
    app.absorb([resent, *segs[2:]])
    app.send_ack()  # everything acked: recovery over
    flow.send(bytes(1460 * 8))
    burst = h.output()
    assert len(burst) >= 3  # cwnd = ssthresh (half the flight), not one segment


def test_partial_ack_in_recovery_resends_next_hole():
    h, app, flow = established()
    flow.send(bytes(1460 * 8))
    segs = h.output()
    app.absorb(segs[:1])
    app.send_ack()
    for _ in range(3):
        app.send_ack()
    [r1] = h.output()
    assert r1.seq == segs[1].seq
    app.absorb([r1])  # segments 2 was lost too: the ACK covers only 1
    app.send_ack()
    out = h.output()
    assert out[0].seq == segs[2].seq


def test_zero_window_persist_and_reopen():
    h, app, flow = established()
    flow.send(b"a" * 1000)
    app.absorb(h.output())
    app.send(ACK, window=0)
    flow.send(b"b" * 500)
    assert h.output() == []  # the app's window is shut
    first = h.stack.next_deadline() - h.now
    h.advance(first)
    [probe] = h.output()
    assert probe.payload == b"" and probe.seq == (app.ack - 1) & 0xFFFFFFFF
    app.send(ACK, window=0)  # still shut
    assert h.output() == []
    second = h.stack.next_deadline() - h.now
    assert second == pytest.approx(2 * first)  # backoff
    h.advance(second)
    assert len(h.output()) == 1
    assert h.stack.counters["tcp_window_probe"] == 2
    app.send(ACK, window=65535)  # the app read: window update
    [seg] = h.output()
    assert seg.payload == b"b" * 500
    assert flow.state_name == "ESTABLISHED"


def test_zero_window_never_times_out():
    h, app, flow = established(max_retries=2)
    flow.send(b"a" * 100)
    app.absorb(h.output())
    app.send(ACK, window=0)
    flow.send(b"b" * 100)
    assert h.output() == []  # (timers are armed by output())
    for _ in range(20):
        h.advance(h.stack.next_deadline() - h.now)
        if h.output():
            app.send(ACK, window=0)  # the app keeps answering probes
    assert flow.state_name == "ESTABLISHED"
    assert h.stack.counters["tcp_window_probe"] == 20


def test_small_window_is_not_nibbled():
    h, app, flow = established()
    app.send(ACK, window=10000)
    flow.send(bytes(12000))
    sent = h.output()
    assert [len(p.payload) for p in sent] == [1460] * 6  # the 1240-byte sliver waits
    app.absorb(sent)
    app.send_ack()
    assert [len(p.payload) for p in h.output()] == [1460, 1460, 320]  # the end of the data goes at once


def test_send_backpressure_and_writable():
    h, app, flow = established(snd_buf=10000)
    assert flow.send_space == 10000
    assert flow.send(bytes(25000)) == 10000
    assert flow.send(b"x") == 0
    assert flow.send_space == 0
    sent = h.output()
    assert h.events() == []
    app.absorb(sent[:3])  # 4380 bytes acked: less than half the buffer free
    app.send_ack()
    assert h.events() == []
    app.absorb(sent[3:])
    app.send_ack()
    [event] = h.events()
    assert isinstance(event, Writable) and event.flow is flow
    assert flow.send_space == 10000


# --- flow control towards the owner ---


def test_unconsumed_data_closes_the_window():
    h, app, flow = established(rcv_buf=4096)
    app.data(b"a" * 3000)
    [ack] = h.output()
    assert ack.window == 1096
    app.data(b"b" * 1096)
    [ack] = h.output()
    assert ack.window == 0
    assert sum(len(e.data) for e in h.events()) == 4096
    app.send(ACK | PSH, b"c" * 100)  # beyond the window: not taken
    [ack] = h.output()
    assert ack.ack == app.seq - 100 and ack.window == 0
    assert h.events() == []
    flow.consumed(1000)  # below the update threshold (min(rcv_buf/2, 2*MSS)): no update yet
    assert h.output() == []
    flow.consumed(3096)
    [update] = h.output()
    assert update.window == 4096 and update.ack == app.seq - 100
    app.send(ACK | PSH, b"c" * 100, seq=app.seq - 100)
    assert [e.data for e in h.events()] == [b"c" * 100]


def test_zero_window_probe_from_app_is_answered():
    h, app, _flow = established(rcv_buf=2000)
    app.data(b"a" * 2000)
    h.output()
    app.send(ACK, seq=app.seq - 1)  # Linux's probe: an old sequence number
    [ack] = h.output()
    assert ack.window == 0 and ack.ack == app.seq


def test_fin_accepted_on_zero_window():
    h, app, _flow = established(rcv_buf=2000)
    app.data(b"a" * 2000)
    app.fin()
    assert kinds(h.events()) == ["Data", "PeerClosed"]


def test_big_batch_is_acked_before_output():
    h, app, _flow = established(rcv_buf=40000)
    for _ in range(8):
        app.data(bytes(1460))  # 11680 bytes: past a quarter of the window
    early = h.raw_output()
    assert len(early) == 2  # one ACK when the quarter was crossed, one at the end of the batch


# --- out of order ---


def test_out_of_order_segments_are_kept_and_sacked():
    h, app, _flow = established(sack=True)
    base = app.seq
    app.send(ACK | PSH, b"C" * 100, seq=base + 200)
    [dup] = h.output()
    assert dup.ack == base
    assert dup.options[:4] == bytes((1, 1, 5, 10))
    assert int.from_bytes(dup.options[4:8]) == base + 200 and int.from_bytes(dup.options[8:12]) == base + 300
    app.send(ACK | PSH, b"E" * 100, seq=base + 400)
    [dup] = h.output()
    assert dup.options[3] == 18 and int.from_bytes(dup.options[4:8]) == base + 400  # latest block first
    assert h.events() == []
    app.send(ACK | PSH, b"A" * 100, seq=base)
    assert [e.data for e in h.events()] == [b"A" * 100]
    [ack] = h.output()
    assert ack.ack == base + 100
    app.send(ACK | PSH, b"B" * 100, seq=base + 100)
    app.send(ACK | PSH, b"D" * 100, seq=base + 300)
    assert [e.data for e in h.events()] == [b"B" * 100 + b"C" * 100 + b"D" * 100 + b"E" * 100]
    acks = h.output()
    assert acks[-1].ack == base + 500 and acks[-1].options == b""
    assert h.stack.counters["tcp_ooo_queued"] == 2


def test_out_of_order_without_sack_sends_plain_dup_acks():
    h, app, _flow = established()
    app.send(ACK | PSH, b"later", seq=app.seq + 10)
    [dup] = h.output()
    assert dup.options == b"" and dup.ack == app.seq


def test_out_of_order_fin():
    h, app, _flow = established()
    base = app.seq
    app.send(ACK | FIN, b"tail", seq=base + 4)
    assert h.events() == []
    app.send(ACK | PSH, b"head", seq=base)
    events = h.events()
    assert kinds(events) == ["Data", "PeerClosed"]
    assert events[0].data == b"headtail"


def test_out_of_order_limit():
    h, app, _flow = established(max_out_of_order=2)
    base = app.seq
    for i in (2, 4, 6):
        app.send(ACK | PSH, b"x" * 10, seq=base + i * 10)
    assert h.stack.counters["tcp_ooo_queued"] == 2
    assert h.stack.counters["tcp_ooo_dropped"] == 1


# --- no such flow, loops, limits ---


def test_segment_for_unknown_flow_gets_rst():
    h = Harness()
    h.feed(build_tcp(APP, SVC, 5000, 80, 100, 777, ACK, 1000))
    [rst] = h.output()
    assert rst.flags == RST and rst.seq == 777
    h.feed(build_tcp(APP, SVC, 5000, 80, 100, 0, FIN, 1000, b"abc"))
    [rst] = h.output()
    assert rst.flags == RST | ACK and rst.ack == 104
    h.feed(build_tcp(APP, SVC, 5000, 80, 100, 0, RST, 1000))
    assert h.output() == []


def test_looping_source_is_refused():
    h = Harness()
    h.stack.set_refused_sources(["10.1.0.0/16", "fd00::/64"])
    App(h).syn()
    assert h.events() == []
    [rst] = h.output()
    assert rst.flags == RST | ACK
    App(h, src="10.2.0.1").syn()
    assert kinds(h.events()) == ["DialRequested"]
    App(h, src=APP6, dst=(SVC6, 80)).syn()
    assert h.events() == []
    assert h.stack.counters["tcp_loop_refused"] == 2


def test_flow_limit():
    h = Harness(max_tcp_flows=2)
    for port in (1, 2, 3):
        App(h, port=port).syn()
    assert kinds(h.events()) == ["DialRequested", "DialRequested"]
    assert h.stack.counters["tcp_flow_limit"] == 1


def test_ipv6_connection():
    h, app, flow = established(src=APP6, dst=(SVC6, 8080))
    assert str(flow.dst[0]) == SVC6 and "[" in repr(flow)
    assert h.stack.find_tcp((APP6, 40000), (SVC6, 8080)) is flow
    app.data(b"v6 data")
    assert [e.data for e in h.events()] == [b"v6 data"]
    flow.send(b"reply")
    flow.close()
    app.absorb(h.output())
    assert app.received == b"reply" and app.got_fin
    app.fin()
    assert kinds(h.events()) == ["PeerClosed", "Closed"]


def test_bulk_transfer_both_ways():
    h, app, flow = established(wscale=7)
    payload = bytes(range(256)) * 4000  # ~1 MB
    offset = 0
    for _ in range(1000):
        if offset < len(payload):
            offset += flow.send(payload[offset : offset + 65536])
        pump(h, {app.port: app})
        for e in h.events():
            assert isinstance(e, Writable)
        if offset == len(payload):
            break
    pump(h, {app.port: app})
    assert app.received == payload
    # and the other way, in MSS-sized pieces, consuming as we go
    got = bytearray()
    for i in range(0, len(payload), 1460):
        app.data(payload[i : i + 1460])
        for e in h.events():
            got += e.data
            flow.consumed(len(e.data))
        h.output()
    assert got == payload


# --- a conversation recorded from Linux, replayed ---


class FixedIsn:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def getrandbits(self, _bits: int) -> int:
        return self.values.pop(0)


def test_replay_linux_conversation_byte_for_byte():
    """Feed the kernel's packets; what we answer must equal, byte for byte, what the kernel accepted then."""
    h = Harness(mtu=65000, seed=None)
    outs = [decode(bytes.fromhex(t)) for d, t in CAPTURE if d == "out"]
    h.stack._ctx.rng = FixedIsn(*(p.seq for p in outs if p.proto == 6 and p.flags == SYN | ACK))
    produced: list[bytes] = []
    expected = [bytes.fromhex(t) for d, t in CAPTURE if d == "out"]
    for direction, text in CAPTURE:
        if direction == "out":
            continue
        h.feed(bytes.fromhex(text))
        for event in h.events():
            if isinstance(event, DialRequested):
                event.flow.accept()
            elif isinstance(event, Data):
                event.flow.send(event.data)
                event.flow.consumed(len(event.data))
            elif isinstance(event, Datagram):
                event.flow.send(event.data)
            elif isinstance(event, PeerClosed):
                event.flow.close()
        produced.extend(h.raw_output())
    assert len(produced) == len(expected)
    for ours, theirs in zip(produced, expected, strict=True):
        assert ours == theirs, (decode(ours), decode(theirs))
    assert h.stack.counters["internal_error"] == 0
