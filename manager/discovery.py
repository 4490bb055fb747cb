"""Cluster discovery: which subnets the cluster's services and pods live in.

Three layers, so the rules can be tested without an API server:

* plain data and pure rules — :class:`NodeInfo`, :class:`PodInfo`,
  :func:`compute_pod_subnets`, :class:`ClusterNetwork`;
* :class:`NetworkTracker` — applies list results and watch events to
  in-memory maps and calls ``on_change`` when the network really changes
  (no I/O, no threads of its own);
* the I/O — :func:`probe_service_cidrs`, :func:`discover_service_subnets`
  and :class:`ClusterDiscovery`, which lists and watches nodes and pods with
  the official (synchronous) client in daemon threads.

List and watch results are read as raw JSON rather than as client models:
decoding every pod into pydantic models costs far more than the three fields
we read, and the strict models refuse objects that lack fields we never use.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .config import ManagerConfig, PodCIDRStrategy
from .subnets import (
    IPAddress,
    IPNetwork,
    cover_ips,
    drop_covered,
    fallback_service_cidrs,
    parse_service_cidrs_error,
    sort_key,
)

__all__ = [
    "PROBE_SERVICE_NAME",
    "ClusterDiscovery",
    "ClusterNetwork",
    "Kind",
    "NetworkTracker",
    "NodeInfo",
    "PodInfo",
    "PodSubnetDecision",
    "compute_pod_subnets",
    "decide_pod_subnets",
    "discover_service_subnets",
    "list_cluster_ips",
    "needed_kinds",
    "node_info",
    "pod_info",
    "probe_service_cidr",
    "probe_service_cidrs",
]

log = logging.getLogger("tether.manager.discovery")

PROBE_SERVICE_NAME = "tether-service-cidr-probe"
# Addresses no service range should contain, so the API server refuses them and
# names its range. The IPv6 one is from the documentation prefix (RFC 3849).
_PROBE_IPV4 = "1.1.1.1"
_PROBE_IPV6 = "2001:db8::1"
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class Kind(enum.StrEnum):
    """The watched resources."""

    NODES = "nodes"
    PODS = "pods"


# ---------------------------------------------------------------------------
# Plain data extracted from Node and Pod objects
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str
    pod_cidrs: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class PodInfo:
    key: str  # "namespace/name": stable across MODIFIED events and present even without a uid
    ips: tuple[IPAddress, ...] = ()
    host_network: bool = False
    phase: str = ""

    @property
    def counts(self) -> bool:
        """Whether this pod's IPs say anything about the pod network.

        hostNetwork pods carry node IPs, and finished pods may keep an IP that
        has already been handed to another pod.
        """
        return bool(self.ips) and not self.host_network and self.phase not in _TERMINAL_PHASES


_serializer: client.ApiClient | None = None


def _as_dict(obj: Any) -> Mapping[str, Any]:
    """A Kubernetes object as its JSON-shaped dict, whether given as a dict or a client model."""
    global _serializer
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return obj
    if _serializer is None:
        _serializer = client.ApiClient()
    data = _serializer.sanitize_for_serialization(obj)
    return data if isinstance(data, Mapping) else {}


def _get(data: Mapping[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def node_info(obj: Any) -> NodeInfo:
    """Extract a node's podCIDRs (``spec.podCIDRs``, else ``spec.podCIDR``) from a V1Node or its dict."""
    data = _as_dict(obj)
    name = str(_get(data, "metadata", "name") or "")
    texts = _get(data, "spec", "podCIDRs") or [_get(data, "spec", "podCIDR")]
    cidrs: list[IPNetwork] = []
    for text in texts:
        if not text:
            continue
        try:
            # Not strict: the node controller never sets host bits, and if something
            # did, the covering network is still what the node's pods use.
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            log.warning("ignoring unparseable node podCIDR", extra={"node": name, "pod_cidr": text})
            continue
        if net not in cidrs:
            cidrs.append(net)
    return NodeInfo(name=name, pod_cidrs=tuple(cidrs))


def pod_info(obj: Any) -> PodInfo:
    """Extract a pod's IPs (``status.podIPs``, else ``status.podIP``) and flags from a V1Pod or its dict."""
    data = _as_dict(obj)
    key = f"{_get(data, 'metadata', 'namespace') or ''}/{_get(data, 'metadata', 'name') or ''}"
    entries = _get(data, "status", "podIPs") or []
    texts = [e.get("ip") for e in entries if isinstance(e, Mapping)] or [_get(data, "status", "podIP")]
    ips: list[IPAddress] = []
    for text in texts:
        if not text:
            continue
        try:
            ip = ipaddress.ip_address(str(text).strip())
        except ValueError:
            log.debug("ignoring unparseable pod IP", extra={"pod": key, "pod_ip": text})
            continue
        if ip not in ips:
            ips.append(ip)
    return PodInfo(
        key=key,
        ips=tuple(ips),
        host_network=bool(_get(data, "spec", "hostNetwork")),
        phase=str(_get(data, "status", "phase") or ""),
    )


# ---------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodSubnetDecision:
    """The pod subnets and how they were found; ``note`` says why, for the log."""

    subnets: tuple[IPNetwork, ...]
    source: PodCIDRStrategy
    note: str


def _node_cidrs_trust(node_cidrs: list[IPNetwork], manager_ip: IPAddress | None) -> tuple[bool, str]:
    # Some network plugins (EKS's VPC CNI, Calico with its own IPAM) ignore the
    # node podCIDRs; the manager's own pod IP is the evidence they are real.
    if not node_cidrs:
        return False, "no node has spec.podCIDR(s)"
    if manager_ip is None:
        return False, "the manager's own pod IP is unknown, so node podCIDRs cannot be verified"
    if not any(manager_ip in net for net in node_cidrs):
        return False, f"no node podCIDR contains the manager's pod IP {manager_ip}; the network plugin ignores them"
    return True, f"node podCIDRs contain the manager's pod IP {manager_ip}"


def _parse_ip(ip: str | IPAddress | None) -> IPAddress | None:
    if ip is None or ip == "":
        return None
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    try:
        return ipaddress.ip_address(str(ip).strip())
    except ValueError:
        log.warning("manager pod IP is not an IP address; treating it as unknown", extra={"pod_ip": ip})
        return None


def decide_pod_subnets(
    strategy: PodCIDRStrategy,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    manager_pod_ip: str | IPAddress | None,
    configured: Iterable[IPNetwork],
) -> PodSubnetDecision:
    """Pick the pod subnets by ``strategy`` and say why (see :func:`compute_pod_subnets`)."""
    strategy = PodCIDRStrategy(strategy)
    if strategy is PodCIDRStrategy.ENVIRONMENT:
        return PodSubnetDecision(tuple(drop_covered(configured)), strategy, "configured podCIDRs")

    why = ""
    if strategy in (PodCIDRStrategy.NODE_POD_CIDRS, PodCIDRStrategy.AUTO):
        node_cidrs = [net for node in nodes for net in node.pod_cidrs]
        trusted, why = _node_cidrs_trust(node_cidrs, _parse_ip(manager_pod_ip))
        if trusted:
            return PodSubnetDecision(tuple(drop_covered(node_cidrs)), PodCIDRStrategy.NODE_POD_CIDRS, why)
        if strategy is PodCIDRStrategy.NODE_POD_CIDRS:
            return PodSubnetDecision((), strategy, f"{why}; no pod subnets (try podCIDRStrategy coverPodIPs)")

    ips = [ip for pod in pods if pod.counts for ip in pod.ips]
    note = "covering the IPs of running pods"
    if why:
        note = f"{why}; {note}"
    return PodSubnetDecision(tuple(drop_covered(cover_ips(ips))), PodCIDRStrategy.COVER_POD_IPS, note)


def compute_pod_subnets(
    strategy: PodCIDRStrategy,
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    manager_pod_ip: str | IPAddress | None,
    configured: Iterable[IPNetwork],
) -> list[IPNetwork]:
    """The pod subnets by ``strategy``, with covered subnets dropped.

    * ``nodePodCIDRs``: the nodes' podCIDRs, only if one contains the manager's
      own pod IP; otherwise none (the reason is in :func:`decide_pod_subnets`).
    * ``coverPodIPs``: covering networks of the IPs of pods that count
      (not hostNetwork, not finished, with an IP) — see :func:`cover_ips`.
    * ``environment``: ``configured``.
    * ``auto``: ``nodePodCIDRs`` when trusted, else ``coverPodIPs``.
    """
    return list(decide_pod_subnets(strategy, nodes, pods, manager_pod_ip, configured).subnets)


def needed_kinds(strategy: PodCIDRStrategy) -> frozenset[Kind]:
    """The resources a strategy reads; the others are neither listed nor watched (less load, less RBAC)."""
    return {
        PodCIDRStrategy.AUTO: frozenset({Kind.NODES, Kind.PODS}),
        PodCIDRStrategy.NODE_POD_CIDRS: frozenset({Kind.NODES}),
        PodCIDRStrategy.COVER_POD_IPS: frozenset({Kind.PODS}),
        PodCIDRStrategy.ENVIRONMENT: frozenset(),
    }[PodCIDRStrategy(strategy)]


@dataclass(frozen=True)
class ClusterNetwork:
    """What the manager tells clients about the cluster's subnets.

    Equality (and so change detection) looks only at the subnets; the counts
    and the source are for logs.
    """

    # Usually one; dual-stack and multi-ServiceCIDR clusters have more. Sorted, IPv4 first.
    service_subnets: tuple[IPNetwork, ...]
    # After drop_covered; sorted, IPv4 first.
    pod_subnets: tuple[IPNetwork, ...]
    pod_subnet_source: str = field(default="", compare=False)
    node_count: int = field(default=0, compare=False)
    pod_count: int = field(default=0, compare=False)

    @property
    def service_subnet(self) -> IPNetwork | None:
        """The primary service subnet (IPv4 first), for APIs that carry only one."""
        return self.service_subnets[0] if self.service_subnets else None


# ---------------------------------------------------------------------------
# Event handling (no I/O)
# ---------------------------------------------------------------------------


class NetworkTracker:
    """Keeps nodes and pods in memory and publishes the ClusterNetwork when it changes.

    Feed it full lists with :meth:`reset` and watch events with :meth:`apply`.
    Nothing is published until every resource the strategy needs has been
    listed once; after that ``on_change`` is called with the first snapshot and
    then only when the subnets really change. Thread-safe; ``on_change`` runs on
    the caller's thread while a lock is held (so calls arrive in order), so it
    must be quick — hand work to another thread or loop.
    """

    def __init__(
        self,
        *,
        strategy: PodCIDRStrategy,
        on_change: Callable[[ClusterNetwork], None],
        service_subnets: Iterable[IPNetwork] = (),
        configured_pod_cidrs: Iterable[IPNetwork] = (),
        manager_pod_ip: str | IPAddress | None = None,
    ) -> None:
        self._strategy = PodCIDRStrategy(strategy)
        self._on_change = on_change
        self._service_subnets = tuple(sorted(set(service_subnets), key=sort_key))
        self._configured = tuple(configured_pod_cidrs)
        self._manager_ip = _parse_ip(manager_pod_ip)
        self._needed = needed_kinds(self._strategy)
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[str, PodInfo] = {}
        self._synced: set[Kind] = set()
        self._current: ClusterNetwork | None = None
        self._last_note = ""
        self._closed = False

    @property
    def needed(self) -> frozenset[Kind]:
        return self._needed

    def snapshot(self) -> ClusterNetwork | None:
        with self._lock:
            return self._current

    def close(self) -> None:
        """Publish nothing from now on (the owner is shutting down)."""
        with self._lock:
            self._closed = True

    def refresh(self) -> None:
        """Publish if ready and changed; for strategies that need no resources this is the first snapshot."""
        with self._lock:
            self._recompute()

    def reset(self, kind: Kind, objects: Iterable[Any]) -> None:
        """Replace everything known about ``kind`` with a fresh list (V1Node/V1Pod models or dicts)."""
        kind = Kind(kind)
        if kind is Kind.NODES:
            nodes = {n.name: n for n in map(node_info, objects)}
        else:
            pods = {p.key: p for p in map(pod_info, objects)}
        with self._lock:
            if kind is Kind.NODES:
                self._nodes = nodes
            else:
                self._pods = pods
            self._synced.add(kind)
            self._recompute()

    def mark_unavailable(self, kind: Kind, reason: str) -> None:
        """Treat ``kind`` as listed and empty, e.g. when RBAC forbids listing nodes under ``auto``."""
        kind = Kind(kind)
        with self._lock:
            if kind not in self._synced or (self._nodes if kind is Kind.NODES else self._pods):
                log.warning("cannot read resource; going on without it", extra={"kind": str(kind), "reason": reason})
            (self._nodes if kind is Kind.NODES else self._pods).clear()
            self._synced.add(kind)
            self._recompute()

    def apply(self, kind: Kind, event_type: str, obj: Any) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED; BOOKMARK and others are ignored)."""
        kind = Kind(kind)
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        if kind is Kind.NODES:
            self._apply_to(self._nodes, node_info(obj), lambda n: n.name, event_type)
        else:
            self._apply_to(self._pods, pod_info(obj), lambda p: p.key, event_type)

    def _apply_to(self, table: dict[str, Any], info: Any, key_of: Callable[[Any], str], event_type: str) -> None:
        key = key_of(info)
        with self._lock:
            if event_type == "DELETED":
                if table.pop(key, None) is None:
                    return
            elif table.get(key) == info:
                # Most pod updates (conditions, restarts) change nothing we read.
                return
            else:
                table[key] = info
            self._recompute()

    def _recompute(self) -> None:
        if self._closed or not self._needed <= self._synced:
            return
        decision = decide_pod_subnets(
            self._strategy, self._nodes.values(), self._pods.values(), self._manager_ip, self._configured
        )
        if decision.note != self._last_note:
            self._last_note = decision.note
            level = logging.WARNING if not decision.subnets else logging.INFO
            log.log(level, "pod subnet source", extra={"source": decision.source.value, "reason": decision.note})
        network = ClusterNetwork(
            service_subnets=self._service_subnets,
            pod_subnets=decision.subnets,
            pod_subnet_source=decision.source.value,
            node_count=len(self._nodes),
            pod_count=sum(1 for p in self._pods.values() if p.counts),
        )
        if network == self._current:
            return
        self._current = network
        # DEBUG: the owner's on_change logs the change; this adds the counts behind it.
        log.debug(
            "cluster network changed",
            extra={
                "service_subnets": [str(n) for n in network.service_subnets],
                "pod_subnets": [str(n) for n in network.pod_subnets],
                "source": network.pod_subnet_source,
                "nodes": network.node_count,
                "pods": network.pod_count,
            },
        )
        try:
            self._on_change(network)
        except Exception:
            log.exception("cluster network change handler failed")


def _strs(nets: Iterable[IPNetwork]) -> list[str]:
    return [str(n) for n in nets]


# ---------------------------------------------------------------------------
# Service CIDR discovery (I/O)
# ---------------------------------------------------------------------------


def _api_error_text(exc: ApiException) -> str:
    """The human-readable parts of an API error: Status.message, its causes, and the reason."""
    parts: list[str] = []
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            parts.append(str(body))
        else:
            if isinstance(status, Mapping):
                parts.append(str(status.get("message") or ""))
                for cause in _get(status, "details", "causes") or []:
                    if isinstance(cause, Mapping):
                        parts.append(str(cause.get("message") or ""))
            else:
                parts.append(str(body))
    if exc.reason:
        parts.append(str(exc.reason))
    return "\n".join(p for p in parts if p)


def _is_unreachable(exc: BaseException) -> bool:
    """True when the API server did not give an answer (as opposed to refusing)."""
    if not isinstance(exc, ApiException):
        return True
    return not exc.status or exc.status >= 500


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
                extra={"namespace": namespace, "service": name, "error": _api_error_text(exc)},
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
            text = _api_error_text(exc)
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


def _list_raw(
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
        token = _get(body, "metadata", "continue") or None
        if not token:
            return items, _get(body, "metadata", "resourceVersion") or None


def list_cluster_ips(core_v1: client.CoreV1Api, namespace: str, *, request_timeout: float = 30.0) -> list[str]:
    """ClusterIPs of existing services: cluster-wide, or the manager's namespace if RBAC forbids that."""
    try:
        services, _ = _list_raw(core_v1.list_service_for_all_namespaces, request_timeout=request_timeout)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.info("may not list services cluster-wide; using own namespace only", extra={"namespace": namespace})
        services, _ = _list_raw(core_v1.list_namespaced_service, namespace, request_timeout=request_timeout)
    ips: list[str] = []
    for svc in services:
        for ip in _get(svc, "spec", "clusterIPs") or [_get(svc, "spec", "clusterIP")]:
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
        log.warning("cannot list services to guess the service subnet", extra={"error": _api_error_text(exc)})
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


# ---------------------------------------------------------------------------
# Background list/watch (I/O)
# ---------------------------------------------------------------------------


class _RawWatch(watch.Watch):
    """A Watch that yields objects as dicts (``raw_object``) instead of decoding them into models."""

    def get_return_type(self, func: Callable[..., Any]) -> Any:
        return None


def _resource_version(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    return _get(obj, "metadata", "resourceVersion") or None


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {_api_error_text(exc) or exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"


class ClusterDiscovery:
    """Finds the cluster's subnets and keeps them current, in background daemon threads.

    Service subnets: ``config.service_cidr``, else the probe, else a guess from
    existing ClusterIPs (retried while the API server is unreachable). Pod
    subnets: list the nodes and/or pods the strategy needs, then watch them
    (``timeoutSeconds`` = ``watch_timeout``, resuming from the last
    resourceVersion); on 410 Gone relist at once, on other errors back off
    (doubling up to ``backoff_max``) and relist.

    ``on_change`` gets the first snapshot once everything is listed, then each
    real change; it runs on a discovery thread and must not block (the gRPC
    server passes ``lambda n: loop.call_soon_threadsafe(...)``).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        config: ManagerConfig,
        namespace: str,
        manager_pod_ip: str | None,
        on_change: Callable[[ClusterNetwork], None],
        *,
        watch_timeout: int = 60,
        request_timeout: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._config = config
        self._namespace = namespace
        self._manager_pod_ip = manager_pod_ip
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watches: dict[Kind, _RawWatch] = {}
        self._tracker: NetworkTracker | None = None
        self._started = False

    # -- public -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("ClusterDiscovery was already started")
            self._started = True
        self._spawn("tether-discovery", self._main)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop all threads; returns within ``timeout`` seconds. No on_change call starts after this."""
        self._stop.set()
        tracker = self._tracker
        if tracker is not None:
            tracker.close()
        deadline = time.monotonic() + timeout
        while True:
            # Repeat: a watch that was just being opened resets its stop flag when it starts streaming.
            with self._lock:
                watches = list(self._watches.values())
                alive = [t for t in self._threads if t.is_alive()]
            for w in watches:
                w.stop()
            if not alive or time.monotonic() >= deadline:
                break
            alive[0].join(0.05)
        if alive:
            log.warning("discovery threads still busy after stop", extra={"threads": [t.name for t in alive]})

    def snapshot(self) -> ClusterNetwork | None:
        tracker = self._tracker
        return tracker.snapshot() if tracker is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the first snapshot; True if it is there."""
        return self._ready.wait(timeout)

    # -- threads ------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _publish(self, network: ClusterNetwork) -> None:
        self._ready.set()
        self._on_change(network)

    def _main(self) -> None:
        service_subnets = self._resolve_service_subnets()
        if service_subnets is None:
            return  # stopped
        tracker = NetworkTracker(
            strategy=self._config.pod_cidr_strategy,
            on_change=self._publish,
            service_subnets=service_subnets,
            configured_pod_cidrs=self._config.pod_cidrs,
            manager_pod_ip=self._manager_pod_ip,
        )
        self._tracker = tracker
        if self._stop.is_set():
            tracker.close()
            return
        tracker.refresh()
        for kind in sorted(tracker.needed):
            self._spawn(f"tether-discovery-{kind}", lambda kind=kind: self._run_kind(tracker, kind))

    def _resolve_service_subnets(self) -> tuple[IPNetwork, ...] | None:
        backoff = self._backoff_initial
        while not self._stop.is_set():
            try:
                return discover_service_subnets(
                    self._core, self._config, self._namespace, request_timeout=self._request_timeout
                )
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("service subnet discovery failed", extra={"error": _short(exc), "retry_in": backoff})
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._backoff_max)
        return None

    def _list_func(self, kind: Kind) -> Callable[..., Any]:
        return self._core.list_node if kind is Kind.NODES else self._core.list_pod_for_all_namespaces

    def _run_kind(self, tracker: NetworkTracker, kind: Kind) -> None:
        backoff = self._backoff_initial
        gone_in_a_row = 0
        with self._lock:
            self._watches[kind] = _RawWatch()
        while not self._stop.is_set():
            try:
                items, version = _list_raw(self._list_func(kind), request_timeout=self._request_timeout)
                if self._stop.is_set():
                    break
                tracker.reset(kind, items)
                log.debug("listed", extra={"kind": str(kind), "items": len(items), "resource_version": version})
                while not self._stop.is_set():
                    started = time.monotonic()
                    version, events = self._watch_once(tracker, kind, version)
                    gone_in_a_row = 0
                    if events == 0 and time.monotonic() - started < 1.0:
                        # A server that ends watches at once must not be hammered.
                        if self._stop.wait(backoff):
                            break
                        backoff = min(backoff * 2, self._backoff_max)
                    else:
                        backoff = self._backoff_initial
                    if version is None:
                        break  # nothing to resume from: relist so no deletion is missed
                continue
            except Exception as exc:
                if self._stop.is_set():
                    break
                if isinstance(exc, ApiException) and exc.status == 410:
                    gone_in_a_row += 1
                    log.info("watch expired (410 Gone); relisting", extra={"kind": str(kind)})
                    if gone_in_a_row == 1:
                        continue  # routine after a long quiet period: relist at once, once
                elif (
                    isinstance(exc, ApiException)
                    and exc.status == 403
                    and kind is Kind.NODES
                    and (Kind.PODS in tracker.needed)
                ):
                    # Under auto the pods alone still give an answer; EKS-style RBAC often hides nodes.
                    tracker.mark_unavailable(kind, f"403 Forbidden: {_api_error_text(exc)}")
                else:
                    log.warning(
                        "list/watch failed", extra={"kind": str(kind), "error": _short(exc), "retry_in": backoff}
                    )
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._backoff_max)
        with self._lock:
            self._watches.pop(kind, None)

    def _watch_once(self, tracker: NetworkTracker, kind: Kind, version: str | None) -> tuple[str | None, int]:
        """One watch request until the server ends it; returns the last resourceVersion and the event count."""
        with self._lock:
            w = self._watches.get(kind)
        if w is None or self._stop.is_set():
            return version, 0
        kwargs: dict[str, Any] = {
            "timeout_seconds": self._watch_timeout,
            "allow_watch_bookmarks": True,
            # The read timeout only catches a server that forgets timeoutSeconds.
            "_request_timeout": (self._request_timeout, self._watch_timeout + self._request_timeout),
        }
        if version:
            kwargs["resource_version"] = version
        events = 0
        for event in w.stream(self._list_func(kind), **kwargs):
            if self._stop.is_set():
                break
            obj = event.get("raw_object")
            event_type = event.get("type", "")
            if event_type != "BOOKMARK":
                tracker.apply(kind, event_type, obj)
                events += 1
            version = _resource_version(obj) or version
        return version, events
