"""Wiring the lab's namespaces together from the plan (see topology for the address plan).

Each namespace is reported to `record` *before* it is created, so a failure or crash at any
point leaves a journal that names everything that may exist.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

from tether.lab import firewall, kubeproxy
from tether.lab.netns import NetnsOps
from tether.lab.topology import (
    API_IP,
    BRIDGE,
    BRIDGE_MAC,
    CLUSTER_CIDR,
    CORP_NS,
    INET_IP,
    INET_LINK,
    INET_NS,
    INET_WEB_IP,
    NODE_NETWORK,
    ROUTER_INET_IF,
    ROUTER_INET_IP,
    ROUTER_NS,
    ROUTER_WS_IF,
    ROUTER_WS_NODE_IF,
    SERVICE_CIDR,
    UPSTREAM_DNS_IP,
    VPN_IF,
    WS_IP,
    WS_LINK,
    WS_NODE_IF,
    WS_NODE_IP,
    WS_NS,
    LabPlan,
    VpnPlan,
)

ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # pods sit on one bridge but reach each other through the router: no redirects to shortcut that
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    # all pod traffic is routed (pods have /32 addresses), so bridged frames need no netfilter pass;
    # switching it off keeps DNAT and conntrack to the single routed pass
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
    "net.bridge.bridge-nf-call-arptables": "0",
}

Record = Callable[[str], None]


def build_cluster(ops: NetnsOps, plan: LabPlan, record: Record) -> None:
    """Router (bridge + gateways + NAT + filter), workstation, internet and pod namespaces."""
    for ns in (ROUTER_NS, WS_NS, INET_NS):
        record(ns)
        ops.add(ns)
    ops.sysctl(ROUTER_NS, ROUTER_SYSCTLS)
    ops.bridge(ROUTER_NS, BRIDGE, BRIDGE_MAC)
    ops.sysctl(ROUTER_NS, {f"net.ipv4.conf.{BRIDGE}.send_redirects": "0"})
    for node in plan.nodes:
        ops.addr_add(ROUTER_NS, BRIDGE, f"{node.gateway}/{node.pod_cidr.prefixlen}")
        ops.addr_add(ROUTER_NS, "lo", f"{node.internal_ip}/32")
    # ClusterIPs without a DNAT rule end in the router's input hook, where they are rejected
    ops.route_add(ROUTER_NS, "local", str(SERVICE_CIDR), "dev", "lo")

    # workstation: reaches the API server (connected) and the internet (one route), no cluster range
    ops.veth(ROUTER_NS, ROUTER_WS_IF, WS_NS, "eth0")
    ops.addr_add(ROUTER_NS, ROUTER_WS_IF, f"{API_IP}/{WS_LINK.prefixlen}")
    ops.addr_add(WS_NS, "eth0", f"{WS_IP}/{WS_LINK.prefixlen}")
    ops.route_add(WS_NS, str(INET_LINK), "via", str(API_IP), "dev", "eth0")

    # internet: the upstream DNS server and a web host, behind the router's NAT
    ops.veth(ROUTER_NS, ROUTER_INET_IF, INET_NS, "eth0")
    ops.addr_add(ROUTER_NS, ROUTER_INET_IF, f"{ROUTER_INET_IP}/{INET_LINK.prefixlen}")
    for address in (INET_IP, UPSTREAM_DNS_IP, INET_WEB_IP):
        ops.addr_add(INET_NS, "eth0", f"{address}/{INET_LINK.prefixlen}")

    nodes = {n.name: n for n in plan.nodes}
    for pod in plan.pods:
        if pod.kind == "workload":
            continue  # the controller runs these (see tether.lab.controller)
        record(pod.netns)
        add_pod(ops, pod.netns, pod.veth, pod.ip, nodes[pod.node].gateway)

    ops.nft(ROUTER_NS, firewall.ruleset())
    ops.nft(ROUTER_NS, kubeproxy.ruleset(plan))


def add_pod(ops: NetnsOps, netns: str, veth: str, ip: IPv4Address, gateway: IPv4Address) -> None:
    """A pod's namespace on the router's bridge: its /32 address, and its node's gateway as default route."""
    ops.add(netns)
    ops.veth(ROUTER_NS, veth, netns, "eth0")
    ops.set_master(ROUTER_NS, veth, BRIDGE)
    ops.addr_add(netns, "eth0", f"{ip}/32")
    ops.route_add(netns, "default", "via", str(gateway), "dev", "eth0", "onlink")


def build_local(ops: NetnsOps, plan: LabPlan) -> None:
    """--local: the workstation joins the cluster bridge as a node would, so pods (through their node's
    gateway) and node addresses are reachable without Tether, and pods reach the workstation back."""
    ops.veth(ROUTER_NS, ROUTER_WS_NODE_IF, WS_NS, WS_NODE_IF)
    ops.set_master(ROUTER_NS, ROUTER_WS_NODE_IF, BRIDGE)
    ops.addr_add(WS_NS, WS_NODE_IF, f"{WS_NODE_IP}/{NODE_NETWORK.prefixlen}")
    ops.route_add(ROUTER_NS, f"{WS_NODE_IP}/32", "dev", BRIDGE)
    gateway = plan.nodes[0].gateway
    ops.route_add(WS_NS, str(CLUSTER_CIDR), "via", str(gateway), "dev", WS_NODE_IF, "onlink")


def build_vpn(ops: NetnsOps, vpn: VpnPlan, record: Record) -> None:
    """The corp namespace behind vpn0, with a route per VPN CIDR in the workstation."""
    record(CORP_NS)
    ops.add(CORP_NS)
    ops.veth(WS_NS, VPN_IF, CORP_NS, "eth0")
    ops.addr_add(WS_NS, VPN_IF, f"{vpn.ws_ip}/{vpn.link.prefixlen}")
    ops.addr_add(CORP_NS, "eth0", f"{vpn.gateway}/{vpn.link.prefixlen}")
    for host in vpn.hosts:
        ops.addr_add(CORP_NS, "lo", f"{host.address}/32")
    for cidr in vpn.cidrs:
        ops.route_add(WS_NS, str(cidr), "via", str(vpn.gateway), "dev", VPN_IF)
