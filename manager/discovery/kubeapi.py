"""Discovery's one-shot Kubernetes API requests: paged lists as raw JSON, and finding the service subnets.

The service subnets come from the configured override, else from the API
server's refusal of a probe Service (:func:`probe_service_cidrs`), else from a
guess over existing ClusterIPs. The long-running list/watch of nodes and pods
is :mod:`tether.manager.discovery.watcher`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tether.manager.config import ManagerConfig
from tether.manager.discovery.decode import api_error_text, get_path
from tether.manager.subnets import IPNetwork, fallback_service_cidrs, parse_service_cidrs_error, sort_key

__all__ = [
    "PROBE_SERVICE_NAME",
    "discover_service_subnets",
    "list_cluster_ips",
    "list_raw",
    "probe_service_cidr",
    "probe_service_cidrs",
]

log = logging.getLogger("tether.manager.discovery")

PROBE_SERVICE_NAME = "tether-service-cidr-probe"
# Addresses no service range should contain, so the API server refuses them and
# names its range. The IPv6 one is from the documentation prefix (RFC 3849).
_PROBE_IPV4 = "1.1.1.1"
_PROBE_IPV6 = "2001:db8::1"


def _is_unreachable(exc: BaseException) -> bool:
    """True when the API server did not give an answer (as opposed to refusing)."""
    if not isinstance(exc, ApiException):
        return True
    return not exc.status or exc.status >= 500


def list_raw(
    func: Callable[..., Any], *args: Any, request_timeout: float = 30.0, page_size: int = 500
) -> tuple[list[Mapping[str, Any]], str | None]:
    """All items of a list call as dicts, paging with limit/continue, and the list's resourceVersion."""
    items: list[Mapping[str, Any]] = []
    token: str | None = None
    while True:
        response = func(
            *args, limit=page_size, _continue=token, _preload_content=False, _request_timeout=request_timeout
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items.extend(i for i in body.get("items") or [] if isinstance(i, Mapping))
        token = get_path(body, "metadata", "continue") or None
        if not token:
            return items, get_path(body, "metadata", "resourceVersion") or None


def _delete_probe(core_v1: client.CoreV1Api, namespace: str, name: str, request_timeout: float) -> None:
    try:
        response = core_v1.delete_namespaced_service(
            name, namespace, _preload_content=False, _request_timeout=request_timeout
        )
        response.release_conn()
    except ApiException as exc:
        if exc.status != 404:
            log.warning(
                "could not delete probe service",
                extra={"namespace": namespace, "service": name, "error": api_error_text(exc)},
            )


def _probe_once(
    core_v1: client.CoreV1Api, namespace: str, probe_ip: str, name: str, request_timeout: float
) -> list[IPNetwork]:
    body = client.V1Service(
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels={"app.kubernetes.io/managed-by": "tether-manager"},
        ),
        spec=client.V1ServiceSpec(
            cluster_ip=probe_ip,
            ports=[client.V1ServicePort(name="probe", port=80, protocol="TCP")],
        ),
    )
    for attempt in range(2):
        try:
            response = core_v1.create_namespaced_service(
                namespace, body, _preload_content=False, _request_timeout=request_timeout
            )
        except ApiException as exc:
            if exc.status == 409 and attempt == 0:
                # A probe left behind by a crash between create and delete.
                log.info("removing stale probe service", extra={"namespace": namespace, "service": name})
                _delete_probe(core_v1, namespace, name, request_timeout)
                continue
            if _is_unreachable(exc):
                raise
            text = api_error_text(exc)
            found = parse_service_cidrs_error(text)
            if found:
                log.debug("service CIDR probe answered", extra={"probe_ip": probe_ip, "subnets": _strs(found)})
            else:
                log.info(
                    "service CIDR probe told nothing",
                    extra={"probe_ip": probe_ip, "status": exc.status, "answer": text},
                )
            return found
        response.release_conn()
        log.warning(
            "API server accepted the probe's ClusterIP, so it cannot tell the service range; deleting the probe",
            extra={"probe_ip": probe_ip, "namespace": namespace, "service": name},
        )
        _delete_probe(core_v1, namespace, name, request_timeout)
        return []
    return []


def probe_service_cidr(
    core_v1: client.CoreV1Api,
    namespace: str,
    *,
    probe_ip: str = _PROBE_IPV4,
    name: str = PROBE_SERVICE_NAME,
    request_timeout: float = 30.0,
) -> IPNetwork | None:
    """Ask the API server for its service range by creating a Service it must refuse.

    Creates Service ``name`` with ClusterIP ``probe_ip`` (port 80) in
    ``namespace``; the expected 422 names the range, parsed with
    :func:`~tether.manager.subnets.parse_service_cidrs_error`. A Service that
    was unexpectedly created is deleted. Returns the range of ``probe_ip``'s
    family if named (else any named range), or None when the answer does not
    tell (refused by RBAC, other wording, accepted). Raises when the API server
    could not be reached (connection errors, 5xx), so callers can retry.
    """
    found = _probe_once(core_v1, namespace, probe_ip, name, request_timeout)
    version = ipaddress.ip_address(probe_ip).version
    same_family = [n for n in found if n.version == version]
    return (same_family or found or [None])[0]


def probe_service_cidrs(
    core_v1: client.CoreV1Api, namespace: str, *, name: str = PROBE_SERVICE_NAME, request_timeout: float = 30.0
) -> list[IPNetwork]:
    """Every service range the API server names, probing with an IPv4 and an IPv6 ClusterIP.

    The IPv6 probe covers IPv6-only clusters (which refuse 1.1.1.1 for its
    family, without naming a range) and dual-stack ones; on IPv4-only clusters
    it costs one refused request. Raises like :func:`probe_service_cidr`.
    """
    found = _probe_once(core_v1, namespace, _PROBE_IPV4, name, request_timeout)
    if not any(n.version == 6 for n in found):
        found += _probe_once(core_v1, namespace, _PROBE_IPV6, name, request_timeout)
    return sorted(set(found), key=sort_key)


def list_cluster_ips(core_v1: client.CoreV1Api, namespace: str, *, request_timeout: float = 30.0) -> list[str]:
    """ClusterIPs of existing services: cluster-wide, or the manager's namespace if RBAC forbids that."""
    try:
        services, _ = list_raw(core_v1.list_service_for_all_namespaces, request_timeout=request_timeout)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.info("may not list services cluster-wide; using own namespace only", extra={"namespace": namespace})
        services, _ = list_raw(core_v1.list_namespaced_service, namespace, request_timeout=request_timeout)
    ips: list[str] = []
    for svc in services:
        for ip in get_path(svc, "spec", "clusterIPs") or [get_path(svc, "spec", "clusterIP")]:
            if ip and ip != "None" and ip not in ips:
                ips.append(str(ip))
    return ips


def discover_service_subnets(
    core_v1: client.CoreV1Api, config: ManagerConfig, namespace: str, *, request_timeout: float = 30.0
) -> tuple[IPNetwork, ...]:
    """The service subnets: the configured override, else the probe, else a guess from existing ClusterIPs.

    Returns an empty tuple when nothing tells; raises when the API server
    could not be reached, so the caller can retry.
    """
    if config.service_cidr is not None:
        log.info(
            "service subnet from configuration",
            extra={"subnets": [str(config.service_cidr)], "from": config.sources.get("serviceCIDR", "configured")},
        )
        return (config.service_cidr,)
    found = probe_service_cidrs(core_v1, namespace, request_timeout=request_timeout)
    if found:
        log.info("service subnets from the API server's probe answer", extra={"subnets": _strs(found)})
        return tuple(found)
    try:
        ips = list_cluster_ips(core_v1, namespace, request_timeout=request_timeout)
    except ApiException as exc:
        if _is_unreachable(exc):
            raise
        log.warning("cannot list services to guess the service subnet", extra={"error": api_error_text(exc)})
        ips = []
    guessed = fallback_service_cidrs(ips)
    if guessed:
        log.warning(
            "service subnets guessed from existing ClusterIPs; set serviceCIDR if they are wrong",
            extra={"subnets": _strs(guessed), "cluster_ips": len(ips)},
        )
    else:
        log.warning("no service subnet found: the probe told nothing and no ClusterIPs are visible; set serviceCIDR")
    return tuple(guessed)


def _strs(nets: Iterable[IPNetwork]) -> list[str]:
    return [str(n) for n in nets]
