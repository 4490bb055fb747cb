"""Shared pieces for the discovery tests: strategy names, Kubernetes model objects, a change recorder.

A plain module (not conftest.py) so the tests can import its helpers by a name no other folder uses.
"""

from __future__ import annotations

from kubernetes import client

from tether.manager.config import PodCIDRStrategy
from tether.manager.discovery.tracker import ClusterNetwork

AUTO = PodCIDRStrategy.AUTO
NODES = PodCIDRStrategy.NODE_POD_CIDRS
COVER = PodCIDRStrategy.COVER_POD_IPS
ENV = PodCIDRStrategy.ENVIRONMENT
MANAGER_IP = "10.244.1.7"

# ---------------------------------------------------------------------------
# Kubernetes model objects, built the way the API would return them
# ---------------------------------------------------------------------------


def v1_node(name: str, *cidrs: str, legacy: bool = False) -> client.V1Node:
    if legacy:  # clusters before dual-stack only fill spec.podCIDR
        spec = client.V1NodeSpec(pod_cidr=cidrs[0] if cidrs else None)
    else:
        spec = client.V1NodeSpec(pod_cidr=cidrs[0] if cidrs else None, pod_cidrs=list(cidrs) or None)
    return client.V1Node(metadata=client.V1ObjectMeta(name=name), spec=spec)


def v1_pod(
    name: str,
    *ips: str,
    namespace: str = "default",
    host_network: bool = False,
    phase: str = "Running",
    legacy: bool = False,
) -> client.V1Pod:
    status = client.V1PodStatus(phase=phase, pod_ip=ips[0] if ips else None)
    if ips and not legacy:
        status.pod_ips = [client.V1PodIP(ip=i) for i in ips]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app")], host_network=host_network or None),
        status=status,
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[ClusterNetwork] = []

    def __call__(self, network: ClusterNetwork) -> None:
        self.calls.append(network)

    @property
    def pods(self) -> list[list[str]]:
        return [[str(n) for n in c.pod_subnets] for c in self.calls]
