"""Recursion checks for a cluster that runs on the workstation's own machine: the pure decisions.

A local cluster (minikube, kind, k3s in a VM with host networking, the lab's ``--local`` variant) can
reach the workstation, so two loops are possible (see the reference's "Recursion detection"):

* DNS recursion: the cluster's DNS forwards names it does not know to the host's resolver, which is
  Tether's DNS server; a cluster lookup Tether makes for such a name comes straight back to Tether. At
  connect the helper asks the cluster for a probe name nobody but Tether knows (``probe_name``); if its
  own DNS server receives that name, the cluster loops (``dns_recursion_mode``). From then on a query
  that arrives while the same name is being asked of the cluster is the loop coming back and is answered
  from the upstream resolver instead (``is_looped_query``).
* Connect recursion: the cluster's pod subnets are reachable from the workstation without Tether (a
  route on a non-TUN device that is not the default route, and a TCP connect to the manager's pod
  succeeding over it). Routing those subnets into the TUN would send the cluster's own traffic round
  through the tunnel, so they are left to the OS (``local_cluster``), and flows arriving on the TUN from
  pod addresses or from the networks of the cluster's device are refused (``refused_sources``).

The probes themselves (the DNS lookup through the manager, the TCP connect, reading routes) are the
session's; everything here is a function of their results.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.helper.root.routing.conflicts import OSRoute, ignore_reason
from tether.helper.root.routing.table import IPAddress, IPNetwork

#: Probe names end in this suffix: no real zone holds it, so only a resolver that loops hands it to Tether.
PROBE_SUFFIX = "tether-recursion-check."
PROBE_PREFIX = "tether-recursion-"

DNS_NOT_CHECKED = "not checked"
DNS_NONE = "none"
DNS_DETECTED = "detected: the cluster's DNS forwards to this machine; looped queries are answered upstream"

CONNECT_NONE = "none"


def probe_name(token: str | None = None) -> str:
    """A fresh probe name, unique per connect so an answer cached anywhere on the way cannot fake a result."""
    token = token if token is not None else secrets.token_hex(6)
    if not token or not all(c in "0123456789abcdefghijklmnopqrstuvwxyz-" for c in token):
        raise ValueError(f"probe token {token!r}: only lowercase letters, digits and '-' are allowed")
    return f"{PROBE_PREFIX}{token}.{PROBE_SUFFIX}"


def is_probe_name(name: str) -> bool:
    """Whether a queried name is one of Tether's probe names (any case, with or without the final dot)."""
    lowered = name.lower()
    lowered = lowered if lowered.endswith(".") else lowered + "."
    return lowered.startswith(PROBE_PREFIX) and lowered.endswith("." + PROBE_SUFFIX)


def dns_recursion_mode(*, answered: bool, came_back: bool) -> str:
    """The DNS recursion mode from the probe: did the cluster answer it, and did it reach our own server?

    A probe that came back wins even when the cluster's answer was lost on the way: the loop is proven."""
    if came_back:
        return DNS_DETECTED
    if answered:
        return DNS_NONE
    return DNS_NOT_CHECKED


def is_looped_query(mode: str, *, in_flight: bool) -> bool:
    """A query for a name that is being asked of the cluster right now, while the cluster is known to
    forward to this machine: it is our own lookup coming back (or, rarely, an identical query that raced
    it, which the upstream answers as well as the loop would)."""
    return mode == DNS_DETECTED and in_flight


@dataclass(frozen=True)
class LocalCluster:
    """What the connect-recursion check found: pod subnets the OS reaches directly, and over which devices."""

    direct: tuple[IPNetwork, ...] = ()
    devices: tuple[str, ...] = ()
    #: sources (besides the pod subnets) whose flows on the TUN are the cluster looping: the device's networks
    cluster_networks: tuple[IPNetwork, ...] = ()

    @property
    def mode(self) -> str:
        if not self.direct:
            return CONNECT_NONE
        subnets = ", ".join(str(s) for s in self.direct)
        return f"local cluster: {subnets} reached directly via {', '.join(self.devices)}, not through the tunnel"


def direct_route_candidates(
    pod_subnets: Iterable[IPNetwork], routes: Iterable[OSRoute], *, own_devices: Iterable[str] = ()
) -> dict[IPNetwork, OSRoute]:
    """For each pod subnet, the OS route (if any) that overlaps it on a device other than ours and the
    default route's: the only way the subnet can already be reachable without Tether."""
    own = tuple(own_devices)
    usable = [
        r for r in routes if ignore_reason(r, own_devices=own) is None and r.device is not None and r.device != "lo"
    ]
    found: dict[IPNetwork, OSRoute] = {}
    for subnet in pod_subnets:
        overlapping = [r for r in usable if r.destination.version == subnet.version and r.destination.overlaps(subnet)]  # type: ignore[arg-type]
        if overlapping:
            # The most specific one is the one the kernel uses for the subnet's addresses.
            found[subnet] = max(overlapping, key=lambda r: (r.destination.prefixlen, -r.metric))
    return found


def probe_target(manager_ip: IPAddress | None, candidates: dict[IPNetwork, OSRoute]) -> IPAddress | None:
    """The address to probe: the manager's pod, when a candidate route carries it (else nothing to probe)."""
    if manager_ip is None:
        return None
    for subnet, route in candidates.items():
        if manager_ip in subnet and manager_ip in route.destination:
            return manager_ip
    return None


def local_cluster(
    candidates: dict[IPNetwork, OSRoute], routes: Iterable[OSRoute], *, reached: IPAddress | None
) -> LocalCluster:
    """The local-cluster decision: ``reached`` is the pod address a direct TCP connect succeeded to (None:
    no probe, or it failed). Only the pod subnets behind the same device as that address count as direct;
    a VPN that merely overlaps the cluster (its route fails the probe) keeps the conflict check's say."""
    if reached is None:
        return LocalCluster()
    via = {route.device for subnet, route in candidates.items() if reached in subnet}
    direct = tuple(sorted((s for s, r in candidates.items() if r.device in via), key=_key))
    devices = tuple(sorted(d for d in via if d))
    networks = tuple(
        sorted(
            {r.destination for r in routes if r.device in via and ignore_reason(r) is None},
            key=_key,
        )
    )
    return LocalCluster(direct, devices, networks)


def refused_sources(
    pod_subnets: Sequence[IPNetwork], local: LocalCluster, own_addresses: Iterable[IPAddress] = ()
) -> list[IPNetwork]:
    """Sources whose new flows on the TUN are refused: the pod subnets always (the cluster looping back
    through the host), and with a local cluster the networks of its device (nodes, the cluster bridge),
    minus the workstation's own addresses there, which its own programs may use as their source."""
    wanted = sorted({*pod_subnets, *local.cluster_networks}, key=_key)
    wanted = [n for n in wanted if not any(n != o and n.subnet_of(o) for o in wanted if o.version == n.version)]  # type: ignore[arg-type]
    out: list[IPNetwork] = []
    for network in wanted:
        pieces = [network]
        for own in own_addresses:
            if own.version != network.version or own not in network:
                continue
            host = ipaddress.ip_network(own)
            pieces = [p for piece in pieces for p in _without(piece, host)]
        out.extend(pieces)
    return sorted(out, key=_key)


def own_addresses(routes: Iterable[OSRoute]) -> list[IPAddress]:
    """The workstation's own addresses: the host destinations of the kernel's ``local`` routes."""
    return sorted(
        {r.destination.network_address for r in routes if r.type == "local" and r.destination.num_addresses == 1},
        key=lambda a: (a.version, a),
    )


def _without(network: IPNetwork, host: IPNetwork) -> list[IPNetwork]:
    if not host.subnet_of(network):  # type: ignore[arg-type]
        return [network]
    if host == network:
        return []
    return list(network.address_exclude(host))  # type: ignore[arg-type]


def _key(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)
