"""DNS answers to VIPs (A, AAAA, loopback, other records) and VIPs back to destinations."""

import ipaddress
import logging
import re

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RR, SRV, TXT, A

from tether.helper.api.proxyvia import ProxyRule, WorkloadRef, auto_rules, combine, parse_proxy_vias, resolve
from tether.helper.root.proxyvia.rewrite import (
    Rewriter,
    UnknownVirtualIP,
    destination_mapper,
    loopback_workload,
    match_rule,
    rewrite_records,
    virtual_subnets_to_route,
)
from tether.helper.root.proxyvia.vips import VipTable

ip = ipaddress.ip_address
net = ipaddress.ip_network
NAME = "web.default.svc.cluster.local."
ECHO = WorkloadRef("default", "echo")
MESH = WorkloadRef("default", "mesh")


def a(address, name=NAME, ttl=30):
    return RR(name, QTYPE.A, rdata=A(address), ttl=ttl)


def aaaa(address, name=NAME, ttl=30):
    return RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl)


def shown(records):
    return [(str(r.rname), QTYPE.get(r.rtype), r.ttl, str(r.rdata)) for r in records]


def rules_for(*values, service=("10.96.0.0/12", "fd00:96::/108"), pods=("10.244.0.0/16",), also=()):
    return resolve(parse_proxy_vias(values), service, pods, also, namespace="default")


def test_a_and_aaaa_in_a_rule_become_vips():
    table = VipTable("246.246.0.0/16")
    rules = rules_for("service=echo")
    out = rewrite_records([a("10.96.1.10"), aaaa("fd00:96::10"), a("192.0.2.1")], rules, table)
    assert shown(out) == [
        (NAME, "A", 30, "246.246.0.1"),
        (NAME, "AAAA", 30, "fd74:6574:6865:7276::1"),
        (NAME, "A", 30, "192.0.2.1"),  # outside every rule: unchanged
    ]
    assert table.lookup(ip("246.246.0.1")) == (ip("10.96.1.10"), ECHO)
    assert table.lookup(ip("fd74:6574:6865:7276::1")) == (ip("fd00:96::10"), ECHO)
    # the same answer again: the same VIPs
    assert shown(rewrite_records([a("10.96.1.10")], rules, table)) == [(NAME, "A", 30, "246.246.0.1")]


def test_other_records_pass_unchanged():
    table = VipTable()
    records = [
        RR(NAME, QTYPE.CNAME, rdata=CNAME("other.default.svc.cluster.local."), ttl=7),
        RR(NAME, QTYPE.SRV, rdata=SRV(0, 100, 80, NAME), ttl=7),
        RR(NAME, QTYPE.TXT, rdata=TXT("10.96.1.10"), ttl=7),
        RR(NAME, QTYPE.MX, rdata=MX(NAME, 10), ttl=7),
        a("10.96.0.20", name="other.default.svc.cluster.local.", ttl=7),
    ]
    out = rewrite_records(records, rules_for("all=echo"), table)
    assert out[:4] == records[:4]
    assert all(o is r for o, r in zip(out[:4], records[:4], strict=True))
    assert shown(out[4:]) == [("other.default.svc.cluster.local.", "A", 7, "246.246.0.1")]  # owner and TTL kept


def test_first_rule_wins_and_auto_rules_have_no_workload():
    explicit = rules_for("10.96.1.0/24=echo", service=(), pods=())
    rules = combine(explicit, auto_rules(["10.96.0.0/12"]))
    table = VipTable()
    out = rewrite_records([a("10.96.1.10"), a("10.96.2.10")], rules, table)
    assert [str(r.rdata) for r in out] == ["246.246.0.1", "246.246.0.2"]
    assert table.lookup(ip("246.246.0.1")) == (ip("10.96.1.10"), ECHO)
    assert table.lookup(ip("246.246.0.2")) == (ip("10.96.2.10"), None)  # auto-resolve: the manager dials
    assert match_rule(rules, ip("10.96.1.10")) is explicit[0]
    assert match_rule(rules, ip("10.97.0.1")) is rules[1]
    assert match_rule(rules, ip("fd00::1")) is None


def test_loopback_goes_to_the_first_workload():
    rules = rules_for("pods=mesh", "service=echo")
    assert loopback_workload(rules) == MESH
    table = VipTable()
    out = rewrite_records([a("127.0.0.1"), a("127.0.0.53"), aaaa("::1")], rules, table)
    assert [str(r.rdata) for r in out] == ["246.246.0.1", "246.246.0.2", "fd74:6574:6865:7276::1"]
    assert table.lookup(ip("246.246.0.1")) == (ip("127.0.0.1"), MESH)
    assert table.lookup(ip("246.246.0.2")) == (ip("127.0.0.53"), MESH)
    assert table.lookup(ip("fd74:6574:6865:7276::1")) == (ip("::1"), MESH)


def test_loopback_explicit_rule_beats_the_first_workload():
    rules = [*rules_for("service=echo"), *rules_for("127.0.0.0/8=mesh", service=(), pods=())]
    table = VipTable()
    out = rewrite_records([a("127.0.0.1"), aaaa("::1")], rules, table)
    assert table.lookup(ip(str(out[0].rdata))) == (ip("127.0.0.1"), MESH)
    assert table.lookup(ip(str(out[1].rdata))) == (ip("::1"), ECHO)  # ::1 is not in 127.0.0.0/8


def test_loopback_unchanged_without_a_workload():
    table = VipTable()
    records = [a("127.0.0.1"), aaaa("::1")]
    assert rewrite_records(records, auto_rules(["10.96.0.0/12"]), table) == records
    assert rewrite_records(records, [], table) == records
    assert len(table) == 0


def test_exhaustion_drops_the_record(caplog):
    table = VipTable("10.9.9.0/30", None)
    rules = rules_for("service=echo")
    with caplog.at_level(logging.WARNING, logger="tether.helper.root.proxyvia"):
        out = rewrite_records([a("10.96.0.1"), a("10.96.0.2"), a("10.96.0.3"), aaaa("fd00:96::1")], rules, table)
    assert [str(r.rdata) for r in out] == ["10.9.9.1", "10.9.9.2"]
    assert "10.9.9.0/30 is exhausted" in caplog.text
    assert "no IPv6 virtual IP subnet" in caplog.text


def test_unreadable_address_passes():
    record = RR(NAME, QTYPE.A, rdata=TXT("not an address"), ttl=5)
    assert rewrite_records([record], rules_for("all=echo"), VipTable()) == [record]


def test_rewriter_hook_keeps_the_table_across_rule_changes():
    table = VipTable()
    rewriter = Rewriter(table, rules_for("service=echo"))
    out = rewriter(NAME, QTYPE.A, [a("10.96.1.10")])
    assert str(out[0].rdata) == "246.246.0.1"
    assert rewriter.set_rules(rules_for("service=echo")) is False
    assert rewriter.set_rules(rules_for("service=echo", "10.0.0.0/16=mesh")) is True
    out = rewriter(NAME, QTYPE.A, [a("10.96.1.10"), a("10.0.0.5")])
    assert [str(r.rdata) for r in out] == ["246.246.0.1", "246.246.0.2"]
    assert table.lookup(ip("246.246.0.2")) == (ip("10.0.0.5"), MESH)
    assert rewriter.table is table and len(table) == 2
    rewriter.set_rules([])
    records = [a("10.96.1.10")]
    assert rewriter(NAME, QTYPE.A, records) is records  # no rules: untouched
    assert table.lookup(ip("246.246.0.1")) == (ip("10.96.1.10"), ECHO)  # never reassigned


def test_destination_mapper():
    table = VipTable()
    vip = table.assign(ip("10.96.1.10"), ECHO)
    vip_auto = table.assign(ip("10.96.1.11"), None)
    vip6 = table.assign(ip("fd00:96::10"), ECHO)
    mapper = destination_mapper(table)
    assert mapper(vip, 80) == (ip("10.96.1.10"), 80, ("default", "echo", ""))
    assert mapper(vip_auto, 53) == (ip("10.96.1.11"), 53, None)
    assert mapper(vip6, 443) == (ip("fd00:96::10"), 443, ECHO)
    assert mapper(ip("10.96.1.10"), 80) is None  # not a VIP: unchanged
    assert mapper(ip("fd00:96::10"), 80) is None
    with pytest.raises(
        UnknownVirtualIP, match=re.escape("246.246.9.9 is in the virtual IP subnet but no DNS answer gave it out")
    ):
        mapper(ip("246.246.9.9"), 80)
    assert isinstance(UnknownVirtualIP("x"), LookupError)


def test_rule_str_and_types():
    rule = ProxyRule(net("10.0.0.0/8"), ECHO, "10.0.0.0/8=echo")
    assert str(rule) == "10.0.0.0/8 via default/echo"


def test_virtual_subnets_to_route():
    table = VipTable("246.246.0.0/16")
    v4, v6 = table.subnets
    assert virtual_subnets_to_route(table, auto_rules(["10.96.0.0/12"])) == [v4]
    assert virtual_subnets_to_route(table, auto_rules(["fd00::/64"])) == [v6]
    assert virtual_subnets_to_route(table, auto_rules(["10.96.0.0/12", "fd00::/64"])) == [v4, v6]
    assert virtual_subnets_to_route(table, rules_for("10.0.0.0/8=echo", service=(), pods=())) == [v4, v6]  # loopback
    assert virtual_subnets_to_route(table, []) == []
    assert virtual_subnets_to_route(VipTable(subnet6=None), rules_for("all=echo")) == [VipTable().subnet]
