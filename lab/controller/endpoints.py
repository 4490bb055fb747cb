"""The endpoints and endpointslice controllers' and kube-proxy's view of Services, pure: which pods a Service
selects, its Endpoints object (ready pods as addresses, the others as notReadyAddresses), its EndpointSlices
(every selected pod with its conditions), the writes that bring the stored ones to those, and the DNAT
entries for the router's ClusterIP rules (ready pods only)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, ip_address
from typing import Any

from tether.lab.controller.rollout import is_ready, name_suffix
from tether.lab.kubeproxy import ProxyEntry
from tether.lab.topology import API_IP, API_PORT, Endpoint, Port, Service

Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"


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
    """The selected pods that have an address and have not finished (Succeeded and Failed pods serve nothing)."""
    found = [
        p
        for p in pods
        if selects(service, p)
        and (p.get("status") or {}).get("podIP")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
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


def _slice_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> list[Obj]:
    """The Service's ports as this pod serves them; a named targetPort the pod lacks is left out, as the
    endpointslice controller does (the pod stays listed, without that port)."""
    ports = []
    for port in service["spec"].get("ports") or []:
        number = target_port(port, pod)
        if number is None:
            continue
        entry: Obj = {"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")}
        if port.get("appProtocol"):
            entry["appProtocol"] = port["appProtocol"]
        ports.append(entry)
    return ports


def _slice_endpoint(service: Mapping[str, Any], pod: Mapping[str, Any]) -> Obj:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    serving = is_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    # a terminating pod is never ready, unless the Service publishes not-ready addresses
    ready = bool(service["spec"].get("publishNotReadyAddresses")) or (serving and not terminating)
    endpoint: Obj = {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", "")},
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        endpoint["hostname"] = spec["hostname"]
    return endpoint


def _slice(service: Mapping[str, Any], ports: list[Obj], endpoints: list[Obj]) -> Obj:
    meta, spec = service["metadata"], service["spec"]
    labels = dict(meta.get("labels") or {}) | {SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY}
    if spec.get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    # The controller names its slices with generateName; a name derived from the port set keeps each slice's
    # name while pods come and go.
    slice_meta: Obj = {
        "name": f"{meta['name']}-{name_suffix(json.dumps(ports, sort_keys=True))}",
        "namespace": meta["namespace"],
        "labels": labels,
    }
    if meta.get("uid"):
        slice_meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": slice_meta,
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def endpoint_slices(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Obj] | None:
    """The Service's EndpointSlices, or None without a selector (those are not the controller's).

    Every selected pod with an IPv4 address is an endpoint, ready or not (its ``conditions`` say which). Pods
    whose ports resolve differently (a named targetPort that is another number in another pod) go to one slice
    per distinct port set, as the endpointslice controller does; with no pod at all, one empty placeholder slice
    stands for the Service. Slices are not split at 100 endpoints, as the lab never has that many pods.
    """
    if not (service.get("spec") or {}).get("selector"):
        return None
    groups: dict[str, tuple[list[Obj], list[Obj]]] = {}
    for pod in _members(service, pods):
        if ip_address(pod["status"]["podIP"]).version != 4:
            continue
        ports = _slice_ports(service, pod)
        groups.setdefault(json.dumps(ports, sort_keys=True), (ports, []))[1].append(_slice_endpoint(service, pod))
    if not groups:
        return [_slice(service, [], [])]
    return [_slice(service, ports, found) for ports, found in groups.values()]


@dataclasses.dataclass(frozen=True)
class Changes:
    """The writes that bring the stored objects of one kind to the wanted ones."""

    create: tuple[Obj, ...] = ()
    replace: tuple[Obj, ...] = ()  # each carrying the stored object's resourceVersion
    delete: tuple[tuple[str, str], ...] = ()  # (namespace, name)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _replacement(wanted: Obj, have: Mapping[str, Any]) -> Obj:
    wanted["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
    return wanted


def endpoints_changes(
    services: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]
) -> Changes:
    """Endpoints to create or replace for the Services with a selector, and to delete: those of Services that
    are gone (what the endpoints controller does when a Service is deleted). Others' Endpoints (of Services
    without a selector) are left alone."""
    existing = {_key(e): e for e in current}
    create, replace = [], []
    for service in services:
        wanted = endpoints_object(service, pods)
        if wanted is None:
            continue
        have = existing.get(_key(wanted))
        if have is None:
            create.append(wanted)
        elif (have.get("subsets") or []) != wanted["subsets"]:
            replace.append(_replacement(wanted, have))
    served = {_key(s) for s in services}
    return Changes(tuple(create), tuple(replace), tuple(sorted(k for k in existing if k not in served)))


def _slice_content(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = obj["metadata"]
    return (
        meta.get("labels") or {},
        meta.get("ownerReferences") or [],
        obj.get("addressType"),
        obj.get("endpoints") or [],
        obj.get("ports") or [],
    )


def slice_changes(
    services: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]
) -> Changes:
    """EndpointSlices to create, replace and delete so that each Service with a selector has exactly its
    :func:`endpoint_slices`; the slices the controller manages (its label) of Services that are gone are deleted.
    Slices someone else manages are never touched."""
    managed: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for obj in current:
        labels = obj["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
            owner = (obj["metadata"]["namespace"], labels.get(SERVICE_NAME_LABEL, ""))
            managed.setdefault(owner, {})[obj["metadata"]["name"]] = obj
    create, replace, delete = [], [], []
    for service in services:
        wanted = endpoint_slices(service, pods)
        have = managed.pop(_key(service), {})
        if wanted is None:
            continue  # as the endpointslice controller: slices of a Service without a selector are left as they are
        for obj in wanted:
            old = have.pop(obj["metadata"]["name"], None)
            if old is None:
                create.append(obj)
            elif _slice_content(old) != _slice_content(obj):
                replace.append(_replacement(obj, old))
        delete += [(service["metadata"]["namespace"], name) for name in have]
    for (namespace, _service_name), leftovers in managed.items():
        delete += [(namespace, name) for name in leftovers]
    return Changes(tuple(create), tuple(replace), tuple(sorted(delete)))


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
