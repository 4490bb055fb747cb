"""What a connection should look like, from what the cluster says and what the client asked (pure).

The routes into the TUN with their carve-outs, the proxy-via/auto-resolve rules whose real subnets are
hidden behind virtual IPs, the subnets whose conflicts the user or admin allowed, and the DNS rules. The
session recomputes these on every cluster-info change and applies only the difference. The admin's
policy (``policy``) is applied to every plan: too-wide subnets and public DNS suffixes raise PolicyError,
the host's own ranges are carved out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxyvia import IPNetwork, ProxyRule, ProxyViaSpec
from tether.helper.root.dns.rules import DEFAULT_EXCLUDE_SUFFIXES, RulesConfig
from tether.helper.root.policy import Forbidden, Policy, carve_notes, check_dns_claims, check_routed
from tether.helper.root.policy import allowed_conflicts as policy_allowed_conflicts
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
    # What the policy carved out of the routed subnets, one sentence each (shown in the state).
    notes: tuple[str, ...] = ()


def service_subnets(info: mpb.ClusterInfo) -> list[IPNetwork]:
    """The service subnets; an older manager sends one in `service_subnet`."""
    subnets = subnets_from_pb(info.service_subnets)
    if not subnets and info.HasField("service_subnet"):
        subnets = subnets_from_pb([info.service_subnet])
    return subnets


def plan_routes(
    info: mpb.ClusterInfo,
    request: pb.ConnectRequest,
    remap: Remapping,
    never_route: Sequence[str],
    *,
    policy: Policy | None = None,
    forbidden: Sequence[Forbidden] = (),
    direct: Sequence[IPNetwork] = (),
) -> Plan:
    """The routes for `info`, and the proxy rules whose translated subnets are carved out of them.

    `never_route` holds single addresses that must stay off the TUN (the API server's, the upstream DNS
    server's); `forbidden` the ranges the policy carves out (the host's, the manager's, the admin's);
    `direct` the pod subnets of a cluster on this machine, which the OS reaches without the TUN.
    VirtualSubnetError when the virtual subnet overlaps what the cluster routes; PolicyError when a
    subnet is wider than the policy allows."""
    policy = policy or Policy()
    service = service_subnets(info)
    pods = subnets_from_pb(info.pod_subnets)
    cluster_also = subnets_from_pb(info.routing.also_proxy_subnets)
    also = [*cluster_also, *(ipaddress.ip_network(a) for a in request.also_proxy)]
    check_routed(
        [
            *((s, "service subnet from the traffic-manager") for s in service),
            *((s, "pod subnet from the traffic-manager") for s in pods),
            *((s, "also-proxy subnet from the cluster's settings") for s in cluster_also),
            *((s, "--also-proxy subnet") for s in also[len(cluster_also) :]),
        ],
        policy,
    )
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
        check_routed(((s, "virtual subnet") for s in virtual), policy)
    routes = compute_plan(
        service_subnets=service,
        pod_subnets=pods,
        also_proxy=[*also, *virtual],
        never_proxy=[
            *subnets_from_pb(info.routing.never_proxy_subnets),
            *request.never_proxy,
            *translated,
            *(f.network for f in forbidden),
            *direct,
        ],
        never_route=never_route,
    )
    return Plan(routes, rules, carve_notes([*service, *pods, *also, *virtual], forbidden))


def allowed_conflicts(request: pb.ConnectRequest, policy: Policy | None = None) -> list[IPNetwork | str]:
    """Where the cluster's routes may override someone else's: the client's list and the admin's.

    Never the cluster's own list: whoever edits the cluster's settings could otherwise take over any
    route on every workstation that connects. It is offered as a suggestion (`suggested_conflicts`)."""
    return policy_allowed_conflicts(request.allow_conflicting_subnets, policy or Policy())


def suggested_conflicts(info: mpb.ClusterInfo) -> list[IPNetwork]:
    """The conflicts the cluster's settings suggest allowing; the user confirms them by passing them."""
    return subnets_from_pb(info.routing.allow_conflicting_subnets)


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
    labels in `namespace`, the include-suffixes, and reverse names of the routed subnets.

    PolicyError when the cluster domain or an include-suffix is a public suffix or TLD."""
    include, exclude = dns_suffixes(info, request)
    cluster_domain = info.dns.cluster_domain or DEFAULT_CLUSTER_DOMAIN
    check_dns_claims(cluster_domain, info.dns.include_suffixes, "the traffic-manager")
    check_dns_claims(cluster_domain, request.dns_include_suffixes, "the connect request")
    return RulesConfig(
        cluster_domain=cluster_domain,
        namespace=namespace,
        mapped_namespaces=mapped_namespaces,
        include_suffixes=include,
        exclude_suffixes=exclude,
        routed_subnets=routes.routes if routes else (),
    )
