"""The API server's raw JSON as plain values (pure): Node and Pod objects, and a refused request's text.

List and watch results are read as raw JSON rather than as client models:
decoding every pod into pydantic models costs far more than the three fields
we read, and the strict models refuse objects that lack fields we never use.
Client models are still accepted, turned into the same JSON shape.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tether.manager.subnets import IPAddress, IPNetwork

__all__ = [
    "NodeInfo",
    "PodInfo",
    "api_error_text",
    "get_path",
    "node_info",
    "pod_info",
]

# One logger for every discovery module: its records read as one component's, whichever module wrote them.
log = logging.getLogger("tether.manager.discovery")

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


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


def get_path(data: Mapping[str, Any], *path: str) -> Any:
    """The value at ``path`` in nested JSON, or None where any step is missing or not an object."""
    for part in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def node_info(obj: Any) -> NodeInfo:
    """Extract a node's podCIDRs (``spec.podCIDRs``, else ``spec.podCIDR``) from a V1Node or its dict."""
    data = _as_dict(obj)
    name = str(get_path(data, "metadata", "name") or "")
    texts = get_path(data, "spec", "podCIDRs") or [get_path(data, "spec", "podCIDR")]
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
    key = f"{get_path(data, 'metadata', 'namespace') or ''}/{get_path(data, 'metadata', 'name') or ''}"
    entries = get_path(data, "status", "podIPs") or []
    texts = [e.get("ip") for e in entries if isinstance(e, Mapping)] or [get_path(data, "status", "podIP")]
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
        host_network=bool(get_path(data, "spec", "hostNetwork")),
        phase=str(get_path(data, "status", "phase") or ""),
    )


def api_error_text(exc: ApiException) -> str:
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
                for cause in get_path(status, "details", "causes") or []:
                    if isinstance(cause, Mapping):
                        parts.append(str(cause.get("message") or ""))
            else:
                parts.append(str(body))
    if exc.reason:
        parts.append(str(exc.reason))
    return "\n".join(p for p in parts if p)
