"""Planning a connection (pure): routes and carve-outs, proxy rules, allowed conflicts, DNS rules and suffixes."""

import ipaddress

import pytest

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxyvia import parse_proxy_vias
from tether.helper.root.dns.rules import DEFAULT_EXCLUDE_SUFFIXES, RulesConfig, Target, decide
from tether.helper.root.plan import (
    Remapping,
    allowed_conflicts,
    dns_suffixes,
    plan_dns,
    plan_routes,
    service_subnets,
    suggested_conflicts,
)
from tether.helper.root.policy import Policy
from tether.helper.root.proxyvia import VipTable
from tether.helper.root.proxyvia.vips import VirtualSubnetError
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnet_to_pb


def info(include=(), exclude=()):
    return mpb.ClusterInfo(dns=mpb.DNSConfig(include_suffixes=list(include), exclude_suffixes=list(exclude)))


def test_defaults_without_either_side():
    assert dns_suffixes(info(), pb.ConnectRequest()) == ((), DEFAULT_EXCLUDE_SUFFIXES)


def test_client_suffixes_join_the_managers_without_repeats():
    request = pb.ConnectRequest(dns_include_suffixes=[".corp", ".lab"], dns_exclude_suffixes=[".internal"])
    include, exclude = dns_suffixes(info(include=[".lab"], exclude=[".com"]), request)
    assert include == (".lab", ".corp")
    assert exclude == (".com", ".internal")


def test_a_client_include_beats_a_default_exclusion():
    include, exclude = dns_suffixes(info(), pb.ConnectRequest(dns_include_suffixes=[".io"]))
    config = RulesConfig(include_suffixes=include, exclude_suffixes=exclude)
    assert decide("registry.io.", config).target is Target.CLUSTER
    assert decide("example.com.", config).target is Target.UPSTREAM


def net(text):
    return ipaddress.ip_network(text)


def cluster(service=("10.96.0.0/16",), pods=("10.244.1.0/24", "10.244.2.0/24"), **routing):
    return mpb.ClusterInfo(
        service_subnets=[subnet_to_pb(net(s)) for s in service],
        pod_subnets=[subnet_to_pb(net(p)) for p in pods],
        routing=mpb.RoutingConfig(**{k: [subnet_to_pb(net(v)) for v in vs] for k, vs in routing.items()}),
    )


def test_routes_cover_services_and_pods():
    planned = plan_routes(cluster(), pb.ConnectRequest(), Remapping(), never_route=())
    assert set(planned.routes.routes) == {net("10.96.0.0/16"), net("10.244.1.0/24"), net("10.244.2.0/24")}
    assert planned.rules == []


def test_an_older_manager_sends_one_service_subnet():
    info = mpb.ClusterInfo(service_subnet=subnet_to_pb(net("10.96.0.0/12")))
    assert service_subnets(info) == [net("10.96.0.0/12")]
    assert service_subnets(mpb.ClusterInfo()) == []


def test_the_api_server_address_is_carved_out_of_the_routes():
    planned = plan_routes(cluster(), pb.ConnectRequest(), Remapping(), never_route=("10.96.0.1",))
    routes = planned.routes.routes
    assert not any(ipaddress.ip_address("10.96.0.1") in r for r in routes)
    assert any(ipaddress.ip_address("10.96.0.2") in r for r in routes)


def test_also_and_never_proxy_come_from_both_the_cluster_and_the_client():
    info = cluster(also_proxy_subnets=["192.168.50.0/24"], never_proxy_subnets=["10.244.2.0/24"])
    request = pb.ConnectRequest(also_proxy=["172.20.0.0/16"], never_proxy=["10.244.1.0/25"])
    routes = set(plan_routes(info, request, Remapping(), never_route=()).routes.routes)
    assert {net("192.168.50.0/24"), net("172.20.0.0/16")} <= routes
    assert not any(r.overlaps(net("10.244.2.0/24")) for r in routes)
    assert not any(r.overlaps(net("10.244.1.0/25")) for r in routes)
    assert net("10.244.1.128/25") in routes


def test_auto_resolved_subnets_are_hidden_behind_the_virtual_subnet():
    remap = Remapping(VipTable("246.246.0.0/16"), auto_subnets=(net("10.96.0.0/16"),))
    planned = plan_routes(cluster(), pb.ConnectRequest(), remap, never_route=())
    assert [rule.network for rule in planned.rules] == [net("10.96.0.0/16")]
    assert net("246.246.0.0/16") in planned.routes.routes
    assert not any(r.overlaps(net("10.96.0.0/16")) for r in planned.routes.routes)


def test_proxy_via_rules_resolve_against_the_cluster_subnets():
    specs = parse_proxy_vias(["service=web"])
    remap = Remapping(VipTable("246.246.0.0/16"), specs, namespace="shop")
    planned = plan_routes(cluster(), pb.ConnectRequest(), remap, never_route=())
    assert [(r.network, r.workload.namespace, r.workload.name) for r in planned.rules] == [
        (net("10.96.0.0/16"), "shop", "web")
    ]


def test_a_virtual_subnet_inside_the_cluster_is_refused():
    remap = Remapping(VipTable("10.244.0.0/16"), auto_subnets=(net("10.96.0.0/16"),))
    with pytest.raises(VirtualSubnetError):
        plan_routes(cluster(), pb.ConnectRequest(), remap, never_route=())


def test_allowed_conflicts_come_from_the_client_and_the_admin_and_the_cluster_only_suggests():
    info = cluster(allow_conflicting_subnets=["10.96.0.0/16"])
    request = pb.ConnectRequest(allow_conflicting_subnets=["10.244.0.0/16"])
    admin = Policy(allow_conflicting_subnets=(net("10.250.0.0/24"),))
    assert allowed_conflicts(request, admin) == ["10.244.0.0/16", net("10.250.0.0/24")]
    assert suggested_conflicts(info) == [net("10.96.0.0/16")]


def test_dns_rules_carry_the_namespace_domain_and_routed_subnets():
    info = cluster()
    info.dns.cluster_domain = "corp.local."
    routes = plan_routes(info, pb.ConnectRequest(), Remapping(), never_route=()).routes
    rules = plan_dns(info, pb.ConnectRequest(), namespace="shop", mapped_namespaces=frozenset({"shop"}), routes=routes)
    assert rules.cluster_domain == "corp.local."
    assert rules.namespace == "shop"
    assert set(rules.routed_subnets) == set(routes.routes)
    assert decide("web.", rules).target is Target.CLUSTER
    assert decide("example.com.", rules).target is Target.UPSTREAM
    default = plan_dns(
        mpb.ClusterInfo(), pb.ConnectRequest(), namespace="a", mapped_namespaces=frozenset(), routes=None
    )
    assert default.cluster_domain == "cluster.local." and default.routed_subnets == ()
