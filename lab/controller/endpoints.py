"""The endpoints controller's and kube-proxy's view of Services, pure: which pods a Service selects, its
Endpoints object (ready pods as addresses, the others as notReadyAddresses), and the DNAT entries for the
router's ClusterIP rules (ready pods only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from typing import Any

from tether.lab.controller.rollout import is_ready
from tether.lab.kubeproxy import ProxyEntry
from tether.lab.topology import API_IP, API_PORT, Endpoint, Port, Service

Obj = dict[str, Any]


def selects(service: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector or pod["metadata"].get("namespace") != service["metadata"].get("namespace"):
        return False
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def target_port(port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """The pod port a Service port leads to: a number, or a named container port (None if the pod has none)."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target and cport.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(cport["containerPort"])
    return None


def _address(pod: Mapping[str, Any]) -> Obj:
    meta = pod["metadata"]
    target = {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", "")}
    address: Obj = {"ip": pod["status"]["podIP"], "targetRef": target}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        address["nodeName"] = node
    return address


def _members(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    found = [p for p in pods if selects(service, p) and (p.get("status") or {}).get("podIP")]
    return sorted(found, key=lambda p: p["metadata"]["name"])


def endpoints_object(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Obj | None:
    """The Service's Endpoints (one subset per distinct set of resolved ports), or None without a selector."""
    if not (service.get("spec") or {}).get("selector"):
        return None
    subsets: dict[tuple[tuple[str, int, str], ...], Obj] = {}
    for pod in _members(service, pods):
        ports = []
        for port in service["spec"].get("ports") or []:
            number = target_port(port, pod)
            if number is not None:
                ports.append((port.get("name", ""), number, port.get("protocol", "TCP")))
        if not ports:
            continue
        subset = subsets.setdefault(
            tuple(ports),
            {"ports": [{"name": n, "port": p, "protocol": proto} if n else {"port": p, "protocol": proto}
                       for n, p, proto in ports]},
        )  # fmt: skip
        subset.setdefault("addresses" if is_ready(pod) else "notReadyAddresses", []).append(_address(pod))
    meta = service["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta.get("labels") or {})},
        "subsets": list(subsets.values()),
    }


def _service(service: Mapping[str, Any]) -> Service:
    meta, spec = service["metadata"], service["spec"]
    ports = tuple(Port(p.get("name", ""), int(p["port"]), 0, p.get("protocol", "TCP")) for p in spec.get("ports") or [])
    return Service(meta["namespace"], meta["name"], IPv4Address(spec["clusterIP"]), ports)


def proxy_entries(services: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> list[ProxyEntry]:
    """What kube-proxy DNATs: each ClusterIP port to its ready pods; ``kubernetes`` to the API server."""
    entries: list[ProxyEntry] = []
    for obj in services:
        cluster_ip = (obj.get("spec") or {}).get("clusterIP")
        if not cluster_ip or cluster_ip == "None":
            continue
        service = _service(obj)
        meta = obj["metadata"]
        ready = [p for p in _members(obj, pods) if is_ready(p)]
        for port, raw in zip(service.ports, obj["spec"].get("ports") or [], strict=True):
            if (meta["namespace"], meta["name"]) == ("default", "kubernetes"):
                eps = [Endpoint(API_IP, API_PORT)]
            else:
                eps = [
                    Endpoint(IPv4Address(p["status"]["podIP"]), number)
                    for p in ready
                    if (number := target_port(raw, p)) is not None
                ]
            entries.append(ProxyEntry(service, port, tuple(eps)))
    return entries
