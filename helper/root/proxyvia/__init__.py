"""--proxy-via and automatic remap, client side: cluster subnets hidden behind virtual IPs (VIPs).

The cluster's DNS answers inside a proxied subnet are rewritten to VIPs taken from a virtual subnet;
a flow to a VIP is mapped back to the real address and dialed by the workload's agent (or, for the
automatic remap of conflicting subnets, by the manager). Three pure modules and three hooks:

* ``spec``    -- parse ``--proxy-via CIDR=WORKLOAD`` values, check the workloads exist (through a
  callable the caller supplies), and expand the symbols into ``ProxyRule``\\ s;
* ``vips``    -- the virtual subnets (a plain table by platform) and the ``VipTable``;
* ``rewrite`` -- the DNS answer rewriting (``Rewriter``, the DNS server's ``rewrite`` hook) and the
  tunnel opener's ``map_destination`` hook (``destination_mapper``).

Routing consequence
-------------------
With proxy-via (or automatic remap), the translated cluster subnets are *not* routed into the TUN: the
VPN (or whatever else claims them) keeps them. Only the virtual subnets are routed. The session passes
``virtual_subnets_to_route(table, rules)`` as also-proxy subnets to the route plan and leaves
``translated_subnets(rules)`` out of it. Direct use of a real cluster IP in a translated subnet is
therefore not tunnelled at all (the reference behaves the same way: it cannot detect it).

Wiring (what the session does)::

    specs = parse_proxy_vias(request.proxy_via)                        # at connect, before anything
    specs = await asyncio.to_thread(check_workloads, specs, namespace, find)
    table = VipTable(config.get("virtual-ip-subnet"))                  # once per session, never rebuilt
    rules = combine(resolve(specs, service, pods, also, namespace=namespace),
                    auto_rules(conflicts.subnets) if auto_resolve else [])
    validate_virtual_subnet(table.subnet, service=..., pods=..., also=..., proxied=translated_subnets(rules))
    rewriter = Rewriter(table, rules)
    opener.map_destination = destination_mapper(table)             # tunnel.streams.TunnelOpener
    engine = VifEngine(device, stack, opener.open, opener)
    dns = DNSServer(lookup, dns_rules, upstream, rewrite=rewriter)
    # on every cluster-info change: recompute rules; if rewriter.set_rules(rules): dns.flush()

Everything runs on the helper's event loop: no locks.
"""

from __future__ import annotations

from tether.helper.api.proxyvia import (
    SYMBOLS,
    ProxyRule,
    ProxyViaError,
    ProxyViaSpec,
    WorkloadFinder,
    WorkloadRef,
    auto_rules,
    check_workloads,
    combine,
    parse_proxy_via,
    parse_proxy_vias,
    resolve,
    translated_subnets,
)
from tether.helper.root.proxyvia.rewrite import (
    AnswerRewrite,
    DestinationMapper,
    Rewriter,
    UnknownVirtualIP,
    destination_mapper,
    loopback_workload,
    match_rule,
    rewrite_records,
    virtual_subnets_to_route,
)
from tether.helper.root.proxyvia.vips import (
    DEFAULT_VIRTUAL_SUBNET6,
    VIRTUAL_SUBNETS,
    VipExhausted,
    VipTable,
    VirtualSubnetError,
    default_virtual_subnet,
    validate_virtual_subnet,
)

__all__ = [
    "DEFAULT_VIRTUAL_SUBNET6",
    "SYMBOLS",
    "VIRTUAL_SUBNETS",
    "AnswerRewrite",
    "DestinationMapper",
    "ProxyRule",
    "ProxyViaError",
    "ProxyViaSpec",
    "Rewriter",
    "UnknownVirtualIP",
    "VipExhausted",
    "VipTable",
    "VirtualSubnetError",
    "WorkloadFinder",
    "WorkloadRef",
    "auto_rules",
    "check_workloads",
    "combine",
    "default_virtual_subnet",
    "destination_mapper",
    "loopback_workload",
    "match_rule",
    "parse_proxy_via",
    "parse_proxy_vias",
    "resolve",
    "rewrite_records",
    "translated_subnets",
    "validate_virtual_subnet",
    "virtual_subnets_to_route",
]
