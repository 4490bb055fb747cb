"""What the lab looks like: `LabInfo` for clients and tests, and the `status` report (text-free)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.lab import procs
from tether.lab.journal import UP, Journal
from tether.lab.topology import (
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    CONTEXT_NAME,
    DNS_IP,
    SERVICE_CIDR,
    UPSTREAM_DNS_IP,
    UPSTREAM_NAMES,
    VPN_IF,
    WS_IP,
    WS_NODE_IF,
    WS_NODE_IP,
    WS_NS,
    LabPlan,
    StatePaths,
    VpnHost,
)

#: The lab starts no traffic-manager: it is installed as on any cluster, from the workstation.
INSTALL_MANAGER = 'tether lab run -- tether manager install --kubeconfig "$(tether lab kubeconfig)" --wait'


@dataclass
class LabInfo:
    """What a client of the lab needs to know (tests, `status`)."""

    plan: LabPlan
    paths: StatePaths
    notes: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.plan.api_url

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def pod_kubeconfig(self) -> Path:
        return self.paths.pod_kubeconfig

    @property
    def ws_netns(self) -> str:
        return WS_NS

    @property
    def netns(self) -> list[str]:
        return self.plan.netns_names()

    @property
    def cluster_ips(self) -> dict[str, str]:
        """ "namespace/name" -> ClusterIP."""
        return {s.key: str(s.cluster_ip) for s in self.plan.services}

    @property
    def pod_ips(self) -> dict[str, str]:
        """ "namespace/name" -> pod IP."""
        return {f"{p.namespace}/{p.name}": str(p.ip) for p in self.plan.pods}

    @property
    def pod_netns(self) -> dict[str, str]:
        return {f"{p.namespace}/{p.name}": p.netns for p in self.plan.pods}

    @property
    def vpn_hosts(self) -> list[VpnHost]:
        return list(self.plan.vpn.hosts) if self.plan.vpn else []

    def service_ip(self, name: str, namespace: str = "default") -> str:
        return str(self.plan.service(namespace, name).cluster_ip)


def status(
    info: LabInfo, journal: Journal, problems: list[str], netns_pids: Callable[[str], list[int]] = lambda _ns: []
) -> dict[str, Any]:
    """The lab's state, addresses, services, pods, processes and VPN, as plain data (`status --json`).
    The workloads' pods are the controller's: their PIDs are the processes in their namespaces."""
    state = journal.state if journal.state != UP else ("degraded" if problems else "up")
    plan = info.plan
    state = journal.state if journal.state != UP else ("degraded" if problems else "up")
    plan = info.plan
    by_name = {p.name: p for p in journal.processes}
    status: dict[str, Any] = {
        "state": state,
        "problems": problems,
        "api_url": plan.api_url,
        "kubeconfig": str(info.kubeconfig),
        "context": CONTEXT_NAME,
        "service_cidr": str(SERVICE_CIDR),
        "nodes": [{"name": n.name, "pod_cidr": str(n.pod_cidr), "internal_ip": str(n.internal_ip)} for n in plan.nodes],
        "dns": {
            "cluster_dns": str(DNS_IP),
            "domain": CLUSTER_DOMAIN,
            "upstream": str(UPSTREAM_DNS_IP),
            "upstream_names": {k: str(v) for k, v in UPSTREAM_NAMES.items()},
        },
        "workstation": {"netns": WS_NS, "address": str(WS_IP)},
        "services": [
            {
                "namespace": s.namespace,
                "name": s.name,
                "cluster_ip": str(s.cluster_ip),
                "ports": [
                    {"name": p.name, "port": p.port, "target_port": p.target_port, "protocol": p.protocol}
                    for p in s.ports
                ],
            }
            for s in plan.services
        ],
        "pods": [],
        "processes": [
            {"name": p.name, "netns": p.netns, "pid": p.pid, "running": procs.is_running(p.pid, p.start_time)}
            for p in journal.processes
        ],
        "vpn": None,
        "local": None,
        "notes": journal.notes,
    }
    for pod in plan.pods:
        record = by_name.get(f"pod/{pod.namespace}/{pod.name}")
        pids = netns_pids(pod.netns) if pod.kind == "workload" else []
        running = bool(pids) or bool(record and procs.is_running(record.pid, record.start_time))
        status["pods"].append(
            {
                "namespace": pod.namespace,
                "name": pod.name,
                "ip": str(pod.ip),
                "node": pod.node,
                "netns": pod.netns,
                "pid": record.pid if record else (min(pids) if pids else None),
                "running": running,
                "loopback_ports": list(pod.loopback_ports),
            }
        )
    if plan.local:
        status["local"] = {
            "interface": WS_NODE_IF,
            "address": str(WS_NODE_IP),
            "direct": [str(CLUSTER_CIDR)],
            "resolver": f"{WS_NODE_IP}:53 (the cluster DNS's upstream)",
        }
    if plan.vpn is not None:
        status["vpn"] = {
            "cidrs": [str(c) for c in plan.vpn.cidrs],
            "interface": VPN_IF,
            "address": str(plan.vpn.ws_ip),
            "gateway": str(plan.vpn.gateway),
            "hosts": [
                {"address": str(h.address), "cidr": str(h.cidr), "where": h.where, "url": f"http://{h.address}/"}
                for h in plan.vpn.hosts
            ],
        }
    return status
