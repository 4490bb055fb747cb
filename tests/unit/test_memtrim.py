"""When the helper gives memory back after a burst of flows (the policy), and that asking works here."""

from tether.helper.root.vif.memtrim import TrimPolicy, release_to_os


def test_a_burst_is_trimmed_as_it_drains_to_a_quarter_and_again_when_the_rest_is_gone():
    policy = TrimPolicy(burst=512, fall=0.25)
    seen = [policy.observe(n) for n in (0, 200, 10_000, 9_000, 3_000, 2_500, 2_400, 2_400, 0, 0, 0)]
    # Each trim is followed by one at every look while the count still falls, and one more when it has stopped.
    assert seen == [False, False, False, False, False, True, True, True, True, True, False]
    assert policy.peak == 0


def test_trims_follow_a_slow_drain_to_its_end_and_stop_there():
    policy = TrimPolicy(burst=512, fall=0.25)
    seen = [policy.observe(n) for n in (10_000, 2_000, 1_200, 600, 100, 0, 0, 0, 0)]
    assert seen == [False, True, True, True, True, True, True, False, False]
    assert (policy.peak, policy.follow_up) == (0, False)


def test_a_new_burst_during_the_follow_ups_ends_them_and_is_trimmed_when_it_drains():
    policy = TrimPolicy(burst=512, fall=0.25)
    seen = [policy.observe(n) for n in (4_000, 900, 600, 5_000, 5_000, 1_000, 0, 0, 0)]
    assert seen == [False, True, True, True, False, True, True, True, False]


def test_small_churn_never_trims():
    policy = TrimPolicy(burst=512)
    assert not any(policy.observe(n) for n in [300, 0, 500, 10, 400, 0] * 10)
    assert policy.follow_up is False


def test_a_second_burst_after_a_trim_is_trimmed_again():
    policy = TrimPolicy(burst=512)
    assert [policy.observe(n) for n in (4_000, 0, 0, 0, 1_000, 100, 100, 100)] == [
        False, True, True, False, False, True, True, False,
    ]  # fmt: skip


def test_the_allocator_can_be_asked_on_this_machine():
    assert release_to_os() is True  # glibc here; False only where there is no malloc_trim
