"""What kube-apiserver prints for each kind in a Table: its columns and each object's cells. Pure.

The columns, their priorities (1: only with ``-o wide``) and the cell texts follow the API server's own
printers, so that ``kubectl get`` against the lab reads like it does against a real cluster.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.selectors import selector_text

NONE = "<none>"
UNSET = "<unset>"  # what the slices' printer says where the others say <none>


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    format: str = ""
    priority: int = 0
    description: str = ""

    def definition(self) -> Obj:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def human_duration(seconds: float) -> str:
    """An age the way kubectl shows it: 45s, 3m20s, 15m, 5h10m, 20h, 3d4h, 30d, 2y10d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    try:
        created = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration((now - created).total_seconds())


def _labels_text(labels: Mapping[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


# -- pods ----------------------------------------------------------------------------------------


def _container_reason(status: Mapping[str, Any]) -> str | None:
    state = status.get("state") or {}
    if (state.get("waiting") or {}).get("reason"):
        return state["waiting"]["reason"]
    terminated = state.get("terminated")
    if terminated:
        if terminated.get("reason"):
            return terminated["reason"]
        if terminated.get("signal"):
            return f"Signal:{terminated['signal']}"
        return f"ExitCode:{terminated.get('exitCode', 0)}"
    return None


def _init_reason(pod: Obj) -> str | None:
    """Init:N/M (or the failing init container's reason) while init containers have not all finished."""
    spec_inits = (pod.get("spec") or {}).get("initContainers") or []
    for i, status in enumerate((pod.get("status") or {}).get("initContainerStatuses") or []):
        state = status.get("state") or {}
        terminated = state.get("terminated")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            return "Init:" + (terminated.get("reason") or f"ExitCode:{terminated.get('exitCode')}")
        waiting_reason = (state.get("waiting") or {}).get("reason")
        if waiting_reason and waiting_reason != "PodInitializing":
            return f"Init:{waiting_reason}"
        return f"Init:{i}/{len(spec_inits)}"
    return None


def pod_status_text(pod: Obj) -> str:
    """The STATUS column: the phase, or what keeps the pod from running (ImagePullBackOff, Init:0/1, ...)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    init = _init_reason(pod)
    if init is not None:
        reason = init
    else:
        running = False
        for container in reversed(status.get("containerStatuses") or []):
            found = _container_reason(container)
            if found is not None:
                reason = found
            elif (container.get("state") or {}).get("running") and container.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def pod_cells(pod: Obj, now: datetime.datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        pod_status_text(pod),
        str(restarts),
        age(pod, now),
        status.get("podIP") or NONE,
        spec.get("nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        f"{len(gates)}/{len(gates)}" if gates else NONE,
    ]


POD_COLUMNS = (
    Column("Name", format="name"),
    Column("Ready"),
    Column("Status"),
    Column("Restarts", type="string"),
    Column("Age"),
    Column("IP", priority=1),
    Column("Node", priority=1),
    Column("Nominated Node", priority=1),
    Column("Readiness Gates", priority=1),
)

# -- services ------------------------------------------------------------------------------------


def _external_ip(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    external = list(spec.get("externalIPs") or [])
    kind = spec.get("type") or "ClusterIP"
    if kind == "ExternalName":
        return spec.get("externalName") or NONE
    if kind == "LoadBalancer":
        ingress = [i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
        found = [i for i in ingress + external if i]
        return ",".join(found) if found else "<pending>"
    return ",".join(external) or NONE


def _ports_text(ports: list[Mapping[str, Any]]) -> str:
    texts = []
    for port in ports:
        node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
        texts.append(f"{port.get('port')}{node_port}/{port.get('protocol') or 'TCP'}")
    return ",".join(texts) or NONE


def service_cells(svc: Obj, now: datetime.datetime) -> list[Any]:
    spec, status = svc.get("spec") or {}, svc.get("status") or {}
    return [
        svc["metadata"]["name"],
        spec.get("type") or "ClusterIP",
        spec.get("clusterIP") or NONE,
        _external_ip(spec, status),
        _ports_text(spec.get("ports") or []),
        age(svc, now),
        _labels_text(spec.get("selector")),
    ]


SERVICE_COLUMNS = (
    Column("Name", format="name"),
    Column("Type"),
    Column("Cluster-IP"),
    Column("External-IP"),
    Column("Port(s)"),
    Column("Age"),
    Column("Selector", priority=1),
)

# -- deployments ---------------------------------------------------------------------------------


def deployment_cells(deploy: Obj, now: datetime.datetime) -> list[Any]:
    spec, status = deploy.get("spec") or {}, deploy.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    desired = spec.get("replicas", 1)
    return [
        deploy["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{desired}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        age(deploy, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        selector_text(spec.get("selector")) or NONE,
    ]


DEPLOYMENT_COLUMNS = (
    Column("Name", format="name"),
    Column("Ready"),
    Column("Up-to-date", type="integer"),
    Column("Available", type="integer"),
    Column("Age"),
    Column("Containers", priority=1),
    Column("Images", priority=1),
    Column("Selector", priority=1),
)

# -- endpoints, namespaces, configmaps, nodes ----------------------------------------------------

_MAX_ENDPOINTS = 3


def endpoints_text(endpoints: Obj) -> str:
    """``ip:port`` for every ready address and port, the first three, then ``+ N more...``."""
    texts: list[str] = []
    for subset in endpoints.get("subsets") or []:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        if not ports:
            texts += addresses
        for port in ports:
            texts += [f"{ip}:{port.get('port')}" for ip in addresses]
    return _first_three(texts, NONE)


def _first_three(texts: list[str], empty: str) -> str:
    """The first three texts, then ``+ N more...``; ``empty`` for none."""
    if not texts:
        return empty
    shown = ",".join(texts[:_MAX_ENDPOINTS])
    return shown + (f" + {len(texts) - _MAX_ENDPOINTS} more..." if len(texts) > _MAX_ENDPOINTS else "")


def endpoints_cells(endpoints: Obj, now: datetime.datetime) -> list[Any]:
    return [endpoints["metadata"]["name"], endpoints_text(endpoints), age(endpoints, now)]


ENDPOINTS_COLUMNS = (Column("Name", format="name"), Column("Endpoints"), Column("Age"))


def _slice_port(port: Mapping[str, Any]) -> str:
    if port.get("port") is not None:
        return str(port["port"])
    return "*" if port.get("name") is None else str(port["name"])


def endpoint_slice_cells(slice_: Obj, now: datetime.datetime) -> list[Any]:
    """Every address of every endpoint, ready or not, and each port's number (its name, or ``*``, without one)."""
    ports = [_slice_port(p) for p in slice_.get("ports") or []]
    addresses = [a for e in slice_.get("endpoints") or [] for a in e.get("addresses") or []]
    return [
        slice_["metadata"]["name"],
        slice_.get("addressType", ""),
        _first_three(ports, UNSET),
        _first_three(addresses, UNSET),
        age(slice_, now),
    ]


ENDPOINT_SLICE_COLUMNS = (
    Column("Name", format="name"),
    Column("AddressType"),
    Column("Ports"),
    Column("Endpoints"),
    Column("Age"),
)


def namespace_cells(namespace: Obj, now: datetime.datetime) -> list[Any]:
    phase = (namespace.get("status") or {}).get("phase") or "Active"
    return [namespace["metadata"]["name"], phase, age(namespace, now)]


NAMESPACE_COLUMNS = (Column("Name", format="name"), Column("Status"), Column("Age"))


def configmap_cells(configmap: Obj, now: datetime.datetime) -> list[Any]:
    count = len(configmap.get("data") or {}) + len(configmap.get("binaryData") or {})
    return [configmap["metadata"]["name"], count, age(configmap, now)]


CONFIGMAP_COLUMNS = (Column("Name", format="name"), Column("Data", type="integer"), Column("Age"))


def _node_status(node: Obj) -> str:
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    states = ["Ready" if conditions.get("Ready") == "True" else "NotReady"] if "Ready" in conditions else ["Unknown"]
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    return ",".join(states)


def _node_roles(labels: Mapping[str, str]) -> str:
    roles = {k.removeprefix("node-role.kubernetes.io/") for k in labels if k.startswith("node-role.kubernetes.io/")}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return ",".join(sorted(r for r in roles if r)) or NONE


def _node_address(node: Obj, kind: str) -> str:
    found = [a.get("address") for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == kind]
    return found[0] if found else NONE


def node_cells(node: Obj, now: datetime.datetime) -> list[Any]:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return [
        node["metadata"]["name"],
        _node_status(node),
        _node_roles(node["metadata"].get("labels") or {}),
        age(node, now),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NODE_COLUMNS = (
    Column("Name", format="name"),
    Column("Status"),
    Column("Roles"),
    Column("Age"),
    Column("Version"),
    Column("Internal-IP", priority=1),
    Column("External-IP", priority=1),
    Column("OS-Image", priority=1),
    Column("Kernel-Version", priority=1),
    Column("Container-Runtime", priority=1),
)


def default_cells(obj: Obj, now: datetime.datetime) -> list[Any]:
    """What the API server prints for a kind without a printer of its own."""
    return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp")]


DEFAULT_COLUMNS = (Column("Name", format="name"), Column("Created At", type="date"))

Printer = tuple[tuple[Column, ...], Callable[[Obj, datetime.datetime], list[Any]]]
PRINTERS: dict[str, Printer] = {
    "Pod": (POD_COLUMNS, pod_cells),
    "Service": (SERVICE_COLUMNS, service_cells),
    "Deployment": (DEPLOYMENT_COLUMNS, deployment_cells),
    "Endpoints": (ENDPOINTS_COLUMNS, endpoints_cells),
    "EndpointSlice": (ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells),
    "Namespace": (NAMESPACE_COLUMNS, namespace_cells),
    "ConfigMap": (CONFIGMAP_COLUMNS, configmap_cells),
    "Node": (NODE_COLUMNS, node_cells),
}


def printer_of(kind: str) -> Printer:
    return PRINTERS.get(kind, (DEFAULT_COLUMNS, default_cells))
