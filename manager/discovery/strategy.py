"""The pod-subnet strategies (pure): which subnets each ``podCIDRStrategy`` gives, and what it must read.

The subnet arithmetic they rest on (covering pod IPs, dropping covered
subnets) is in :mod:`tether.manager.subnets`.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from tether.manager.config import PodCIDRStrategy
from tether.manager.discovery.decode import NodeInfo, PodInfo
from tether.manager.subnets import IPAddress, IPNetwork, cover_ips, drop_covered

__all__ = [
    "Kind",
    "PodSubnetDecision",
    "compute_pod_subnets",
    "decide_pod_subnets",
    "needed_kinds",
    "parse_pod_ip",
]

log = logging.getLogger("tether.manager.discovery")


class Kind(enum.StrEnum):
    """The watched resources."""

    NODES = "nodes"
    PODS = "pods"


@dataclass(frozen=True)
class PodSubnetDecision:
    """The pod subnets and how they were found; ``note`` says why, for the log."""

    subnets: tuple[IPNetwork, ...]
    source: PodCIDRStrategy
    note: str


def _node_cidrs_trust(node_cidrs: list[IPNetwork], manager_ip: IPAddress | None) -> tuple[bool, str]:
    # Some network plugins (EKS's VPC CNI, Calico with its own IPAM) ignore the
    # node podCIDRs; the manager's own pod IP is the evidence they are real.
    if not node_cidrs:
        return False, "no node has spec.podCIDR(s)"
    if manager_ip is None:
        return False, "the manager's own pod IP is unknown, so node podCIDRs cannot be verified"
    if not any(manager_ip in net for net in node_cidrs):
        return False, f"no node podCIDR contains the manager's pod IP {manager_ip}; the network plugin ignores them"
    return True, f"node podCIDRs contain the manager's pod IP {manager_ip}"


def parse_pod_ip(ip: str | IPAddress | None) -> IPAddress | None:
    """The manager's pod IP as given (text or address); None when unset or not an address."""
    if ip is None or ip == "":
        return None
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    try:
        return ipaddress.ip_address(str(ip).strip())
    except ValueError:
        log.warning("manager pod IP is not an IP address; treating it as unknown", extra={"pod_ip": ip})
        return None


def decide_pod_subnets(
    strategy: PodCIDRStrategy,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    manager_pod_ip: str | IPAddress | None,
    configured: Iterable[IPNetwork],
) -> PodSubnetDecision:
    """Pick the pod subnets by ``strategy`` and say why (see :func:`compute_pod_subnets`)."""
    strategy = PodCIDRStrategy(strategy)
    if strategy is PodCIDRStrategy.ENVIRONMENT:
        return PodSubnetDecision(tuple(drop_covered(configured)), strategy, "configured podCIDRs")

    why = ""
    if strategy in (PodCIDRStrategy.NODE_POD_CIDRS, PodCIDRStrategy.AUTO):
        node_cidrs = [net for node in nodes for net in node.pod_cidrs]
        trusted, why = _node_cidrs_trust(node_cidrs, parse_pod_ip(manager_pod_ip))
        if trusted:
            return PodSubnetDecision(tuple(drop_covered(node_cidrs)), PodCIDRStrategy.NODE_POD_CIDRS, why)
        if strategy is PodCIDRStrategy.NODE_POD_CIDRS:
            return PodSubnetDecision((), strategy, f"{why}; no pod subnets (try podCIDRStrategy coverPodIPs)")

    ips = [ip for pod in pods if pod.counts for ip in pod.ips]
    note = "covering the IPs of running pods"
    if why:
        note = f"{why}; {note}"
    return PodSubnetDecision(tuple(drop_covered(cover_ips(ips))), PodCIDRStrategy.COVER_POD_IPS, note)


def compute_pod_subnets(
    strategy: PodCIDRStrategy,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    manager_pod_ip: str | IPAddress | None,
    configured: Iterable[IPNetwork],
) -> list[IPNetwork]:
    """The pod subnets by ``strategy``, with covered subnets dropped.

    * ``nodePodCIDRs``: the nodes' podCIDRs, only if one contains the manager's
      own pod IP; otherwise none (the reason is in :func:`decide_pod_subnets`).
    * ``coverPodIPs``: covering networks of the IPs of pods that count
      (not hostNetwork, not finished, with an IP) — see :func:`~tether.manager.subnets.cover_ips`.
    * ``environment``: ``configured``.
    * ``auto``: ``nodePodCIDRs`` when trusted, else ``coverPodIPs``.
    """
    return list(decide_pod_subnets(strategy, nodes, pods, manager_pod_ip, configured).subnets)


def needed_kinds(strategy: PodCIDRStrategy) -> frozenset[Kind]:
    """The resources a strategy reads; the others are neither listed nor watched (less load, less RBAC)."""
    return {
        PodCIDRStrategy.AUTO: frozenset({Kind.NODES, Kind.PODS}),
        PodCIDRStrategy.NODE_POD_CIDRS: frozenset({Kind.NODES}),
        PodCIDRStrategy.COVER_POD_IPS: frozenset({Kind.PODS}),
        PodCIDRStrategy.ENVIRONMENT: frozenset(),
    }[PodCIDRStrategy(strategy)]
