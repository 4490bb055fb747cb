"""Agent injection with the caller's own credentials: patch the tether-agent sidecar into a workload's pod
template, or take it out again (blocking; run in a thread).

Why here and not in the traffic-manager: clients reach the manager through the API server's port-forward,
so the manager cannot tell which Kubernetes user asks, and patching with its own service account let any
client change any workload. Patching with the credentials of the connect request leaves the decision to
the API server and the user's RBAC (``patch`` on the workload), for every way a kubeconfig authenticates
(tokens, client certificates, OIDC, exec plugins); a SubjectAccessReview by the manager would need the
user's identity, which only bearer tokens could prove.

:func:`inject` patches a Deployment, StatefulSet or ReplicaSet (strategic merge, with the object's
resourceVersion as a precondition, retried on conflict) with the patch :mod:`tether.manager.api.sidecar`
builds; injecting twice changes nothing. :func:`uninject` removes it. Changing the template makes the
workload's controller replace its pods, which then run an agent. A refusal by the API server (403) is an
:class:`InjectionError` naming the workload and the permission it takes. Objects are read as raw JSON.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.sidecar import (
    DEFAULT_AGENT_IMAGE,
    KINDS,
    SidecarConfig,
    Workload,
    inject_patch,
    manager_address,
    uninject_patch,
)

log = logging.getLogger("tether.helper.root.kube.inject")

REQUEST_TIMEOUT = 30
_CONFLICT_RETRIES = 5
_STRATEGIC = "application/strategic-merge-patch+json"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# kind -> (the AppsV1Api methods that read and patch it, its resource name for RBAC)
_METHODS = {
    "Deployment": ("read_namespaced_deployment", "patch_namespaced_deployment", "deployments"),
    "StatefulSet": ("read_namespaced_stateful_set", "patch_namespaced_stateful_set", "statefulsets"),
    "ReplicaSet": ("read_namespaced_replica_set", "patch_namespaced_replica_set", "replicasets"),
}


# kind -> the AppsV1Api methods that list it in a namespace and in all namespaces
KINDS_API = {
    "Deployment": ("list_namespaced_deployment", "list_deployment_for_all_namespaces"),
    "StatefulSet": ("list_namespaced_stateful_set", "list_stateful_set_for_all_namespaces"),
    "ReplicaSet": ("list_namespaced_replica_set", "list_replica_set_for_all_namespaces"),
}


class InjectionError(Exception):
    """Injection cannot be done; the text names the workload and why."""


class UnknownWorkloadError(InjectionError):
    pass


class InjectionForbiddenError(InjectionError):
    """The API server refused the caller (403): they may not read or patch the workload."""


@dataclass(frozen=True)
class InjectResult:
    workload: Workload
    changed: bool


def check_names(namespace: str, name: str, kind: str = "") -> None:
    if len(namespace) > 63 or not _LABEL.fullmatch(namespace):
        raise InjectionError(f'namespace "{namespace}" is not a valid DNS-1123 label')
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise InjectionError(f'workload name "{name}" is not a valid DNS-1123 subdomain')
    if kind and kind not in KINDS:
        raise InjectionError(f'workload kind "{kind}" is not one of {", ".join(KINDS)}')


def _call(api: kubernetes.client.ApiClient, kind: str, which: int, *args: Any, **kwargs: Any) -> Mapping[str, Any]:
    method = getattr(kubernetes.client.AppsV1Api(api), _METHODS[kind][which])
    response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def find_workload(api: kubernetes.client.ApiClient, namespace: str, name: str, kind: str = "") -> Workload:
    """The workload named so (of ``kind``, or the first kind that has one); UnknownWorkloadError if none."""
    check_names(namespace, name, kind)
    for candidate in (kind,) if kind else KINDS:
        try:
            obj = _call(api, candidate, 0, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise _refusal(exc, "get", Workload(candidate, namespace, name, {}), "reading") from None
        return Workload(candidate, namespace, name, obj)
    kinds = kind or "Deployment, StatefulSet or ReplicaSet"
    raise UnknownWorkloadError(f'no {kinds} named "{name}" in namespace "{namespace}"')


def inject(
    api: kubernetes.client.ApiClient, namespace: str, name: str, kind: str = "", config: SidecarConfig | None = None
) -> InjectResult:
    """Make the workload's pod template hold the tether-agent sidecar (exactly once); idempotent."""
    config = config or SidecarConfig()
    for _ in range(_CONFLICT_RETRIES):
        workload = find_workload(api, namespace, name, kind)
        if workload.controller and workload.kind == "ReplicaSet":
            raise InjectionError(f"{workload} is managed by {workload.controller}; inject into that instead")
        if workload.has_sidecar(config):
            return InjectResult(workload, changed=False)
        if patch_workload(api, workload, inject_patch(workload, config), "injecting the tether-agent into"):
            log.info("injected tether-agent", extra={"workload": str(workload), "image": config.image})
            return InjectResult(workload, changed=True)
    raise InjectionError(f"{kind or 'workload'} {namespace}/{name} kept changing; injection gave up")


def uninject(api: kubernetes.client.ApiClient, namespace: str, name: str, kind: str = "") -> InjectResult:
    """Remove the tether-agent sidecar and its annotation from the workload's pod template; idempotent."""
    for _ in range(_CONFLICT_RETRIES):
        workload = find_workload(api, namespace, name, kind)
        if workload.sidecar is None and workload.annotation is None:
            return InjectResult(workload, changed=False)
        if patch_workload(api, workload, uninject_patch(workload), "removing the tether-agent from"):
            log.info("removed tether-agent", extra={"workload": str(workload)})
            return InjectResult(workload, changed=True)
    raise InjectionError(f"{kind or 'workload'} {namespace}/{name} kept changing; removing the agent gave up")


def patch_workload(api: kubernetes.client.ApiClient, workload: Workload, patch: Mapping[str, Any], doing: str) -> bool:
    """Apply a strategic merge patch; False when the object changed meanwhile (conflict: read it again)."""
    try:
        _call(api, workload.kind, 1, workload.name, workload.namespace, patch, _content_type=_STRATEGIC)
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status == 404:
            raise UnknownWorkloadError(f"{workload} was deleted") from None
        raise _refusal(exc, "patch", workload, doing) from None
    return True


def _refusal(exc: ApiException, verb: str, workload: Workload, doing: str) -> InjectionError:
    if exc.status == 403:
        resource = _METHODS[workload.kind][2]
        return InjectionForbiddenError(
            f"{doing} {workload} needs permission to {verb} {resource}.apps in namespace "
            f'"{workload.namespace}", which your Kubernetes credentials lack: {api_reason(exc)}'
        )
    return InjectionError(f"{doing} {workload}: {api_reason(exc)}")


def api_reason(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {message or exc.reason}"


def sidecar_config(info: mpb.ClusterInfo, manager_namespace: str) -> SidecarConfig:
    """The sidecar the manager advertises, with defaults for what an older manager leaves out."""
    advertised = info.agent_sidecar
    domain = info.dns.cluster_domain or "cluster.local"
    return SidecarConfig(
        image=advertised.image or DEFAULT_AGENT_IMAGE,
        manager=advertised.manager_address or manager_address(manager_namespace, domain, info.manager_port or 8081),
    )


def ensure_agents(
    configuration: kubernetes.client.Configuration,
    workloads: Sequence[tuple[str, str, str]],
    config: SidecarConfig,
) -> list[str]:
    """Inject the sidecar into each (namespace, name, kind) that has none, with the caller's credentials.

    A sidecar that is there but differs (another image, after an upgrade) is left alone: replacing it
    restarts the workload's pods, which a connect should not do to a workload that has an agent.
    Returns one line per injected workload (its agent arrives as its pods restart: pending until then).
    Raises InjectionError at the first refusal, after taking back what this call injected before it, so
    that a refused connect leaves no workload half-changed.
    """
    done: list[str] = []
    patched: list[Workload] = []
    with kubernetes.client.ApiClient(configuration) as api:
        try:
            for namespace, name, kind in dict.fromkeys(workloads):
                if find_workload(api, namespace, name, kind).sidecar is not None:
                    continue
                result = inject(api, namespace, name, kind, config)
                if result.changed:
                    patched.append(result.workload)
                    done.append(
                        f"injected the tether-agent sidecar into {result.workload} with your credentials; "
                        "its agent arrives as its pods restart"
                    )
        except InjectionError:
            for workload in reversed(patched):
                try:
                    uninject(api, workload.namespace, workload.name, workload.kind)
                except (InjectionError, ApiException) as exc:
                    log.warning("could not take the tether-agent back out of %s: %s", workload, exc)
            raise
    return done
