"""The Kubernetes calls a connect makes with the caller's credentials (blocking; run them in a thread).

Which namespaces the user may list (their `<svc>.<namespace>` names go to the cluster), whether a
`--proxy-via` workload exists, and the API server's and its proxy's addresses (never routed into the TUN).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

import kubernetes

from tether.helper.api.proxies import ProxyURL

REQUEST_TIMEOUT = 10


def list_namespaces(configuration: kubernetes.client.Configuration) -> frozenset[str]:
    """Every namespace the credentials may list; ApiException when they may not."""
    api = kubernetes.client.ApiClient(configuration)
    try:
        items = kubernetes.client.CoreV1Api(api).list_namespace(_request_timeout=REQUEST_TIMEOUT).items
        return frozenset(ns.metadata.name for ns in items)
    finally:
        api.close()


def workload_kind(configuration: kubernetes.client.Configuration, namespace: str, name: str) -> str | None:
    """The kind of the workload `namespace/name`, or None when there is none (first found, in this order)."""
    api = kubernetes.client.ApiClient(configuration)
    try:
        apps = kubernetes.client.AppsV1Api(api)
        readers = {
            "Deployment": apps.read_namespaced_deployment,
            "StatefulSet": apps.read_namespaced_stateful_set,
            "ReplicaSet": apps.read_namespaced_replica_set,
        }
        for kind, read in readers.items():
            try:
                read(name, namespace, _request_timeout=REQUEST_TIMEOUT)
                return kind
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
        return None
    finally:
        api.close()


def api_server_addresses(server: str, proxy: ProxyURL | None = None) -> list[str]:
    """The API server's addresses, and its proxy's when there is one: routing them into the TUN would cut off
    the port-forward we ride on."""
    found = _host_addresses(urlparse(server).hostname or "")
    if proxy is not None:
        found = sorted({*found, *_host_addresses(proxy.host)})
    return found


def _host_addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []
