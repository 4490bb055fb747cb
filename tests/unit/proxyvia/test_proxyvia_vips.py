"""The virtual subnets and the VIP table: defaults, validation, allocation order, stability, exhaustion."""

import ipaddress
import re

import pytest

from tether.helper.api.proxyvia import WorkloadRef
from tether.helper.root.proxyvia.vips import (
    DEFAULT_VIRTUAL_SUBNET6,
    VIRTUAL_SUBNETS,
    VipExhausted,
    VipTable,
    VirtualSubnetError,
    default_virtual_subnet,
    validate_virtual_subnet,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network
ECHO = WorkloadRef("default", "echo")
OTHER = WorkloadRef("default", "other")


@pytest.mark.parametrize(
    ("platform", "subnet"),
    [
        ("linux", "246.246.0.0/16"),
        ("linux2", "246.246.0.0/16"),
        ("darwin", "246.246.0.0/16"),
        ("win32", "211.55.48.0/20"),
        ("cygwin", "211.55.48.0/20"),
        ("freebsd14", "246.246.0.0/16"),
    ],
)
def test_platform_defaults(platform, subnet):
    assert default_virtual_subnet(platform) == net(subnet)
    assert VipTable(platform=platform).subnet == net(subnet)


def test_table_of_defaults():
    assert VIRTUAL_SUBNETS == {"linux": "246.246.0.0/16", "darwin": "246.246.0.0/16", "windows": "211.55.48.0/20"}
    table = VipTable(platform="linux")
    assert table.subnet6 == net(DEFAULT_VIRTUAL_SUBNET6) == net("fd74:6574:6865:7276::/64")
    assert table.subnets == [net("246.246.0.0/16"), net("fd74:6574:6865:7276::/64")]
    # the TUN's own addresses are outside the virtual subnets
    assert not table.contains(ip("169.254.116.1")) and not table.contains(ip("fd74:6574:6865:7200::1"))
    assert VipTable(subnet6=None).subnets == [default_virtual_subnet()]


def test_allocation_order_stability_and_lookup():
    table = VipTable("246.246.0.0/16")
    first = table.assign(ip("10.96.1.10"), ECHO)
    assert first == ip("246.246.0.1")  # the network address is skipped
    assert table.assign("10.96.1.11", ECHO) == ip("246.246.0.2")
    assert table.assign(ip("10.96.1.10"), ECHO) == first  # same pair, same VIP
    assert table.assign(ip("10.96.1.10"), OTHER) == ip("246.246.0.3")  # another workload, another VIP
    assert table.assign(ip("10.96.1.10"), None) == ip("246.246.0.4")  # the manager dials: another again
    assert table.lookup(ip("246.246.0.1")) == (ip("10.96.1.10"), ECHO)
    assert table.lookup("246.246.0.4") == (ip("10.96.1.10"), None)
    assert table.lookup(ip("246.246.0.5")) is None
    assert len(table) == 4
    assert table.items()[1] == (ip("246.246.0.2"), ip("10.96.1.11"), ECHO)
    assert table.contains(ip("246.246.200.1")) and not table.contains(ip("10.96.1.10"))


def test_ipv6_allocation():
    table = VipTable()
    vip = table.assign(ip("fd00:10::20"), ECHO)
    assert vip == ip("fd74:6574:6865:7276::1")
    assert table.assign(ip("::1"), ECHO) == ip("fd74:6574:6865:7276::2")
    assert table.lookup(vip) == (ip("fd00:10::20"), ECHO)
    assert table.assign(ip("10.0.0.1"), ECHO).version == 4  # the families have separate pools
    no6 = VipTable(subnet6=None)
    with pytest.raises(VipExhausted, match="there is no IPv6 virtual IP subnet for fd00:10::20"):
        no6.assign(ip("fd00:10::20"), ECHO)


def test_exhaustion_of_a_tiny_subnet():
    table = VipTable("10.9.9.0/29")
    vips = [table.assign(ip(f"10.96.0.{i}"), ECHO) for i in range(1, 7)]
    assert vips == [ip(f"10.9.9.{i}") for i in range(1, 7)]  # .0 and .7 (broadcast) are never given
    with pytest.raises(VipExhausted) as caught:
        table.assign(ip("10.96.0.7"), ECHO)
    assert str(caught.value) == (
        "the virtual IP subnet 10.9.9.0/29 is exhausted: all 6 virtual IPs are in use; "
        "configure a larger one (cluster.virtualIPSubnet)"
    )
    # what was given stays given
    assert table.assign(ip("10.96.0.3"), ECHO) == ip("10.9.9.3")
    assert table.lookup(ip("10.9.9.6")) == (ip("10.96.0.6"), ECHO)


def test_smallest_subnets():
    table = VipTable("10.9.9.0/30", "fd00:9::/126")
    assert table.assign(ip("10.0.0.1"), None) == ip("10.9.9.1")
    assert table.assign(ip("10.0.0.2"), None) == ip("10.9.9.2")
    with pytest.raises(VipExhausted, match="all 2 virtual IPs"):
        table.assign(ip("10.0.0.3"), None)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (
            "246.246.0.1/16",
            'invalid virtual IP subnet "246.246.0.1/16": host bits are set; did you mean 246.246.0.0/16?',
        ),
        ("246.246.0.0", "expected a CIDR such as 246.246.0.0/16"),
        ("246.246.0.0/40", 'invalid virtual IP subnet "246.246.0.0/40"'),
        ("nope/16", 'invalid virtual IP subnet "nope/16"'),
        ("10.0.0.0/31", "too small for any virtual IP (at least a /30)"),
        ("127.0.0.0/16", "it overlaps the loopback range 127.0.0.0/8"),
        ("169.254.0.0/24", "it overlaps the link-local range 169.254.0.0/16"),
        ("224.0.0.0/8", "it overlaps the multicast range 224.0.0.0/4"),
        ("0.0.0.0/0", "it overlaps the unspecified/this-network range 0.0.0.0/8"),
        ("fe80::/64", "it overlaps the link-local range fe80::/10"),
    ],
)
def test_bad_virtual_subnets(value, complaint):
    with pytest.raises(VirtualSubnetError) as caught:
        validate_virtual_subnet(value)
    assert complaint in str(caught.value)
    with pytest.raises(VirtualSubnetError):
        VipTable(value if ":" not in value else None, value if ":" in value else None)


def test_family_checks():
    with pytest.raises(VirtualSubnetError, match="the virtual IP subnet fd00::/64 must be IPv4"):
        VipTable("fd00::/64")
    with pytest.raises(VirtualSubnetError, match=re.escape("the IPv6 virtual IP subnet 10.0.0.0/16 must be IPv6")):
        VipTable("246.246.0.0/16", "10.0.0.0/16")


def test_overlap_with_the_cluster():
    assert validate_virtual_subnet("246.246.0.0/16", service=[net("10.96.0.0/12")]) == net("246.246.0.0/16")
    with pytest.raises(VirtualSubnetError) as caught:
        validate_virtual_subnet("10.96.0.0/16", service=[net("10.96.0.0/12")], pods=[net("10.244.0.0/16")])
    assert str(caught.value) == (
        "virtual IP subnet 10.96.0.0/16 overlaps the cluster's service subnet 10.96.0.0/12; "
        "configure another one (cluster.virtualIPSubnet)"
    )
    with pytest.raises(VirtualSubnetError, match=re.escape("overlaps the cluster's pod subnet 10.244.0.0/16")):
        validate_virtual_subnet("10.0.0.0/8", pods=[net("10.244.0.0/16")])
    with pytest.raises(VirtualSubnetError, match=re.escape("overlaps the also-proxy subnet 211.55.50.0/24")):
        validate_virtual_subnet("211.55.48.0/20", also=[net("211.55.50.0/24")])
    with pytest.raises(VirtualSubnetError, match=re.escape("overlaps the proxied subnet 246.0.0.0/8")):
        validate_virtual_subnet(net("246.246.0.0/16"), proxied=[net("246.0.0.0/8")])
    with pytest.raises(VirtualSubnetError, match="IPv6 virtual IP subnet fd74:6574:6865:7276::/64 overlaps"):
        validate_virtual_subnet(DEFAULT_VIRTUAL_SUBNET6, pods=[net("fd74::/16")], what="IPv6 virtual IP subnet")
    # other families never overlap
    assert validate_virtual_subnet(DEFAULT_VIRTUAL_SUBNET6, pods=[net("0.0.0.0/1")]).version == 6
