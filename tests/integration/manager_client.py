"""A client session with the lab's manager, reached as the helper reaches it: the API server's port-forward,
from a loop thread that lives in the workstation namespace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import kubernetes

from tether.helper.cluster.manager_dial import ManagerConnection
from tether.lab.netns import workstation
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc


def kube_configuration(kubeconfig: os.PathLike[str]) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


MANAGER_NAMESPACE = "tether"
#: The chart's selector label of the manager's pods.
MANAGER_SELECTOR = "app.kubernetes.io/name=tether-manager"


def _core(lab: Any) -> tuple[kubernetes.client.ApiClient, kubernetes.client.CoreV1Api]:
    api = kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig))
    return api, kubernetes.client.CoreV1Api(api)


def _ready(pod: kubernetes.client.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return pod.metadata.deletion_timestamp is None and any(c.type == "Ready" and c.status == "True" for c in conditions)


def manager_pod(lab: Any, *, not_uid: str = "", timeout: float = 90) -> kubernetes.client.V1Pod:
    """The installed manager's ready pod (the lab's controller runs it), waiting for one other than
    ``not_uid``'s."""
    with workstation():  # the lab's API server is reached from the workstation, as a user reaches it
        api, core = _core(lab)
        try:
            deadline = time.monotonic() + timeout
            while True:
                pods = core.list_namespaced_pod(MANAGER_NAMESPACE, label_selector=MANAGER_SELECTOR).items
                ready = [p for p in pods if _ready(p) and p.metadata.uid != not_uid]
                if len(ready) == 1 and len(pods) == 1:
                    return ready[0]
                if time.monotonic() > deadline:
                    raise AssertionError(f"no single ready manager pod after {timeout:.0f}s: {pods}")
                time.sleep(0.2)
        finally:
            api.close()


def manager_service_ip(lab: Any) -> str:
    """The ClusterIP the API server gave the chart's Service."""
    with workstation():
        api, core = _core(lab)
        try:
            return str(core.read_namespaced_service("tether-manager", MANAGER_NAMESPACE).spec.cluster_ip)
        finally:
            api.close()


def manager_log(lab: Any, pod: kubernetes.client.V1Pod) -> Path:
    """The log of the manager's container in ``pod`` (the lab's controller keeps one per container)."""
    return lab.paths.logs / f"{pod.metadata.namespace}_{pod.metadata.name}_tether-manager.log"


def restart_manager(lab: Any, timeout: float = 90) -> kubernetes.client.V1Pod:
    """Delete the manager's pod, as `kubectl delete pod` would, and wait until the controller's replacement
    (from the Deployment's template: a new name and address) is ready; returns it."""
    old = manager_pod(lab)
    with workstation():
        api, core = _core(lab)
        try:
            core.delete_namespaced_pod(old.metadata.name, MANAGER_NAMESPACE)
        finally:
            api.close()
    return manager_pod(lab, not_uid=old.metadata.uid, timeout=timeout)


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
        # A manager pod replaced meanwhile (restart_manager) took the session with it, and the port-forward
        # to that pod has nowhere to go: nothing to depart from then.
        with contextlib.suppress(grpc.aio.AioRpcError):
            self.run(lambda: self.stub.Depart(pb.SessionInfo(session_id=self.session)))
        self.run(lambda: self.connection.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
