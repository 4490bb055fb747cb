"""ClusterIP translation in the router namespace, the way kube-proxy's nftables mode does it.

`ruleset(plan)` is pure and returns the text for `nft -f`; it replaces the whole table atomically.

* every service port gets a chain that picks an endpoint round-robin (`numgen inc mod N`) and
  DNATs to pod IP:targetPort, for TCP and UDP; the same chains serve packets from pods
  (prerouting) and from processes in the router namespace, e.g. the API server (output);
* a pod reaching itself through its own service (hairpin) is masqueraded, or the reply would come
  from its own address and be dropped;
* anything else addressed to the service CIDR is rejected (TCP reset, ICMP port unreachable) so a
  closed ClusterIP port is refused at once. For that, the router routes the service CIDR to itself
  (`local 10.96.0.0/16 dev lo`), so such packets reach the input hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tether.lab.topology import MASQUERADE_MARK, SERVICE_CIDR, Endpoint, LabPlan, Port, Service

TABLE = "tether_lab_kubeproxy"


def _chain_id(*parts: object) -> str:
    return "-".join(str(p) for p in parts).replace(".", "_")


def _service_chain(svc: Service, port: Port) -> str:
    return _chain_id("svc", svc.namespace, svc.name, port.name or port.port, port.protocol.lower())


@dataclass(frozen=True)
class ProxyEntry:
    """One service port and where it leads."""

    service: Service
    port: Port
    endpoints: tuple[Endpoint, ...]


def ruleset(plan: LabPlan) -> str:
    """The complete nft script for the lab's planned services and pods."""
    return render([ProxyEntry(s, p, tuple(plan.endpoints(s, p))) for s in plan.services for p in s.ports])


def render(entries: Sequence[ProxyEntry]) -> str:
    """The complete nft script for these service ports (the whole table, replaced atomically)."""
    dispatch: list[str] = []
    chains: list[str] = []
    for entry in entries:
        svc, port, endpoints = entry.service, entry.port, entry.endpoints
        if not endpoints:
            continue  # no endpoints: falls through to the reject below, like kube-proxy
        proto = port.protocol.lower()
        chain = _service_chain(svc, port)
        dispatch.append(f"\t\tip daddr {svc.cluster_ip} {proto} dport {port.port} jump {chain}")
        ep_chains = []
        for index, ep in enumerate(endpoints):
            ep_chain = f"{chain}-ep{index}"
            ep_chains.append(ep_chain)
            chains.append(
                f"\tchain {ep_chain} {{\n"
                f"\t\tip saddr {ep.ip} meta mark set meta mark | {MASQUERADE_MARK:#x}\n"
                f"\t\tmeta l4proto {proto} dnat to {ep.ip}:{ep.port}\n"
                "\t}"
            )
        if len(ep_chains) == 1:
            body = f"\t\tjump {ep_chains[0]}"
        else:
            picks = ", ".join(f"{i} : jump {c}" for i, c in enumerate(ep_chains))
            body = f"\t\tnumgen inc mod {len(ep_chains)} vmap {{ {picks} }}"
        chains.append(f"\tchain {chain} {{\n{body}\n\t}}")
    lines = [
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "\tchain services {",
        *dispatch,
        "\t}",
        *chains,
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tjump services",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tjump services",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tmeta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade",
        "\t}",
        "\tchain reject-unserved {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\tip daddr {SERVICE_CIDR} meta l4proto tcp reject with tcp reset",
        f"\t\tip daddr {SERVICE_CIDR} reject with icmp type port-unreachable",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"
