"""The systemd-resolved configurator's calls, from settings, against a fake resolve1 (no bus, no daemon)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.doubles.fake_resolve1 import FakeResolve1
from tether.helper.root.cleanup import registered_kinds
from tether.helper.root.dns.resolvers.base import ResolverConfigurator, ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.choose import Mode, Probes, choose
from tether.helper.root.dns.resolvers.linux_resolved import (
    KIND,
    LinuxResolvedConfigurator,
    link_calls,
    link_domains,
    revert_records,
    servers_from_property,
)
from tether.helper.root.dns.rules import RulesConfig, routing_domains
from tether.helper.root.journal import ExtraRecord, Journal, read_journal

RULES = RulesConfig(
    namespace="default",
    mapped_namespaces=frozenset({"default", "shop"}),
    include_suffixes=(".corp.example.com",),
    routed_subnets=(ipaddress.ip_network("10.96.0.0/16"),),
)
SETTINGS = ResolverSettings(
    server=ipaddress.ip_address("127.0.0.1"),
    port=40053,
    tun_name="lo",  # a link that exists everywhere, so the "still there" check holds
    routing_domains=routing_domains(RULES),
    search_domain=RULES.search_domain,
)
LO = socket.if_nametoindex("lo")


def configurator(bus: FakeResolve1, journal: Journal | None = None) -> LinuxResolvedConfigurator:
    return LinuxResolvedConfigurator(journal=journal, bus=bus, ifindex=socket.if_nametoindex)


def test_domains_search_first_then_routing_only():
    assert link_domains(SETTINGS) == [
        ("tether.local", False),
        ("cluster.local", True),
        ("default", True),
        ("shop", True),
        ("corp.example.com", True),
        ("96.10.in-addr.arpa", True),
        ("svc", True),
    ]


def test_domains_without_a_search_domain_are_all_routing_only():
    settings = ResolverSettings(server=SETTINGS.server, port=53, tun_name="x", routing_domains=("Cluster.Local.",))
    assert link_domains(settings) == [("cluster.local", True), ("svc", True)]


def test_link_calls_name_the_server_with_its_port_and_switch_everything_else_off():
    calls = link_calls(SETTINGS, 7)
    assert calls[0] == ("SetLinkDNSEx", "ia(iayqs)", [7, [[socket.AF_INET, bytes([127, 0, 0, 1]), 40053, ""]]])
    assert calls[1][0] == "SetLinkDomains" and calls[1][2][1][0] == ["tether.local", False]
    assert calls[2:] == [
        ("SetLinkDefaultRoute", "ib", [7, False]),
        ("SetLinkDNSSEC", "is", [7, "no"]),
        ("SetLinkDNSOverTLS", "is", [7, "no"]),
        ("SetLinkLLMNR", "is", [7, "no"]),
        ("SetLinkMulticastDNS", "is", [7, "no"]),
    ]


def test_an_ipv6_server_is_sent_as_sixteen_bytes():
    settings = ResolverSettings(server=ipaddress.ip_address("::1"), port=53, tun_name="x")
    family, raw, port, _ = link_calls(settings, 3)[0][2][1][0]
    assert (family, raw, port) == (socket.AF_INET6, ipaddress.ip_address("::1").packed, 53)


def test_apply_then_revert_on_the_link_and_in_the_journal(tmp_path):
    bus = FakeResolve1()
    journal = Journal(tmp_path / "journal.json")
    resolved = configurator(bus, journal)
    assert isinstance(resolved, ResolverConfigurator) and resolved.mode == "systemd-resolved"
    resolved.apply(SETTINGS)
    assert bus.calls == [(method, args) for method, _, args in link_calls(SETTINGS, LO)]
    state = read_journal(tmp_path / "journal.json")
    assert state is not None
    assert [(r.kind, r.key, dict(r.data), r.module) for r in state.records] == [
        (KIND, "lo", {"ifindex": LO}, "tether.helper.root.dns.resolvers.linux_resolved")
    ]
    resolved.revert()
    assert bus.calls[-1] == ("RevertLink", [LO])
    assert read_journal(tmp_path / "journal.json").records == ()
    resolved.revert()  # nothing applied: no call
    assert bus.methods.count("RevertLink") == 1


def test_a_failing_call_names_call_and_link_and_reverts_what_was_applied(tmp_path):
    bus = FakeResolve1(fail="SetLinkDefaultRoute")
    journal = Journal(tmp_path / "journal.json")
    resolved = configurator(bus, journal)
    with pytest.raises(ResolverError, match=r"SetLinkDefaultRoute on link lo \(index \d+\) failed: .*AccessDenied"):
        resolved.apply(SETTINGS)
    assert bus.methods == ["SetLinkDNSEx", "SetLinkDomains", "SetLinkDefaultRoute", "RevertLink"]
    assert read_journal(tmp_path / "journal.json").records == ()
    assert resolved.link is None


def test_a_missing_link_is_a_clear_error_and_changes_nothing():
    bus = FakeResolve1()
    resolved = LinuxResolvedConfigurator(bus=bus)
    settings = ResolverSettings(server=SETTINGS.server, port=53, tun_name="tether-nonexistent")
    with pytest.raises(ResolverError, match="no network link named 'tether-nonexistent'"):
        resolved.apply(settings)
    assert bus.calls == []


def test_revert_of_a_link_that_is_gone_makes_no_call():
    bus = FakeResolve1()
    resolved = configurator(bus)
    resolved.link = ("tether-gone", 999_999)
    resolved.revert()
    assert bus.calls == [] and resolved.link is None


def test_upstreams_from_the_bus_exclude_our_link_and_put_global_servers_first(tmp_path):
    bus = FakeResolve1(
        servers=[
            (2, socket.AF_INET, bytes([192, 0, 2, 7])),
            (LO, socket.AF_INET, bytes([127, 0, 0, 1])),
            (0, socket.AF_INET, bytes([203, 0, 113, 53])),
            (0, socket.AF_INET6, ipaddress.ip_address("2001:db8::53").packed),
        ]
    )
    resolved = configurator(bus)
    resolved.apply(SETTINGS)
    assert [str(a) for a in resolved.upstream_nameservers()] == ["203.0.113.53", "2001:db8::53", "192.0.2.7"]


def test_upstreams_fall_back_to_resolveds_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# written by resolved\nnameserver 203.0.113.53\nsearch tether.local\n")
    resolved = LinuxResolvedConfigurator(bus=FakeResolve1(unreachable=True), resolv_conf=conf)
    assert [str(a) for a in resolved.upstream_nameservers()] == ["203.0.113.53"]
    missing = LinuxResolvedConfigurator(bus=FakeResolve1(), resolv_conf=tmp_path / "absent")
    with pytest.raises(ResolverError, match=r"cannot read .*absent"):
        missing.upstream_nameservers()


def test_servers_from_property_skips_other_families():
    assert servers_from_property([(0, 99, b"xx"), (0, socket.AF_INET, bytes([10, 0, 0, 1]))], None) == [
        ipaddress.ip_address("10.0.0.1")
    ]


def test_cleanup_reverts_journaled_links_that_still_exist():
    bus = FakeResolve1()
    records = [
        ExtraRecord(KIND, "lo", {"ifindex": LO}),
        ExtraRecord(KIND, "tether-gone", {"ifindex": 999_999}),  # the link went with the crashed helper
        ExtraRecord(KIND, "lo", {"ifindex": LO + 1000}),  # a reused name with another index: not ours
    ]
    assert revert_records(records, bus) == ["reverted systemd-resolved settings of link lo"]
    assert bus.calls == [("RevertLink", [LO])]
    assert KIND in registered_kinds()


def test_cleanup_failure_names_the_link():
    with pytest.raises(ResolverError, match="RevertLink on link lo"):
        revert_records([ExtraRecord(KIND, "lo", {"ifindex": LO})], FakeResolve1(fail="RevertLink"))


def test_resolved_hosts_get_this_configurator():
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
    assert choose(Probes("linux", stub, True)) is LinuxResolvedConfigurator
    assert LinuxResolvedConfigurator.mode == Mode.SYSTEMD_RESOLVED
