"""What the manager tells clients about the cluster, and the fan-out to watchers."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

from tether.manager.api import manager_pb2 as pb
from tether.manager.api.sidecar import SidecarConfig
from tether.manager.api.wire import subnet_to_pb, subnets_to_pb
from tether.manager.config import ManagerConfig
from tether.manager.discovery.tracker import ClusterNetwork


def build_cluster_info(
    network: ClusterNetwork, config: ManagerConfig, pod_ip: str, port: int, sidecar: SidecarConfig | None = None
) -> pb.ClusterInfo:
    """Combine what discovery found with the chart's client settings (pure); ``sidecar`` is the agent
    clients inject into --proxy-via workloads without one."""
    info = pb.ClusterInfo(
        pod_subnets=subnets_to_pb(network.pod_subnets),
        service_subnets=subnets_to_pb(network.service_subnets),
        manager_pod_ip=ipaddress.ip_address(pod_ip).packed if pod_ip else b"",
        manager_port=port,
        dns=pb.DNSConfig(
            cluster_domain=config.cluster_domain.rstrip(".") + ".",
            include_suffixes=list(config.dns_include_suffixes),
            exclude_suffixes=list(config.dns_exclude_suffixes),
        ),
        routing=pb.RoutingConfig(
            also_proxy_subnets=subnets_to_pb(config.also_proxy_subnets),
            never_proxy_subnets=subnets_to_pb(config.never_proxy_subnets),
            allow_conflicting_subnets=subnets_to_pb(config.allow_conflicting_subnets),
        ),
    )
    if sidecar is not None:
        info.agent_sidecar.CopyFrom(pb.AgentSidecar(image=sidecar.image, manager_address=sidecar.manager))
    if network.service_subnet is not None:
        info.service_subnet.CopyFrom(subnet_to_pb(network.service_subnet))
    return info


class ClusterInfoHub:
    """Holds the latest ClusterInfo; each watcher gets it now and again on every change.

    Watchers only ever need the newest state, so each keeps a one-slot mailbox
    that a newer snapshot overwrites: a slow watcher can't make the hub buffer.
    """

    def __init__(self) -> None:
        self._current: pb.ClusterInfo | None = None
        self._mailboxes: set[asyncio.Queue[pb.ClusterInfo]] = set()

    @property
    def current(self) -> pb.ClusterInfo | None:
        return self._current

    def publish(self, info: pb.ClusterInfo) -> bool:
        if self._current == info:
            return False
        self._current = info
        for mailbox in self._mailboxes:
            _replace(mailbox, info)
        return True

    async def watch(self) -> AsyncIterator[pb.ClusterInfo]:
        mailbox: asyncio.Queue[pb.ClusterInfo] = asyncio.Queue(maxsize=1)
        if self._current is not None:
            mailbox.put_nowait(self._current)
        self._mailboxes.add(mailbox)
        try:
            while True:
                yield await mailbox.get()
        finally:
            self._mailboxes.discard(mailbox)

    @property
    def watcher_count(self) -> int:
        return len(self._mailboxes)


def _replace(mailbox: asyncio.Queue[pb.ClusterInfo], info: pb.ClusterInfo) -> None:
    if mailbox.full():
        mailbox.get_nowait()
    mailbox.put_nowait(info)
