"""Agent injection: add the tether-agent sidecar to a workload's pod template, or take it out again.

:func:`inject` patches a Deployment, StatefulSet or ReplicaSet through the API (strategic merge, with
the object's resourceVersion as a precondition, retried on conflict) so that its pod template holds
one ``tether-agent`` container, configured from the downward API (POD_NAME, POD_NAMESPACE, POD_IP)
and pointed at the manager's Service, a projected service-account token volume for the manager's
audience (the agent proves its pod with it), and an annotation recording what was injected. Injecting twice
changes nothing; :func:`uninject` removes both. Changing the template makes the workload's controller
replace its pods, which then run an agent.

:class:`AgentInjector` is the manager's side: when a client asks for a workload that has no live agent
and injection is enabled (``AGENT_INJECTION``; off unless asked for, because it restarts a user's
pods), it injects (once per workload at a time, off the event loop) and says what happened, which
becomes the text of the client's rejected dial.

Objects are read as raw JSON rather than client models, as in :mod:`tether.manager.discovery.decode`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tether.manager.agent.token import DEFAULT_TOKEN_FILE
from tether.manager.agentauth import AGENT_TOKEN_AUDIENCE
from tether.manager.api.version import __version__

log = logging.getLogger("tether.manager.inject")

SIDECAR_NAME = "tether-agent"
#: On the pod template: what was injected (JSON: image, manager, by). Pods inherit it.
ANNOTATION = "tether.dev/agent"
KINDS = ("Deployment", "StatefulSet", "ReplicaSet")
DEFAULT_AGENT_IMAGE = f"tether-manager:{__version__}"  # the manager's image ships tether-agent too
MANAGER_SERVICE = "tether-manager"
TOKEN_VOLUME = "tether-agent-token"
TOKEN_DIR = DEFAULT_TOKEN_FILE.parent
TOKEN_PATH = DEFAULT_TOKEN_FILE.name
_CONFLICT_RETRIES = 5
_STRATEGIC = "application/strategic-merge-patch+json"
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# kind -> the AppsV1Api methods that read and patch it
_METHODS = {
    "Deployment": ("read_namespaced_deployment", "patch_namespaced_deployment"),
    "StatefulSet": ("read_namespaced_stateful_set", "patch_namespaced_stateful_set"),
    "ReplicaSet": ("read_namespaced_replica_set", "patch_namespaced_replica_set"),
}


class InjectionError(Exception):
    """Injection cannot be done; the text names the workload and why."""


class UnknownWorkloadError(InjectionError):
    pass


@dataclass(frozen=True)
class SidecarConfig:
    image: str = DEFAULT_AGENT_IMAGE
    #: HOST:PORT the agent dials: the manager's Service, see :func:`manager_address`
    manager: str = f"{MANAGER_SERVICE}.tether.svc.cluster.local:8081"
    pull_policy: str = "IfNotPresent"
    log_format: str = "json"
    #: the projected service-account token the agent proves its pod with (see tether.manager.agentauth)
    token_audience: str = AGENT_TOKEN_AUDIENCE
    token_expiration: int = 3600  # seconds; the kubelet renews it well before


@dataclass(frozen=True)
class Workload:
    kind: str
    namespace: str
    name: str
    obj: Mapping[str, Any]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def resource_version(self) -> str:
        return str(self.obj.get("metadata", {}).get("resourceVersion") or "")

    @property
    def template(self) -> Mapping[str, Any]:
        return self.obj.get("spec", {}).get("template") or {}

    @property
    def containers(self) -> list[Mapping[str, Any]]:
        return list(self.template.get("spec", {}).get("containers") or [])

    @property
    def sidecar(self) -> Mapping[str, Any] | None:
        return next((c for c in self.containers if c.get("name") == SIDECAR_NAME), None)

    def volume(self, name: str) -> Mapping[str, Any] | None:
        volumes = self.template.get("spec", {}).get("volumes") or []
        return next((v for v in volumes if v.get("name") == name), None)

    @property
    def annotation(self) -> str | None:
        return (self.template.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)

    @property
    def controller(self) -> str | None:
        """The kind/name of a controller that owns this workload (a Deployment owning a ReplicaSet)."""
        for ref in self.obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller"):
                return f"{ref.get('kind')} {self.namespace}/{ref.get('name')}"
        return None


@dataclass(frozen=True)
class InjectResult:
    workload: Workload
    changed: bool


def manager_address(namespace: str, cluster_domain: str = "cluster.local", port: int = 8081) -> str:
    """The manager's Service DNS name and gRPC port, as a sidecar in any namespace dials it."""
    return f"{MANAGER_SERVICE}.{namespace}.svc.{cluster_domain.strip('.')}:{port}"


def check_names(namespace: str, name: str, kind: str = "") -> None:
    if len(namespace) > 63 or not _LABEL.fullmatch(namespace):
        raise InjectionError(f'namespace "{namespace}" is not a valid DNS-1123 label')
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise InjectionError(f'workload name "{name}" is not a valid DNS-1123 subdomain')
    if kind and kind not in KINDS:
        raise InjectionError(f'workload kind "{kind}" is not one of {", ".join(KINDS)}')


def sidecar_container(workload: Workload | tuple[str, str], config: SidecarConfig) -> dict[str, Any]:
    """The tether-agent container for a workload (or a (kind, name) pair)."""
    kind, name = (workload.kind, workload.name) if isinstance(workload, Workload) else workload

    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    return {
        "name": SIDECAR_NAME,
        "image": config.image,
        "imagePullPolicy": config.pull_policy,
        "command": ["tether-agent"],
        "args": [
            *("--manager", config.manager, "--workload", name, "--kind", kind),
            *("--token-file", str(TOKEN_DIR / TOKEN_PATH), "--log-format", config.log_format),
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
        ],
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": str(TOKEN_DIR), "readOnly": True}],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def token_volume(config: SidecarConfig) -> dict[str, Any]:
    """The pod volume holding the agent's projected service-account token, for the manager's audience."""
    token = {"audience": config.token_audience, "expirationSeconds": config.token_expiration, "path": TOKEN_PATH}
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def annotation_value(config: SidecarConfig) -> str:
    """What the annotation records about an injection."""
    return json.dumps({"image": config.image, "manager": config.manager, "by": f"tether-manager {__version__}"})


def _call(api: client.ApiClient, kind: str, which: int, *args: Any, **kwargs: Any) -> Mapping[str, Any]:
    method = getattr(client.AppsV1Api(api), _METHODS[kind][which])
    response = method(*args, _preload_content=False, _request_timeout=30, **kwargs)
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def find_workload(api: client.ApiClient, namespace: str, name: str, kind: str = "") -> Workload:
    """The workload named so (of ``kind``, or the first kind that has one); UnknownWorkloadError if none."""
    check_names(namespace, name, kind)
    for candidate in (kind,) if kind else KINDS:
        try:
            obj = _call(api, candidate, 0, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise InjectionError(f"reading {candidate} {namespace}/{name}: {_api_reason(exc)}") from None
        return Workload(candidate, namespace, name, obj)
    kinds = kind or "Deployment, StatefulSet or ReplicaSet"
    raise UnknownWorkloadError(f'no {kinds} named "{name}" in namespace "{namespace}"')


def inject(
    api: client.ApiClient, namespace: str, name: str, kind: str = "", config: SidecarConfig | None = None
) -> InjectResult:
    """Make the workload's pod template hold the tether-agent sidecar (exactly once); idempotent."""
    config = config or SidecarConfig()
    for _ in range(_CONFLICT_RETRIES):
        workload = find_workload(api, namespace, name, kind)
        if workload.controller and workload.kind == "ReplicaSet":
            raise InjectionError(f"{workload} is managed by {workload.controller}; inject into that instead")
        wanted = sidecar_container(workload, config)
        volume = token_volume(config)
        if (
            _same(workload.sidecar, wanted)
            and _same(workload.volume(TOKEN_VOLUME), volume)
            and workload.annotation == annotation_value(config)
        ):
            return InjectResult(workload, changed=False)
        patch = {
            "metadata": {"resourceVersion": workload.resource_version},
            "spec": {
                "template": {
                    "metadata": {"annotations": {ANNOTATION: annotation_value(config)}},
                    # keyed by name: adds the sidecar, or brings an existing one up to date
                    "spec": {"containers": [wanted], "volumes": [volume]},
                }
            },
        }
        if _patch(api, workload, patch):
            log.info("injected tether-agent", extra={"workload": str(workload), "image": config.image})
            return InjectResult(workload, changed=True)
    raise InjectionError(f"{kind or 'workload'} {namespace}/{name} kept changing; injection gave up")


def uninject(api: client.ApiClient, namespace: str, name: str, kind: str = "") -> InjectResult:
    """Remove the tether-agent sidecar and its annotation from the workload's pod template; idempotent."""
    for _ in range(_CONFLICT_RETRIES):
        workload = find_workload(api, namespace, name, kind)
        if workload.sidecar is None and workload.annotation is None and workload.volume(TOKEN_VOLUME) is None:
            return InjectResult(workload, changed=False)
        patch = {
            "metadata": {"resourceVersion": workload.resource_version},
            "spec": {
                "template": {
                    "metadata": {"annotations": {ANNOTATION: None}},
                    "spec": {
                        "containers": [{"name": SIDECAR_NAME, "$patch": "delete"}],
                        "volumes": [{"name": TOKEN_VOLUME, "$patch": "delete"}],
                    },
                }
            },
        }
        if _patch(api, workload, patch):
            log.info("removed tether-agent", extra={"workload": str(workload)})
            return InjectResult(workload, changed=True)
    raise InjectionError(f"{kind or 'workload'} {namespace}/{name} kept changing; removing the agent gave up")


def _patch(api: client.ApiClient, workload: Workload, patch: Mapping[str, Any]) -> bool:
    """Apply a strategic merge patch; False when the object changed meanwhile (conflict: read it again)."""
    try:
        _call(api, workload.kind, 1, workload.name, workload.namespace, patch, _content_type=_STRATEGIC)
    except ApiException as exc:
        if exc.status == 409:
            return False
        if exc.status == 404:
            raise UnknownWorkloadError(f"{workload} was deleted") from None
        raise InjectionError(f"patching {workload}: {_api_reason(exc)}") from None
    return True


def _same(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    return current is not None and _covers(current, wanted)


def _covers(current: Any, wanted: Any) -> bool:
    """Whether ``current`` holds everything ``wanted`` sets. The API server fills defaults
    (terminationMessagePath, fieldRef.apiVersion ...), so only what we set is compared."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(k in current and _covers(current[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(_covers(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)


def _api_reason(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {message or exc.reason}"


# --- the manager's side ---------------------------------------------------------------------------


class AgentInjector:
    """Explains a workload without a live agent to the client, injecting one first when enabled."""

    def __init__(
        self,
        api: client.ApiClient | None,
        config: SidecarConfig,
        *,
        enabled: bool,
        timeout: float = 5.0,
        remember: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.config = config
        self.enabled = enabled and api is not None
        self.timeout = timeout
        self.remember = remember
        self._clock = clock
        self._pending: dict[tuple[str, str, str], asyncio.Future[str]] = {}
        self._answers: dict[tuple[str, str, str], tuple[float, str]] = {}

    async def explain_missing(self, key: tuple[str, str, str]) -> str:
        namespace, name, kind = key
        if not self.enabled:
            return "none is running in its pods, and agent injection is off on the manager (AGENT_INJECTION)"
        answer = self._answers.get(key)
        if answer is not None and self._clock() - answer[0] < self.remember:
            return answer[1]  # a burst of connections costs one injection
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._inject, namespace, name, kind))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            return f"injecting a tether-agent into {kind or 'workload'} {namespace}/{name} is still in progress"

    def _settle(self, key: tuple[str, str, str], task: asyncio.Future[str]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._answers[key] = (self._clock(), task.result())

    def _inject(self, namespace: str, name: str, kind: str) -> str:
        assert self.api is not None
        try:
            result = inject(self.api, namespace, name, kind, self.config)
        except UnknownWorkloadError as exc:
            return str(exc)
        except InjectionError as exc:
            log.warning("agent injection failed", extra={"workload": f"{namespace}/{name}", "error": str(exc)})
            return f"agent injection failed: {exc}"
        except Exception as exc:  # the API server unreachable, and the like
            log.warning("agent injection failed", extra={"workload": f"{namespace}/{name}", "error": repr(exc)})
            return f"agent injection into {namespace}/{name} failed: {exc}"
        if result.changed:
            return f"injected the tether-agent sidecar into {result.workload}; its pods get an agent as they restart"
        return (
            f"{result.workload} has the tether-agent sidecar, but no agent of it has arrived "
            "(are its pods restarting, or failing to reach the manager?)"
        )
