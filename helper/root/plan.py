"""What a connection should look like, from what the cluster says and what the client asked (pure).

The routes into the TUN with their carve-outs, the proxy-via/auto-resolve rules whose real subnets are
hidden behind virtual IPs, the subnets whose conflicts the user or cluster allowed, and the DNS rules. The
session recomputes these on every cluster-info change and applies only the difference.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxyvia import IPNetwork, ProxyRule, ProxyViaSpec
from tether.helper.root.dns.rules import DEFAULT_EXCLUDE_SUFFIXES, RulesConfig
from tether.helper.root.proxyvia import (
    VipTable,
    auto_rules,
    combine,
    resolve,
    translated_subnets,
    validate_virtual_subnet,
    virtual_subnets_to_route,
)
from tether.helper.root.routing.table import RoutePlan, compute_plan
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnets_from_pb

DEFAULT_CLUSTER_DOMAIN = "cluster.local."


@dataclass
class Remapping:
    """What is hidden behind virtual IPs: fixed at connect (the --proxy-via specs, the conflicting subnets
    --auto-resolve took over) but resolved anew against each cluster info."""

    vips: VipTable | None = None
    specs: Sequence[ProxyViaSpec] = ()
    auto_subnets: Sequence[IPNetwork] = ()
    namespace: str = "default"


@dataclass(frozen=True)
class Plan:
    routes: RoutePlan
    rules: list[ProxyRule] = field(default_factory=list)


def service_subnets(info: mpb.ClusterInfo) -> list[IPNetwork]:
    """The service subnets; an older manager sends one in `service_subnet`."""
    subnets = subnets_from_pb(info.service_subnets)
    if not subnets and info.HasField("service_subnet"):
        subnets = subnets_from_pb([info.service_subnet])
    return subnets


def plan_routes(
    info: mpb.ClusterInfo, request: pb.ConnectRequest, remap: Remapping, never_route: Sequence[str]
) -> Plan:
    """The routes for `info`, and the proxy rules whose translated subnets are carved out of them.

    `never_route` holds single addresses that must stay off the TUN (the API server's, the upstream DNS
    server's). VirtualSubnetError when the virtual subnet overlaps what the cluster routes."""
    service = service_subnets(info)
    pods = subnets_from_pb(info.pod_subnets)
    also = [
        *subnets_from_pb(info.routing.also_proxy_subnets),
        *(ipaddress.ip_network(a) for a in request.also_proxy),
    ]
    rules = combine(
        resolve(list(remap.specs), service, pods, also, namespace=remap.namespace) if remap.specs else [],
        auto_rules(remap.auto_subnets) if remap.auto_subnets else [],
    )
    translated = translated_subnets(rules)
    virtual: list[IPNetwork] = []
    if rules and remap.vips is not None:
        for subnet in remap.vips.subnets:
            validate_virtual_subnet(subnet, service=service, pods=pods, also=also, proxied=translated)
        virtual = list(virtual_subnets_to_route(remap.vips, rules))
    routes = compute_plan(
        service_subnets=service,
        pod_subnets=pods,
        also_proxy=[*also, *virtual],
        never_proxy=[*subnets_from_pb(info.routing.never_proxy_subnets), *request.never_proxy, *translated],
        never_route=never_route,
    )
    return Plan(routes, rules)


def allowed_conflicts(info: mpb.ClusterInfo, request: pb.ConnectRequest) -> list[IPNetwork | str]:
    """Where the cluster's routes may override someone else's: the cluster's settings and the client's."""
    return [*subnets_from_pb(info.routing.allow_conflicting_subnets), *request.allow_conflicting_subnets]


def dns_suffixes(info: mpb.ClusterInfo, request: pb.ConnectRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The include and exclude suffixes: the manager's (or the default exclusions) joined with the client's.

    Joining, not replacing, is enough for the client to win: an include-suffix at least as long as a
    matching exclude-suffix sends the name to the cluster (see dns.rules)."""
    include = [*info.dns.include_suffixes, *request.dns_include_suffixes]
    exclude = [*(info.dns.exclude_suffixes or DEFAULT_EXCLUDE_SUFFIXES), *request.dns_exclude_suffixes]
    return tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude))


def plan_dns(
    info: mpb.ClusterInfo,
    request: pb.ConnectRequest,
    *,
    namespace: str,
    mapped_namespaces: frozenset[str],
    routes: RoutePlan | None,
) -> RulesConfig:
    """Which names go to the cluster: its domain, `<svc>.<namespace>` for the mapped namespaces, single
    labels in `namespace`, the include-suffixes, and reverse names of the routed subnets."""
    include, exclude = dns_suffixes(info, request)
    return RulesConfig(
        cluster_domain=info.dns.cluster_domain or DEFAULT_CLUSTER_DOMAIN,
        namespace=namespace,
        mapped_namespaces=mapped_namespaces,
        include_suffixes=include,
        exclude_suffixes=exclude,
        routed_subnets=routes.routes if routes else (),
    )
