"""What discovery publishes (:class:`ClusterNetwork`) and the in-memory state it is computed from.

:class:`NetworkTracker` applies list results and watch events to maps of nodes
and pods and publishes when the network really changes. No I/O and no threads
of its own: whoever lists and watches (:mod:`tether.manager.discovery.watcher`,
or a test) feeds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.manager.config import PodCIDRStrategy
from tether.manager.discovery.decode import NodeInfo, PodInfo, node_info, pod_info
from tether.manager.discovery.strategy import Kind, decide_pod_subnets, needed_kinds, parse_pod_ip
from tether.manager.subnets import IPAddress, IPNetwork, sort_key

__all__ = ["ClusterNetwork", "NetworkTracker"]

log = logging.getLogger("tether.manager.discovery")


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
        self._manager_ip = parse_pod_ip(manager_pod_ip)
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
