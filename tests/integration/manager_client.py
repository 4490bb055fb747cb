"""A client session with the lab's manager, reached as the helper reaches it: the API server's port-forward,
from a loop thread that lives in the workstation namespace."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import kubernetes

from tether.helper.cluster.manager_dial import ManagerConnection
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc


def kube_configuration(kubeconfig: os.PathLike[str]) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


def set_manager_config(lab: Any, workstation: Any, data: dict[str, str] | None) -> dict[str, str] | None:
    """Replace the data of the manager's ConfigMap (read at its start); returns what it held."""
    with workstation():  # the lab's API server is reached from the workstation, as a user reaches it
        api = kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig))
        try:
            core = kubernetes.client.CoreV1Api(api)
            config_map = core.read_namespaced_config_map("tether-manager", "tether")
            before = config_map.data
            config_map.data = data
            core.replace_namespaced_config_map("tether-manager", "tether", config_map)
        finally:
            api.close()
    return before


class ManagerClient:
    """A session with the lab's manager, driven from a loop thread that lives in the workstation namespace."""

    def __init__(self, lab: Any, workstation: Any, name: str = "integration") -> None:
        self.loop = asyncio.new_event_loop()
        with workstation():
            # Threads inherit the namespace they are started from: the port-forward's sockets belong there.
            self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
            self.thread.start()
        self.connection = ManagerConnection(kube_configuration(lab.kubeconfig), "tether")
        self.stub = pb_grpc.ManagerStub(self.run(lambda: self.connection.open()))
        self.session = self.run(
            lambda: self.stub.ArriveAsClient(pb.ClientInfo(name=name, namespace="default", version="test"))
        ).session_id

    def run(self, make: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
        """Run make() on the client's loop: gRPC aio calls must be created where they run."""

        async def call() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def close(self) -> None:
        self.run(lambda: self.stub.Depart(pb.SessionInfo(session_id=self.session)))
        self.run(lambda: self.connection.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
