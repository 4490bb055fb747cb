"""When the helper gives memory back after a burst of flows (the policy), and that asking works here."""

from tether.helper.root.vif.memtrim import TrimPolicy, release_to_os


def test_a_burst_is_trimmed_as_it_drains_to_a_quarter_and_again_when_the_rest_is_gone():
    policy = TrimPolicy(burst=512, fall=0.25)
    seen = [policy.observe(n) for n in (0, 200, 10_000, 9_000, 3_000, 2_500, 2_400, 2_400, 0, 0, 0)]
    # Each trim is followed by one more at the next look, for what had only just closed.
    assert seen == [False, False, False, False, False, True, True, False, True, True, False]
    assert policy.peak == 0


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
