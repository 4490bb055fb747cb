"""The name rules over a table of names."""

import ipaddress

import pytest

from tether.helper.root.dns.rules import (
    Decision,
    RulesConfig,
    Target,
    decide,
    reverse_address,
    reverse_zones,
    routing_domains,
)

CONFIG = RulesConfig(
    cluster_domain="cluster.local",
    namespace="team",
    mapped_namespaces=frozenset({"default", "Kube-System"}),
    include_suffixes=(".corp.example.com", ".internal"),
    search_domain="tether.local",
    routed_subnets=(ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:10::/64")),
)

C, U = Target.CLUSTER, Target.UPSTREAM

CASES = [
    # under the cluster domain: as is
    ("web.default.svc.cluster.local.", C, "web.default.svc.cluster.local."),
    ("web.default.svc.cluster.local", C, "web.default.svc.cluster.local."),
    ("WEB.Default.SVC.Cluster.Local.", C, "web.default.svc.cluster.local."),
    ("cluster.local.", C, "cluster.local."),
    ("pod-1.headless.other.svc.cluster.local.", C, "pod-1.headless.other.svc.cluster.local."),
    # mapped namespaces, with and without .svc
    ("web.default.", C, "web.default.svc.cluster.local."),
    ("web.default", C, "web.default.svc.cluster.local."),
    ("Web.DEFAULT.", C, "web.default.svc.cluster.local."),
    ("web.default.svc.", C, "web.default.svc.cluster.local."),
    ("dns.kube-system.", C, "dns.kube-system.svc.cluster.local."),
    ("pod-1.headless.default.", C, "pod-1.headless.default.svc.cluster.local."),
    # an unmapped namespace is an ordinary name
    ("web.unmapped.", U, "web.unmapped."),
    ("web.unmapped.svc.", U, "web.unmapped.svc."),
    # excluded suffixes, and an include-suffix that is at least as long
    ("example.com.", U, "example.com."),
    ("www.example.com", U, "www.example.com."),
    ("pypi.org.", U, "pypi.org."),
    ("github.io.", U, "github.io."),
    ("com.", U, "com."),
    ("db.corp.example.com.", C, "db.corp.example.com."),
    ("corp.example.com.", C, "corp.example.com."),
    ("xcorp.example.com.", U, "xcorp.example.com."),
    ("db.internal.", C, "db.internal."),
    ("DB.Internal", C, "db.internal."),
    # single labels go to the connection's namespace
    ("web.", C, "web.team.svc.cluster.local."),
    ("web", C, "web.team.svc.cluster.local."),
    ("WEB", C, "web.team.svc.cluster.local."),
    # the search domain stands for a short name
    ("web.tether.local.", C, "web.team.svc.cluster.local."),
    ("Web.Tether.Local", C, "web.team.svc.cluster.local."),
    ("web.default.tether.local.", C, "web.default.svc.cluster.local."),
    ("www.google.com.tether.local.", U, "www.google.com.tether.local."),
    ("tether.local.", U, "tether.local."),
    # everything else
    ("example.test.", U, "example.test."),
    ("localhost.localdomain.", U, "localhost.localdomain."),
    (".", U, "."),
    ("", U, "."),
    # reverse lookups: inside the routed subnets or not
    ("20.0.96.10.in-addr.arpa.", C, "20.0.96.10.in-addr.arpa."),
    ("20.0.111.10.IN-ADDR.ARPA", C, "20.0.111.10.in-addr.arpa."),
    ("20.0.112.10.in-addr.arpa.", U, "20.0.112.10.in-addr.arpa."),
    ("1.1.168.192.in-addr.arpa.", U, "1.1.168.192.in-addr.arpa."),
    ("96.10.in-addr.arpa.", U, "96.10.in-addr.arpa."),  # a zone, not an address
    ("300.0.96.10.in-addr.arpa.", U, "300.0.96.10.in-addr.arpa."),
    (ipaddress.ip_address("fd00:10::5").reverse_pointer, C, ipaddress.ip_address("fd00:10::5").reverse_pointer + "."),
    (ipaddress.ip_address("fd00:11::5").reverse_pointer, U, ipaddress.ip_address("fd00:11::5").reverse_pointer + "."),
]


@pytest.mark.parametrize(("name", "target", "asked"), CASES)
def test_decide(name, target, asked):
    assert decide(name, CONFIG) == Decision(target, asked)


def test_nothing_mapped_means_namespaced_names_go_upstream():
    config = RulesConfig()
    assert decide("web.default.", config).target is Target.UPSTREAM
    assert decide("web.", config) == Decision(Target.CLUSTER, "web.default.svc.cluster.local.")
    assert decide("ptr.in-addr.arpa.", config).target is Target.UPSTREAM


def test_include_suffix_of_equal_length_beats_exclude():
    config = RulesConfig(include_suffixes=("com",))
    assert decide("example.com.", config) == Decision(Target.CLUSTER, "example.com.")


def test_include_suffix_shorter_than_exclude_loses():
    config = RulesConfig(include_suffixes=(".com",), exclude_suffixes=(".example.com",))
    assert decide("www.example.com.", config).target is Target.UPSTREAM
    assert decide("www.other.com.", config).target is Target.CLUSTER


def test_no_excludes():
    config = RulesConfig(exclude_suffixes=(), mapped_namespaces=frozenset({"com"}))
    assert decide("example.com.", config) == Decision(Target.CLUSTER, "example.com.svc.cluster.local.")


def test_without_search_domain():
    config = RulesConfig(search_domain="")
    assert decide("web.tether.local.", config).target is Target.UPSTREAM


@pytest.mark.parametrize("bad", [{"namespace": ""}, {"namespace": "a.b"}, {"cluster_domain": "."}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        RulesConfig(**bad)


def test_reverse_address():
    assert reverse_address("4.3.2.1.in-addr.arpa") == ipaddress.ip_address("1.2.3.4")
    assert reverse_address("04.3.2.1.in-addr.arpa") is None
    assert reverse_address("3.2.1.in-addr.arpa") is None
    assert reverse_address("x.3.2.1.in-addr.arpa") is None
    assert reverse_address(ipaddress.ip_address("2001:db8::1").reverse_pointer) == ipaddress.ip_address("2001:db8::1")
    assert reverse_address("0.ip6.arpa.") is None


def test_reverse_zones_sit_on_label_boundaries():
    zones = reverse_zones([ipaddress.ip_network("10.96.0.0/12")])
    assert len(zones) == 16
    assert zones[0] == "96.10.in-addr.arpa." and zones[-1] == "111.10.in-addr.arpa."
    assert reverse_zones([ipaddress.ip_network("10.0.0.0/8")]) == ("10.in-addr.arpa.",)
    assert reverse_zones([ipaddress.ip_network("fd00:10::/64")]) == ("0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",)
    assert reverse_zones([ipaddress.ip_network("fd00::/62")]) == (
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        "2.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        "3.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
    )


def test_routing_domains():
    domains = routing_domains(CONFIG)
    assert domains[:6] == (
        "cluster.local.",
        "default.",
        "kube-system.",
        "corp.example.com.",
        "internal.",
        "tether.local.",
    )
    assert "96.10.in-addr.arpa." in domains
