"""The conflict dialog's logic without Qt: default allow list, its checks, proxy-via values, Resolutions."""

import pytest

from tether.gui import conflict_choice as choice
from tether.gui.conflict_choice import Choice, ConflictRow
from tether.helper.api import helper_pb2 as pb
from tether.helper.api.validate import ValidationError
from tether.helper.user.resolutions import Resolution

CONFLICTS = [
    ConflictRow("10.96.0.0/12", "10.0.0.0/8", "tun-vpn"),
    ConflictRow("10.244.0.0/16", "10.0.0.0/8", "tun-vpn"),
    ConflictRow("10.96.0.0/12", "10.100.0.0/16", "wg0"),  # the VPN's route narrower than the cluster subnet
]


def test_rows_from_protobuf_conflicts():
    state = pb.State(
        conflicts=[pb.Conflict(subnet="10.96.0.0/12", route="10.0.0.0/8", device="tun0", gateway="10.8.0.1")]
    )
    assert choice.rows(state.conflicts) == [ConflictRow("10.96.0.0/12", "10.0.0.0/8", "tun0", "10.8.0.1", "")]


def test_default_allow_list_is_the_conflicting_cluster_subnets_once_each_sorted():
    assert choice.default_allow_list(CONFLICTS) == ["10.96.0.0/12", "10.244.0.0/16"]
    assert choice.check_allow_list(choice.default_allow_list(CONFLICTS), CONFLICTS) == (
        "10.96.0.0/12",
        "10.244.0.0/16",
    )


def test_allow_list_text_one_per_line_or_commas():
    assert choice.parse_allow_text(" 10.96.0.0/12 \n\n10.244.0.0/16, 10.1.0.0/16\n") == [
        "10.96.0.0/12",
        "10.244.0.0/16",
        "10.1.0.0/16",
    ]


def test_allow_list_names_a_bad_cidr():
    with pytest.raises(
        ValidationError, match=r'allow: "10\.96\.0\.1/12" has host bits set; did you mean 10\.96\.0\.0/12'
    ):
        choice.check_allow_list(["10.244.0.0/16", "10.96.0.1/12"], CONFLICTS)
    with pytest.raises(ValidationError, match=r'allow: "banana" is not a CIDR'):
        choice.check_allow_list(["banana"], CONFLICTS)


def test_allow_list_refuses_a_range_outside_the_conflict_and_says_which_are_allowed():
    with pytest.raises(ValidationError) as caught:
        choice.check_allow_list(["192.168.0.0/16"], CONFLICTS)
    message = str(caught.value)
    assert '"192.168.0.0/16" is not inside a conflicting VPN route' in message
    assert "10.0.0.0/8 on tun-vpn, 10.100.0.0/16 on wg0" in message
    # A range larger than the VPN's route is outside it too.
    with pytest.raises(ValidationError, match=r'"10\.0\.0\.0/7"'):
        choice.check_allow_list(["10.0.0.0/7"], CONFLICTS)


def test_allow_list_accepts_ranges_inside_a_route_and_drops_duplicates():
    assert choice.check_allow_list(["10.0.0.0/8", "10.96.0.0/12", "10.0.0.0/8"], CONFLICTS) == (
        "10.0.0.0/8",
        "10.96.0.0/12",
    )
    # The cluster subnet may be allowed even where the VPN's route (10.100.0.0/16) is the narrower one.
    only_narrow = [ConflictRow("10.96.0.0/12", "10.100.0.0/16", "wg0")]
    assert choice.check_allow_list(["10.96.0.0/12"], only_narrow) == ("10.96.0.0/12",)


def test_empty_allow_list_is_refused():
    with pytest.raises(ValidationError, match="at least one range"):
        choice.check_allow_list([], CONFLICTS)


def test_still_conflicting_lists_subnets_the_allow_list_leaves_out():
    assert choice.still_conflicting(["10.96.0.0/12"], CONFLICTS) == ["10.244.0.0/16"]
    assert choice.still_conflicting(["10.0.0.0/8"], CONFLICTS) == []


def test_proxy_via_value_uses_the_helpers_rules():
    assert choice.proxy_via_value("service", "default/echo") == "service=default/echo"
    with pytest.raises(ValidationError, match='"everything" is not one of also, service, pods, all'):
        choice.proxy_via_value("everything", "default/echo")
    with pytest.raises(ValidationError, match='workload "Echo" is not a valid name'):
        choice.proxy_via_value("all", "default/Echo")
    with pytest.raises(ValidationError, match="pick the workload"):
        choice.proxy_via_value("all", "")


def test_build_resolution_for_each_choice():
    allow = choice.build_resolution(Choice.ALLOW, CONFLICTS, allow=["10.96.0.0/12", "10.244.0.0/16"])
    assert allow == Resolution(allow_conflicting_subnets=("10.96.0.0/12", "10.244.0.0/16"))
    via = choice.build_resolution(Choice.PROXY_VIA, CONFLICTS, symbol="pods", workload="apps/gateway")
    assert via == Resolution(proxy_via=("pods=apps/gateway",))
    assert choice.build_resolution(Choice.AUTO_REMAP, CONFLICTS) == Resolution(auto_resolve=True)


def test_every_choice_has_a_title_and_one_sentence_consequence():
    for option in Choice:
        sentence = choice.CONSEQUENCES[option]
        assert choice.TITLES[option]
        assert sentence.endswith(".") and sentence.count(". ") == 0


def test_preselection_from_a_remembered_resolution():
    assert choice.preselection(Resolution(auto_resolve=True)) == choice.Preselection(Choice.AUTO_REMAP)
    assert choice.preselection(Resolution(proxy_via=("service=default/echo",))) == choice.Preselection(
        Choice.PROXY_VIA, symbol="service", workload="default/echo"
    )
    assert choice.preselection(Resolution(allow_conflicting_subnets=("10.96.0.0/12",))) == choice.Preselection(
        Choice.ALLOW, allow=("10.96.0.0/12",)
    )
    # A CIDR proxy-via written by the CLI cannot be shown in the symbol picker.
    assert choice.preselection(Resolution(proxy_via=("10.0.0.0/8=echo",))) is None
