"""Setting a workload up for an intercept with the caller's own credentials (blocking; run in a thread): find
the Service and port, make the tether-agent sidecar take the app's port, point the Service's targetPort at the
agent; and the way back (``tether uninstall --agent``, ``tether manager uninstall``).

Why the Service's targetPort (and not a redirect in the pod's network namespace): it needs no privilege in
the pod (an iptables redirect needs NET_ADMIN, which many clusters forbid), changes nothing in the app, and is
undone by a patch (the original targetPort is kept in an annotation on the Service). The agent forwards to the
app's port on the pod's loopback while nobody intercepts (see :mod:`tether.manager.agent.intercept`).

Order: the workload's template is patched first (its new pods run an agent that listens on the agent port and
forwards to the app), then the Service; the pods restarting is what takes the time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tether.helper.root.kube.inject import (
    KINDS_API,
    InjectionError,
    api_reason,
    find_workload,
    patch_workload,
    uninject,
)
from tether.manager.api.sidecar import (
    SIDECAR_NAME,
    SidecarConfig,
    Workload,
    intercept_patch,
    intercept_ports_of,
    original_target_ports,
    restore_target_ports_patch,
    selects,
    target_port_patch,
    with_intercept_port,
)

log = logging.getLogger("tether.helper.root.kube.intercepts")

_MERGE = "application/merge-patch+json"
_RETRIES = 5


class InterceptSetupError(InjectionError):
    """The workload, Service or port cannot be intercepted; the text names which and why."""


@dataclass(frozen=True)
class Target:
    workload: Workload
    service: str
    service_port: int
    port_name: str
    app_port: int  # the app's container port the Service port leads to


def _services(api: kubernetes.client.ApiClient, namespace: str) -> list[Mapping[str, Any]]:
    response = kubernetes.client.CoreV1Api(api).list_namespaced_service(
        namespace, _preload_content=False, _request_timeout=30
    )
    try:
        return list(json.loads(response.data).get("items") or [])
    finally:
        response.release_conn()


def resolve(api: kubernetes.client.ApiClient, namespace: str, name: str, service: str, port: str) -> Target:
    """The Service port to intercept and the app port behind it; InterceptSetupError names what is missing."""
    workload = find_workload(api, namespace, name)
    services = [s for s in _services(api, namespace) if selects(s, workload)]
    names = sorted(s["metadata"]["name"] for s in services)
    if service:
        chosen = next((s for s in services if s["metadata"]["name"] == service), None)
        if chosen is None:
            raise InterceptSetupError(
                f'no Service "{service}" in namespace "{namespace}" selects {workload}'
                + (f" (these do: {', '.join(names)})" if names else "")
            )
    elif len(services) == 1:
        chosen = services[0]
    elif not services:
        raise InterceptSetupError(f'no Service in namespace "{namespace}" selects {workload}; nothing to intercept')
    else:
        raise InterceptSetupError(f"{workload} is selected by several Services ({', '.join(names)}); use --service")
    svc_name = chosen["metadata"]["name"]
    ports = [p for p in chosen["spec"].get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
    described = ", ".join(f"{p.get('name') or '-'}/{p['port']}" for p in ports)
    if port:
        found = next((p for p in ports if str(p["port"]) == port or p.get("name") == port), None)
        if found is None:
            raise InterceptSetupError(f'Service {namespace}/{svc_name} has no TCP port "{port}" (it has {described})')
    elif len(ports) == 1:
        found = ports[0]
    else:
        raise InterceptSetupError(
            f"Service {namespace}/{svc_name} has {len(ports)} TCP ports ({described}); name one with --port"
        )
    # A port intercepted before leads to the agent: what it led to is recorded on the Service.
    target = original_target_ports(chosen).get(str(found["port"]), found.get("targetPort", found["port"]))
    app_port = workload.container_port(target)
    if app_port is None:
        raise InterceptSetupError(
            f'Service {namespace}/{svc_name} port {found["port"]} targets "{target}", which no container of '
            f"{workload} names"
        )
    return Target(workload, svc_name, int(found["port"]), str(found.get("name") or ""), app_port)


def take_port(api: kubernetes.client.ApiClient, target: Target, config: SidecarConfig) -> tuple[int, bool]:
    """Make the agent listen for the app port and the Service lead to it: (the agent port, whether the workload's
    template changed, i.e. its pods restart). Idempotent."""
    changed = False
    for _ in range(_RETRIES):
        workload = find_workload(api, target.workload.namespace, target.workload.name, target.workload.kind)
        pairs = with_intercept_port(workload, target.app_port)
        if workload.has_sidecar(config, pairs):
            break
        if patch_workload(api, workload, intercept_patch(workload, config, pairs), "adding an intercept port to"):
            changed = True
            break
    else:
        raise InterceptSetupError(f"{target.workload} kept changing; the intercept gave up")
    agent_port = next(agent for agent, app in pairs if app == target.app_port)
    for _ in range(_RETRIES):
        service = _service(api, target.workload.namespace, target.service)
        patch = target_port_patch(service, target.service_port, agent_port)
        if patch is None or _patch_service(api, target.workload.namespace, target.service, patch):
            break
    else:
        raise InterceptSetupError(f"Service {target.workload.namespace}/{target.service} kept changing; gave up")
    log.info(
        "intercept port taken",
        extra={"workload": str(target.workload), "app_port": target.app_port, "agent_port": agent_port},
    )
    return agent_port, changed


def _service(api: kubernetes.client.ApiClient, namespace: str, name: str) -> Mapping[str, Any]:
    response = kubernetes.client.CoreV1Api(api).read_namespaced_service(
        name, namespace, _preload_content=False, _request_timeout=30
    )
    try:
        return dict(json.loads(response.data))
    finally:
        response.release_conn()


def _patch_service(api: kubernetes.client.ApiClient, namespace: str, name: str, patch: Mapping[str, Any]) -> bool:
    try:
        kubernetes.client.CoreV1Api(api).patch_namespaced_service(
            name, namespace, patch, _content_type=_MERGE, _preload_content=False, _request_timeout=30
        ).release_conn()
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise InterceptSetupError(
            f"pointing Service {namespace}/{name} at the tether-agent: {api_reason(exc)}"
        ) from None
    return True


def rollout_left(api: kubernetes.client.ApiClient, target: Target) -> int:
    """How many of the workload's pods do not take the port yet: pods without the agent listening for it, and
    pods still going away (the Service may still send them connections until they are gone)."""
    selector = ",".join(f"{k}={v}" for k, v in sorted(target.workload.labels.items()))
    response = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        target.workload.namespace, label_selector=selector, _preload_content=False, _request_timeout=30
    )
    try:
        pods = json.loads(response.data).get("items") or []
    finally:
        response.release_conn()
    left = 0
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        containers = (pod.get("spec") or {}).get("containers") or []
        sidecar = next((c for c in containers if c.get("name") == SIDECAR_NAME), None)
        if (pod.get("metadata") or {}).get("deletionTimestamp") or not any(
            app == target.app_port for _, app in intercept_ports_of(sidecar)
        ):
            left += 1
    return left


def remove_agent(api: kubernetes.client.ApiClient, workload: Workload) -> bool:
    """Give the Services that select the workload their targetPorts back, then take the agent out; whether
    anything changed."""
    changed = False
    for service in _services(api, workload.namespace):
        if not selects(service, workload):
            continue
        for _ in range(_RETRIES):
            current = _service(api, workload.namespace, service["metadata"]["name"])
            patch = restore_target_ports_patch(current)
            if patch is None:
                break
            if _patch_service(api, workload.namespace, current["metadata"]["name"], patch):
                changed = True
                break
    return uninject(api, workload.namespace, workload.name, workload.kind).changed or changed


def workloads(api: kubernetes.client.ApiClient, namespace: str | None) -> list[Workload]:
    """Every Deployment, StatefulSet and ReplicaSet (not owned by a Deployment) of the namespace (None: all)."""
    apps = kubernetes.client.AppsV1Api(api)
    found: list[Workload] = []
    for kind, (list_namespaced, list_all) in KINDS_API.items():
        call = getattr(apps, list_namespaced if namespace else list_all)
        args = (namespace,) if namespace else ()
        try:
            response = call(*args, _preload_content=False, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:  # a cluster (or the lab) that serves no such kind
                continue
            raise
        try:
            items = json.loads(response.data).get("items") or []
        finally:
            response.release_conn()
        for obj in items:
            meta = obj.get("metadata") or {}
            workload = Workload(kind, meta.get("namespace", namespace or ""), meta.get("name", ""), obj)
            if kind == "ReplicaSet" and workload.controller:
                continue
            found.append(workload)
    return sorted(found, key=lambda w: (w.namespace, w.name, w.kind))
