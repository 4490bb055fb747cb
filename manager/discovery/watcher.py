"""The background list/watch: :class:`ClusterDiscovery` keeps the cluster's subnets current in daemon threads.

It resolves the service subnets once (:mod:`tether.manager.discovery.kubeapi`),
then lists and watches the nodes and/or pods the strategy needs with the
official (synchronous) client, one thread per resource, feeding a
:class:`~tether.manager.discovery.tracker.NetworkTracker`. Watch events are
read as raw JSON, like lists (see :mod:`tether.manager.discovery.decode`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tether.manager.config import ManagerConfig
from tether.manager.discovery.decode import api_error_text, get_path
from tether.manager.discovery.kubeapi import discover_service_subnets, list_raw
from tether.manager.discovery.strategy import Kind
from tether.manager.discovery.tracker import ClusterNetwork, NetworkTracker
from tether.manager.subnets import IPNetwork

__all__ = ["ClusterDiscovery"]

log = logging.getLogger("tether.manager.discovery")


class _RawWatch(watch.Watch):
    """A Watch that yields objects as dicts (``raw_object``) instead of decoding them into models."""

    def get_return_type(self, func: Callable[..., Any]) -> Any:
        return None


def _resource_version(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    return get_path(obj, "metadata", "resourceVersion") or None


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {api_error_text(exc) or exc.reason}".strip()
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
                items, version = list_raw(self._list_func(kind), request_timeout=self._request_timeout)
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
                    tracker.mark_unavailable(kind, f"403 Forbidden: {api_error_text(exc)}")
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
