"""Retransmission timing on its own: RTT estimate, RTO, backoff, persist interval (``netstack.recovery``)."""

import pytest

from tether.helper.root.vif.netstack.recovery import RetransmitTimer


def fresh() -> RetransmitTimer:
    return RetransmitTimer(initial_rto=1.0, min_rto=0.2, max_rto=60.0)


def test_the_first_sample_sets_srtt_and_half_of_it_as_variance():
    rtx = fresh()
    assert rtx.rto == 1.0 and rtx.srtt < 0
    rtx.sample(0.5)
    assert rtx.srtt == 0.5 and rtx.rttvar == 0.25
    assert rtx.rto == pytest.approx(1.5)


def test_later_samples_are_smoothed_as_rfc_6298_says():
    rtx = fresh()
    rtx.sample(0.4)
    rtx.sample(0.8)
    assert rtx.rttvar == pytest.approx(0.75 * 0.2 + 0.25 * 0.4)
    assert rtx.srtt == pytest.approx(0.875 * 0.4 + 0.125 * 0.8)
    assert rtx.rto == pytest.approx(rtx.srtt + 4 * rtx.rttvar)


def test_the_rto_is_clamped_to_its_floor_and_ceiling():
    rtx = fresh()
    rtx.sample(0.001)
    assert rtx.rto == 0.2
    rtx = fresh()
    rtx.sample(100.0)
    assert rtx.rto == 60.0


def test_a_negative_sample_is_ignored():
    rtx = fresh()
    rtx.sample(-0.1)
    assert rtx.srtt < 0 and rtx.rto == 1.0


def test_each_timeout_doubles_the_rto_up_to_its_ceiling_and_counts():
    rtx = fresh()
    rtx.sample(0.1)
    assert rtx.rto == pytest.approx(0.3)
    assert rtx.expired() == 1 and rtx.rto == pytest.approx(0.6)
    rtx = fresh()
    assert rtx.expired() == 1 and rtx.rto == 2.0
    for _ in range(5):
        rtx.expired()
    assert rtx.retries == 6 and rtx.rto == 60.0


def test_the_handshake_is_the_first_sample_unless_the_syn_ack_was_resent():
    rtx = fresh()
    rtx.syn_sent(now=5.0)
    rtx.established(now=5.1)
    assert rtx.srtt == pytest.approx(0.1) and rtx.retries == 0
    rtx = fresh()
    rtx.syn_sent(now=5.0)
    rtx.expired()
    assert rtx.rto == 2.0
    rtx.established(now=7.5)
    assert rtx.srtt < 0 and rtx.rto == 1.0 and rtx.retries == 0  # RFC 6298 5.7


def test_syn_sent_starts_from_the_initial_rto():
    rtx = fresh()
    rtx.sample(0.01)
    rtx.syn_sent(now=0.0)
    assert rtx.rto == 1.0


def test_zero_window_probes_start_at_the_rto_and_back_off():
    rtx = fresh()
    rtx.sample(0.5)
    assert rtx.next_probe() == pytest.approx(1.5)
    rtx.probed()
    assert rtx.next_probe() == pytest.approx(3.0)
    for _ in range(10):
        rtx.probed()
    assert rtx.next_probe() == 60.0
    rtx.window_opened()
    assert rtx.next_probe() == pytest.approx(1.5)
