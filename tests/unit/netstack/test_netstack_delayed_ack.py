"""Delayed ACK (NetStackConfig.delayed_ack): a request's ACK rides on its response, or goes out on a timer."""

import pytest
from netstack_helpers import App, Harness, pump

from tether.helper.root.vif.netstack import NetStackConfig, TcpFlow
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH

DELAY = 0.002


def established(delayed_ack: float = DELAY, **kw: object) -> tuple[Harness, App, TcpFlow]:
    h = Harness(delayed_ack=delayed_ack, **{k: kw.pop(k) for k in list(kw) if k in ("mtu", "time_wait", "rcv_buf")})
    app = App(h, **kw)
    flow = app.connect()
    assert flow.state_name == "ESTABLISHED"
    assert h.output() == [] and h.events() == []
    return h, app, flow


def test_a_response_within_the_delay_carries_the_ack_and_no_pure_ack_is_sent():
    h, app, flow = established()
    app.data(b"question")
    [event] = h.events()
    assert event.data == b"question"
    assert h.output() == []  # the ACK is held
    assert h.stack.next_deadline() == pytest.approx(h.now + DELAY)
    h.advance(DELAY / 2)
    flow.send(b"answer")
    [segment] = h.output()
    assert segment.payload == b"answer" and segment.ack == app.seq
    h.run_until(h.now + 10 * DELAY)
    assert h.output() == []  # nothing more: the held ACK went with the answer
    assert h.stack.next_deadline() is None or h.stack.next_deadline() > h.now + 0.1  # only the RTO remains
    assert h.stack.counters["tcp_delayed_ack"] == 0


def test_without_a_response_the_ack_goes_out_when_the_delay_is_over():
    h, app, _flow = established()
    app.data(b"fire and forget")
    h.events()
    assert h.output() == []
    h.advance(DELAY * 0.9)
    assert h.output() == []
    h.run_until(h.now + DELAY)
    [ack] = h.output()
    assert ack.flags == ACK and ack.ack == app.seq and ack.payload == b""
    assert h.stack.counters["tcp_delayed_ack"] == 1
    assert h.stack.next_deadline() is None


def test_the_delay_counts_from_the_first_unacknowledged_segment():
    h, app, _flow = established()
    app.data(b"a")
    h.events()
    h.output()
    h.advance(DELAY * 0.6)
    app.data(b"b")  # does not push the ACK further out
    h.events()
    assert h.output() == []
    h.run_until(h.now + DELAY * 0.5)
    [ack] = h.output()
    assert ack.ack == app.seq


def test_every_second_full_segment_is_acked_at_once():
    h, app, _flow = established(mss=1000, mtu=1500)
    app.data(b"x" * 1000)
    h.events()
    assert h.output() == []  # one full segment: held
    app.data(b"y" * 1000)
    h.events()
    [ack] = h.output()  # two: at once
    assert ack.ack == app.seq
    assert h.stack.counters["tcp_delayed_ack"] == 0
    h.run_until(h.now + 10 * DELAY)
    assert h.output() == []


def test_a_window_update_is_not_delayed_and_carries_the_held_ack():
    h, app, flow = established(mss=1460, rcv_buf=4000)
    held = 0
    for _ in range(2):
        app.data(b"z" * 900)  # small: held, then ACKed by the timer while the owner does not consume
        held += len(h.events()[0].data)
        assert h.output() == []
        h.run_until(h.now + 2 * DELAY)
        [ack] = h.output()
        assert ack.window == 4000 - held
    app.data(b"z" * 900)
    held += len(h.events()[0].data)
    assert h.output() == []
    flow.consumed(held)  # the window reopens by more than the update threshold: say so now
    [update] = h.output()
    assert update.ack == app.seq and update.window == 4000
    h.run_until(h.now + 10 * DELAY)
    assert h.output() == []


def test_an_out_of_order_segment_is_answered_at_once():
    h, app, _flow = established()
    app.send(ACK | PSH, b"later", seq=app.seq + 10)
    [dup] = h.output()
    assert dup.ack == app.seq


def test_the_apps_fin_is_held_while_our_fin_may_carry_its_ack():
    h, app, flow = established()
    app.fin()
    assert [type(e).__name__ for e in h.events()] == ["PeerClosed"]
    assert h.output() == []  # CLOSE-WAIT: our FIN will answer it
    flow.close()
    [fin] = h.output()
    assert fin.flags & FIN and fin.ack == app.seq
    app.absorb([fin])
    app.send_ack()
    assert flow.closed


def test_the_apps_fin_after_ours_is_acked_at_once():
    h, app, flow = established(time_wait=1.0)
    flow.close()
    [fin] = h.output()
    app.absorb([fin])
    app.send_ack()
    assert flow.state_name == "FIN-WAIT-2"
    app.fin()
    h.events()
    [ack] = h.output()  # nothing of ours is left to carry it
    assert ack.flags == ACK and ack.ack == app.seq


def test_a_held_ack_for_a_flow_that_closed_meanwhile_is_dropped():
    h, app, flow = established()
    app.data(b"last words")
    h.events()
    flow.abort()
    [rst] = h.output()
    assert rst.flags & 0x04
    h.run_until(h.now + 10 * DELAY)
    assert h.output() == []


def test_bulk_data_is_acked_as_without_the_delay():
    def transfer(delayed_ack: float) -> tuple[int, int]:
        h, app, flow = established(delayed_ack=delayed_ack, mss=1460)
        sent = 0
        for _ in range(50):
            for _ in range(4):
                app.data(b"b" * 1460)
                sent += 1460
            for event in h.events():
                flow.consumed(len(event.data))
            pump(h, {app.port: app})
        return sent, app.h.stack.counters["tcp_delayed_ack"]

    sent, delayed = transfer(DELAY)
    assert sent == 50 * 4 * 1460 and delayed == 0


def test_the_delay_is_bounded_like_rfc_1122_says():
    with pytest.raises(ValueError, match="delayed_ack"):
        NetStackConfig(delayed_ack=0.6)
    with pytest.raises(ValueError, match="delayed_ack"):
        NetStackConfig(delayed_ack=-1)


def test_the_first_window_update_of_a_connection_waits_for_our_next_segment():
    # The SYN-ACK offers 64 KiB unscaled; the real window is bigger. Opening it is not urgent while the app
    # still has most of the 64 KiB: it rides on the answer instead of being a packet of its own.
    h, app, flow = established(mss=1460, wscale=7)
    app.data(b"q" * 100)
    [data] = h.events()
    flow.consumed(len(data.data))
    assert h.output() == []
    flow.send(b"a")
    [answer] = h.output()
    assert answer.payload == b"a" and answer.ack == app.seq
    assert answer.window << 7 > 65535  # the scaled window, opened by the answer


def test_a_window_update_goes_at_once_when_the_app_is_nearly_out_of_window():
    h, app, flow = established(mss=60000, wscale=7, mtu=65000)
    app.data(b"u" * 60000)  # most of the first 64 KiB
    [data] = h.events()
    assert h.output() == []  # one segment: the ACK is held
    flow.consumed(len(data.data))
    [update] = h.output()  # but the window must open now, or the app stalls
    assert update.ack == app.seq and update.window << 7 > 65535
