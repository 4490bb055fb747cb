"""NewReno on its own: the numbers it keeps as the app's ACKs come in (``netstack.congestion``)."""

from tether.helper.root.vif.netstack.congestion import FAST_RETRANSMIT, HOLD, SEND, NewReno

MSS = 1000
BIG = 1 << 30  # a peer window and send buffer that never cap the congestion window


def fresh() -> NewReno:
    return NewReno(MSS, initial_segments=10, iss=0)


def test_starts_at_the_initial_window_in_slow_start():
    cc = fresh()
    assert cc.cwnd == cc.window() == 10 * MSS
    assert cc.ssthresh > 1 << 40 and not cc.in_recovery and cc.dupacks == 0


def test_slow_start_grows_by_every_byte_acknowledged():
    cc = fresh()
    assert cc.on_ack(2 * MSS, 2 * MSS, BIG) is False
    assert cc.cwnd == 12 * MSS
    cc.on_ack(2 * MSS + 500, 500, BIG)
    assert cc.cwnd == 12 * MSS + 500


def test_congestion_avoidance_adds_about_one_segment_per_window():
    cc = fresh()
    cc.ssthresh = 4 * MSS
    cc.cwnd = 4 * MSS
    for ack in range(1, 5):  # one window's worth of ACKs, a segment each
        cc.on_ack(ack * MSS, MSS, BIG)
    # 1000*1000//4000 = 250, then //4250 = 235, //4485 = 222, //4707 = 212
    assert cc.cwnd == 4 * MSS + 250 + 235 + 222 + 212


def test_congestion_avoidance_grows_by_at_least_a_byte():
    cc = fresh()
    cc.ssthresh = cc.cwnd = 100 * MSS
    cc.on_ack(1, 1, BIG)
    assert cc.cwnd == 100 * MSS + 1


def test_the_window_is_capped_by_what_the_peer_or_the_buffer_could_use():
    cc = fresh()
    cc.on_ack(50 * MSS, 50 * MSS, 8 * MSS)
    assert cc.cwnd == 2 * 8 * MSS + 2 * MSS


def test_duplicates_before_the_third_allow_limited_transmit():
    cc = fresh()
    assert cc.on_duplicate_ack(0, 10 * MSS) == SEND
    assert cc.window() == 11 * MSS
    assert cc.on_duplicate_ack(0, 10 * MSS) == SEND
    assert cc.window() == 12 * MSS
    assert cc.cwnd == 10 * MSS  # only the allowance grew


def test_the_third_duplicate_starts_fast_recovery():
    cc = fresh()
    cc.on_duplicate_ack(0, 20 * MSS)
    cc.on_duplicate_ack(0, 20 * MSS)
    assert cc.on_duplicate_ack(0, 20 * MSS) == FAST_RETRANSMIT
    assert cc.in_recovery and cc.recover == 20 * MSS
    assert cc.ssthresh == 10 * MSS  # half the flight
    assert cc.cwnd == cc.window() == 13 * MSS  # ssthresh + the three segments that left the network
    assert cc.on_duplicate_ack(0, 20 * MSS) == SEND  # each further one inflates by a segment
    assert cc.cwnd == 14 * MSS


def test_ssthresh_is_at_least_two_segments():
    cc = fresh()
    for _ in range(3):
        action = cc.on_duplicate_ack(0, MSS)
    assert action == FAST_RETRANSMIT and cc.ssthresh == 2 * MSS


def test_a_partial_ack_retransmits_and_deflates_and_the_full_ack_ends_recovery():
    cc = fresh()
    for _ in range(3):
        cc.on_duplicate_ack(0, 20 * MSS)
    assert cc.on_ack(4 * MSS, 4 * MSS, BIG) is True  # below recover: the next hole
    assert cc.in_recovery and cc.cwnd == 13 * MSS - 4 * MSS + MSS
    assert cc.dupacks == 0
    assert cc.on_ack(20 * MSS, 16 * MSS, BIG) is False
    assert not cc.in_recovery and cc.cwnd == cc.ssthresh == 10 * MSS


def test_a_partial_ack_never_deflates_below_one_segment():
    cc = fresh()
    for _ in range(3):
        cc.on_duplicate_ack(0, 20 * MSS)
    assert cc.on_ack(19 * MSS, 19 * MSS, BIG) is True
    assert cc.cwnd == MSS


def test_duplicates_about_data_from_before_the_last_recovery_do_not_start_another():
    cc = fresh()
    for _ in range(3):
        cc.on_duplicate_ack(0, 20 * MSS)
    cc.on_ack(20 * MSS, 20 * MSS, BIG)
    cc.on_timeout(20 * MSS, 30 * MSS)  # recover moves to 30 * MSS
    for _ in range(2):
        cc.on_duplicate_ack(25 * MSS, 30 * MSS)
    assert cc.on_duplicate_ack(25 * MSS, 30 * MSS) == HOLD
    assert not cc.in_recovery
    assert cc.on_duplicate_ack(25 * MSS, 30 * MSS) == HOLD  # past the third: nothing either


def test_a_timeout_halves_the_flight_and_restarts_from_one_segment():
    cc = fresh()
    for _ in range(3):
        cc.on_duplicate_ack(0, 20 * MSS)
    cc.on_timeout(4 * MSS, 28 * MSS)
    assert cc.ssthresh == 12 * MSS and cc.cwnd == cc.window() == MSS
    assert not cc.in_recovery and cc.dupacks == 0 and cc.recover == 28 * MSS
    cc.on_ack(5 * MSS, MSS, BIG)
    assert cc.cwnd == 2 * MSS  # slow start again
