"""Find the traffic-manager in a cluster and open a gRPC channel to it through a port-forward."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import kubernetes

from tether.helper.cluster.portforward import PodPortForward
from tether.manager.api.grpcopts import grpc_options

ProtocolT = TypeVar("ProtocolT", bound=asyncio.Protocol)

MANAGER_SERVICE = "tether-manager"
GRPC_PORT_NAME = "grpc"


class ManagerNotFoundError(LookupError):
    """No usable manager in the cluster; the text says where we looked."""


@dataclass(frozen=True)
class ManagerPod:
    namespace: str
    name: str
    ip: str
    port: int


def find_manager_pod(core: kubernetes.client.CoreV1Api, namespace: str, service: str = MANAGER_SERVICE) -> ManagerPod:
    """The manager is whatever ready pod backs its Service, on the Service's gRPC target port."""
    try:
        svc = core.read_namespaced_service(service, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            raise ManagerNotFoundError(
                f'no service "{service}" in namespace "{namespace}": the traffic-manager is not installed there; '
                f"install it with: tether manager install --namespace {namespace}"
            ) from None
        raise
    ports = svc.spec.ports or []
    if not ports:
        raise ManagerNotFoundError(f'service "{namespace}/{service}" has no ports')
    chosen = next((p for p in ports if p.name == GRPC_PORT_NAME), ports[0])
    target = chosen.target_port if isinstance(chosen.target_port, int) else chosen.port
    selector = ",".join(f"{k}={v}" for k, v in sorted((svc.spec.selector or {}).items()))
    if not selector:
        raise ManagerNotFoundError(f'service "{namespace}/{service}" has no selector')
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    running = [p for p in pods if p.status and p.status.phase == "Running" and p.status.pod_ip]
    if not running:
        raise ManagerNotFoundError(f'no running pod matches service "{namespace}/{service}" ({selector})')
    pod = sorted(running, key=lambda p: p.metadata.name)[0]
    return ManagerPod(namespace, pod.metadata.name, pod.status.pod_ip, int(target))


class ManagerConnection:
    """A gRPC channel to the manager that rides a port-forward through the API server."""

    def __init__(self, configuration: kubernetes.client.Configuration, namespace: str) -> None:
        self._configuration = configuration
        self._namespace = namespace
        self._scratch = tempfile.TemporaryDirectory(prefix="tether-pf-")
        self.pod: ManagerPod | None = None
        self.forward: PodPortForward | None = None
        self.channel: grpc.aio.Channel | None = None
        self._others: list[PodPortForward] = []  # to other ports of the same pod (the tunnel mux)

    async def open(self) -> grpc.aio.Channel:
        api = kubernetes.client.ApiClient(self._configuration)
        try:
            core = kubernetes.client.CoreV1Api(api)
            self.pod = await asyncio.to_thread(find_manager_pod, core, self._namespace)
        finally:
            api.close()
        self.forward = PodPortForward(self._configuration, self.pod.namespace, self.pod.name, self.pod.port)
        await self.forward.probe()
        target = await self.forward.listen_unix(Path(self._scratch.name) / "manager.sock")
        self.channel = grpc.aio.insecure_channel(target, options=grpc_options())
        return self.channel

    async def connect_port(
        self, port: int, protocol_factory: Callable[[], ProtocolT]
    ) -> tuple[asyncio.BaseTransport, ProtocolT]:
        """A connection to another port of the manager's pod, through a port-forward, for a protocol in this
        process (the tunnel mux)."""
        assert self.pod is not None, "open() first"
        forward = PodPortForward(self._configuration, self.pod.namespace, self.pod.name, port)
        self._others.append(forward)
        transport, protocol = await forward.connect(protocol_factory)
        return transport, protocol  # type: ignore[return-value]

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        for forward in [self.forward, *self._others]:
            if forward is not None:
                await forward.close()
        self._others.clear()
        self._scratch.cleanup()
