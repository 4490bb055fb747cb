"""Pure subnet rules: service-range parsing, fallback, covering pod IPs, dropping covered subnets."""

from __future__ import annotations

from ipaddress import ip_network as net

import pytest

from tether.manager.subnets import (
    InvalidCIDR,
    cover_ips,
    drop_covered,
    fallback_service_cidr,
    fallback_service_cidrs,
    parse_cidr,
    parse_service_cidr_error,
    parse_service_cidrs_error,
)

# Real phrasings of the API server's refusal of ClusterIP 1.1.1.1, old to new.
SERVICE_ERRORS = [
    # Kubernetes <= 1.19: single clusterIP field.
    (
        'Service "tether-probe" is invalid: spec.clusterIP: Invalid value: "1.1.1.1": provided IP is not in the '
        "valid range. The range of valid IPs is 10.96.0.0/12",
        "10.96.0.0/12",
    ),
    # 1.20+: dual-stack aware clusterIPs with the Go slice rendering.
    (
        'Service "tether-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to '
        "allocate IP 1.1.1.1: provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16",
        "10.43.0.0/16",
    ),
    # Newer wording that repeats the IP.
    (
        'Service "tether-probe" is invalid: spec.clusterIPs[0]: Invalid value: "1.1.1.1": failed to allocate IP '
        "1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.100.0.0/16",
        "10.100.0.0/16",
    ),
    # MultiCIDRServiceAllocator: range list followed by a trailing space.
    (
        'Service "tether-probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: failed to '
        "allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is "
        "172.20.0.0/16 ",
        "172.20.0.0/16",
    ),
    # Trailing punctuation and newline.
    ("... not in the valid range. The range of valid IPs is 10.96.0.0/12.\n", "10.96.0.0/12"),
    ("the range of valid IPs is 10.96.0.0/12;", "10.96.0.0/12"),
    # IPv6-only cluster probed with an IPv6 address.
    (
        'Service "tether-probe" is invalid: spec.clusterIPs: Invalid value: []string{"2001:db8::1"}: failed to '
        "allocate IP 2001:db8::1: the provided IP (2001:db8::1) is not in the valid range. "
        "The range of valid IPs is fd00:10:96::/112",
        "fd00:10:96::/112",
    ),
]


class TestParseServiceCidrError:
    @pytest.mark.parametrize(("message", "expected"), SERVICE_ERRORS)
    def test_real_world_phrasings(self, message, expected):
        assert parse_service_cidr_error(message) == net(expected)

    def test_several_ranges_prefers_ipv4_and_lists_all(self):
        message = "The range of valid IPs is fd00:10:96::/112 10.96.0.0/16 10.200.0.0/16 "
        assert parse_service_cidr_error(message) == net("10.96.0.0/16")
        assert parse_service_cidrs_error(message) == [
            net("10.96.0.0/16"),
            net("10.200.0.0/16"),
            net("fd00:10:96::/112"),
        ]

    def test_comma_separated_list(self):
        assert parse_service_cidrs_error("The range of valid IPs is 10.96.0.0/12, fd00::/108") == [
            net("10.96.0.0/12"),
            net("fd00::/108"),
        ]

    def test_text_after_the_list_is_not_parsed(self):
        message = "The range of valid IPs is 10.96.0.0/12. Retry with 192.168.0.0/16 maybe"
        assert parse_service_cidrs_error(message) == [net("10.96.0.0/12")]

    @pytest.mark.parametrize(
        "message",
        [
            "",
            "garbage",
            'Service "x" is invalid: spec.ipFamilies[0]: Invalid value: "IPv4": not configured on this cluster',
            "The range of valid IPs is",
            "The range of valid IPs is banana",
            "The range of valid IPs is 10.96.0.0/99",
            "services is forbidden: User cannot create resource",
        ],
    )
    def test_garbage_gives_none(self, message):
        assert parse_service_cidr_error(message) is None
        assert parse_service_cidrs_error(message) == []

    def test_host_bits_in_answer_are_masked(self):
        # The API server prints the configured flag verbatim; be lenient with what it says.
        assert parse_service_cidr_error("The range of valid IPs is 10.96.0.1/12") == net("10.96.0.0/12")


class TestFallbackServiceCidr:
    def test_single_ip_masked_to_16(self):
        assert fallback_service_cidr(["10.43.0.1"]) == net("10.43.0.0/16")

    def test_ips_spread_over_a_12_are_covered(self):
        # kubeadm's 10.96.0.0/12: /16 around the first IP would miss 10.104.x.
        assert fallback_service_cidr(["10.96.0.1", "10.96.0.10", "10.104.3.4"]) == net("10.96.0.0/12")

    def test_ipv6_uses_108(self):
        assert fallback_service_cidrs(["fd00:10:96::1", "fd00:10:96::a"]) == [net("fd00:10:96::/108")]

    def test_dual_stack_gives_one_per_family_ipv4_first(self):
        found = fallback_service_cidrs(["fd00:10:96::1", "10.96.0.1", "None", "", None])
        assert found == [net("10.96.0.0/16"), net("fd00:10:96::/108")]
        assert fallback_service_cidr(["fd00:10:96::1", "10.96.0.1"]) == net("10.96.0.0/16")

    def test_unrelated_ranges_stay_separate(self):
        # Wider than any single service range: several ServiceCIDRs, one /16 each.
        assert fallback_service_cidrs(["10.43.0.1", "172.20.0.10"]) == [net("10.43.0.0/16"), net("172.20.0.0/16")]

    def test_nothing_known(self):
        assert fallback_service_cidr([]) is None
        assert fallback_service_cidr(["None", "not-an-ip"]) is None


class TestCoverIps:
    def test_groups_per_16(self):
        ips = ["10.1.2.3", "10.1.5.4", "10.2.0.1", "10.2.0.200"]
        assert cover_ips(ips) == [net("10.1.0.0/21"), net("10.2.0.0/24")]

    def test_single_ip_gives_24_not_32(self):
        assert cover_ips(["10.244.3.17"]) == [net("10.244.3.0/24")]

    def test_full_16_group(self):
        assert cover_ips(["10.42.0.5", "10.42.255.7"]) == [net("10.42.0.0/16")]

    def test_ipv6_grouped_per_64(self):
        ips = ["fd00:10:244:1::5", "fd00:10:244:1::1:7", "fd00:10:244:2::9"]
        assert cover_ips(ips) == [net("fd00:10:244:1::/111"), net("fd00:10:244:2::/120")]

    def test_mixed_families_sorted_ipv4_first(self):
        assert cover_ips(["fd00::1", "192.168.1.1", "10.0.0.1"]) == [
            net("10.0.0.0/24"),
            net("192.168.1.0/24"),
            net("fd00::/120"),
        ]

    def test_empty(self):
        assert cover_ips([]) == []


class TestDropCovered:
    def test_equal_subnets_collapse(self):
        assert drop_covered([net("10.0.0.0/16"), net("10.0.0.0/16")]) == [net("10.0.0.0/16")]

    def test_covered_subnet_dropped(self):
        assert drop_covered([net("10.1.0.0/16"), net("10.0.0.0/8"), net("10.1.2.0/24")]) == [net("10.0.0.0/8")]

    def test_disjoint_kept_and_sorted(self):
        subnets = [net("192.168.0.0/24"), net("10.0.0.0/16"), net("172.16.0.0/12")]
        assert drop_covered(subnets) == [net("10.0.0.0/16"), net("172.16.0.0/12"), net("192.168.0.0/24")]

    def test_mixed_families_never_cover_each_other(self):
        subnets = [net("fd00::/8"), net("0.0.0.0/0"), net("fd00:1::/64"), net("10.0.0.0/8")]
        assert drop_covered(subnets) == [net("0.0.0.0/0"), net("fd00::/8")]

    def test_adjacent_not_merged(self):
        # Only covering is removed; merging neighbours would claim addresses nobody named.
        assert drop_covered([net("10.0.0.0/25"), net("10.0.0.128/25")]) == [net("10.0.0.0/25"), net("10.0.0.128/25")]


class TestParseCidr:
    def test_valid(self):
        assert parse_cidr(" 10.1.0.0/16 ", what="x") == net("10.1.0.0/16")
        assert parse_cidr("fd00::/8", what="x") == net("fd00::/8")

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("10.0.0.0/33", "prefix length 33 is out of range for IPv4 (0-32)"),
            ("fd00::/129", "prefix length 129 is out of range for IPv6 (0-128)"),
            ("10.1.2.3/16", "10.1.2.3/16 has host bits set; did you mean 10.1.0.0/16?"),
            ("10.1.2.3", "missing prefix length (write 10.1.2.3/32 for one address)"),
            ("banana/8", '"banana" is not an IP address'),
            ("10.0.0.0/x", 'prefix length "x" is not a number'),
            ("10.0.0.0/-1", 'prefix length "-1" is not a number'),
            ("", "empty value"),
            ("fe80::1%eth0/64", "has a zone index"),
        ],
    )
    def test_invalid_names_value_and_setting(self, text, reason):
        with pytest.raises(InvalidCIDR) as info:
            parse_cidr(text, what="client.routing.alsoProxySubnets")
        message = str(info.value)
        assert message.startswith(f'invalid CIDR "{text}" in client.routing.alsoProxySubnets: ')
        assert reason in message
        assert info.value.value == text
        assert "client.routing" not in info.value.detail
        assert isinstance(info.value, ValueError)
