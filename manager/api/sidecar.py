"""The tether-agent sidecar as it goes into a workload's pod template, and the patches that add or remove it.

Pure (no I/O): whoever applies an injection builds it here. Since agent injection is done by the client
with the user's own credentials (see :mod:`tether.helper.root.kube.inject`), this lives in the manager's
API face, which the helper may import; the lab builds the objects of its agent-running workloads from it
too, so they look exactly as an injection leaves them.

The sidecar is configured from the downward API (POD_NAME, POD_NAMESPACE, POD_IP) and points at the
manager's agent API; a projected service-account token for the manager's audience proves its pod to the
manager (see tether.manager.agentauth); an annotation on the template records what was injected. Pods
inherit all three. The sidecar also mounts the app containers' volumes, re-rooted under /tether/volumes
(:mod:`tether.manager.api.volumes`), which it serves to clients that mount them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from tether.manager.api.version import MANAGER_IMAGE, __version__, image_tag
from tether.manager.api.volumes import VOLUMES_ROOT, agent_volume_mounts

SIDECAR_NAME = "tether-agent"
#: On the pod template: what was injected (JSON: image, manager, by). Pods inherit it.
ANNOTATION = "tether.dev/agent"
KINDS = ("Deployment", "StatefulSet", "ReplicaSet")
DEFAULT_AGENT_IMAGE = f"{MANAGER_IMAGE}:{image_tag(__version__)}"  # the manager's image ships tether-agent too
MANAGER_SERVICE = "tether-manager"
DEFAULT_MANAGER_PORT = 8081
#: The audience of the agent's projected token: the manager's TokenReview asks for it.
AGENT_TOKEN_AUDIENCE = "tether-manager"
#: Where the agent reads its token (the projected volume's mount).
DEFAULT_TOKEN_FILE = PurePosixPath("/var/run/secrets/tether/token")
TOKEN_VOLUME = "tether-agent-token"


@dataclass(frozen=True)
class SidecarConfig:
    image: str = DEFAULT_AGENT_IMAGE
    #: HOST:PORT the agent dials: the manager's Service, see :func:`manager_address`
    manager: str = f"{MANAGER_SERVICE}.tether.svc.cluster.local:{DEFAULT_MANAGER_PORT}"
    pull_policy: str = "IfNotPresent"
    log_format: str = "json"
    #: the projected service-account token the agent proves its pod with
    token_audience: str = AGENT_TOKEN_AUDIENCE
    token_expiration: int = 3600  # seconds; the kubelet renews it well before


def manager_address(namespace: str, cluster_domain: str = "cluster.local", port: int = DEFAULT_MANAGER_PORT) -> str:
    """The manager's Service DNS name and gRPC port, as a sidecar in any namespace dials it."""
    return f"{MANAGER_SERVICE}.{namespace}.svc.{cluster_domain.strip('.')}:{port}"


#: On a Service whose targetPorts the injector pointed at the agent: {service port: the original targetPort}.
INTERCEPT_ANNOTATION = "tether.dev/intercept-target-ports"
#: The first port an agent listens on for an intercepted container port (the next free one above it is taken).
FIRST_AGENT_PORT = 9900
#: Variables of the agent's own; an app's variable of the same name is not copied into the agent.
AGENT_ENV = frozenset({"POD_NAME", "POD_NAMESPACE", "POD_IP", "TETHER_APP_ENV", "TETHER_INTERCEPT_PORTS"})


def sidecar_container(
    kind: str,
    name: str,
    config: SidecarConfig,
    intercept_ports: tuple[tuple[int, int], ...] = (),
    app_env: tuple[Mapping[str, Any], ...] = (),
    volume_mounts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The tether-agent container for the workload ``kind``/``name``; with ``intercept_ports`` ((agent port, app
    port) pairs) it also listens where the Service's traffic now arrives, and ``app_env`` (the app container's
    ``env`` entries, copied as they are so the kubelet resolves them the same way) is its app's environment;
    ``volume_mounts`` are the app's, re-rooted under VOLUMES_ROOT (:func:`app_volume_mounts`), served with SFTP."""

    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    copied = [dict(e) for e in app_env if e.get("name") and e["name"] not in AGENT_ENV]
    intercept_args = [a for agent, app in intercept_ports for a in ("--intercept-port", f"{agent}:{app}")]
    intercept_env = (
        [*copied, {"name": "TETHER_APP_ENV", "value": json.dumps([e["name"] for e in copied])}]
        if intercept_ports
        else []
    )
    return {
        "name": SIDECAR_NAME,
        "image": config.image,
        "imagePullPolicy": config.pull_policy,
        "command": ["tether-agent"],
        "args": [
            *("--manager", config.manager, "--workload", name, "--kind", kind),
            *("--token-file", str(DEFAULT_TOKEN_FILE), "--log-format", config.log_format),
            *("--volumes", str(VOLUMES_ROOT)),
            *intercept_args,
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
            *intercept_env,
        ],
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": str(DEFAULT_TOKEN_FILE.parent), "readOnly": True},
            *(dict(m) for m in volume_mounts),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def app_volume_mounts(containers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The app containers' volumeMounts as the agent mounts them (not its own, not its token)."""
    return agent_volume_mounts(containers, skip_volumes=(TOKEN_VOLUME,), skip_containers=(SIDECAR_NAME,))


def token_volume(config: SidecarConfig) -> dict[str, Any]:
    """The pod volume holding the agent's projected service-account token, for the manager's audience."""
    token = {
        "audience": config.token_audience,
        "expirationSeconds": config.token_expiration,
        "path": DEFAULT_TOKEN_FILE.name,
    }
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def annotation_value(config: SidecarConfig) -> str:
    """What the annotation records about an injection."""
    return json.dumps({"image": config.image, "manager": config.manager, "by": f"tether {__version__}"})


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or ReplicaSet as the API server returned it (raw JSON)."""

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

    @property
    def intercept_ports(self) -> tuple[tuple[int, int], ...]:
        """(agent port, app port) pairs the sidecar listens on now."""
        return intercept_ports_of(self.sidecar)

    @property
    def app_container(self) -> Mapping[str, Any] | None:
        """The workload's own first container (not the agent)."""
        return next((c for c in self.containers if c.get("name") != SIDECAR_NAME), None)

    @property
    def labels(self) -> Mapping[str, str]:
        return self.template.get("metadata", {}).get("labels") or {}

    def container_port(self, target: int | str) -> int | None:
        """The app's port a Service's targetPort means: a number, or a named container port."""
        if isinstance(target, int) or str(target).isdigit():
            return int(target)
        for container in self.containers:
            for port in container.get("ports") or []:
                if port.get("name") == target:
                    return int(port["containerPort"])
        return None

    def has_sidecar(self, config: SidecarConfig, pairs: tuple[tuple[int, int], ...] = ()) -> bool:
        """Whether the template already holds this config's sidecar (taking ``pairs``) and annotation."""
        app_env = tuple((self.app_container or {}).get("env") or ()) if pairs else ()
        wanted = sidecar_container(
            self.kind, self.name, config, pairs, app_env, volume_mounts=app_volume_mounts(self.containers)
        )
        return (
            _same(self.sidecar, wanted)
            and _same(self.volume(TOKEN_VOLUME), token_volume(config))
            and self.annotation == annotation_value(config)
        )


def inject_patch(workload: Workload, config: SidecarConfig) -> dict[str, Any]:
    """The strategic merge patch that adds the sidecar (or brings it up to date), guarded by resourceVersion."""
    return {
        "metadata": {"resourceVersion": workload.resource_version},
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION: annotation_value(config)}},
                # keyed by name: adds the sidecar, or brings an existing one up to date
                "spec": {
                    "containers": [
                        sidecar_container(
                            workload.kind, workload.name, config, volume_mounts=app_volume_mounts(workload.containers)
                        )
                    ],
                    "volumes": [token_volume(config)],
                },
            }
        },
    }


def intercept_ports_of(sidecar: Mapping[str, Any] | None) -> tuple[tuple[int, int], ...]:
    """(agent port, app port) pairs a tether-agent container (of a template or a pod) is told to take."""
    args = list((sidecar or {}).get("args") or [])
    pairs = []
    for flag, value in itertools.pairwise(args):
        agent, sep, app = str(value).partition(":") if flag == "--intercept-port" else ("", "", "")
        if sep and agent.isdigit() and app.isdigit():
            pairs.append((int(agent), int(app)))
    return tuple(pairs)


def with_intercept_port(workload: Workload, app_port: int) -> tuple[tuple[int, int], ...]:
    """The sidecar's (agent port, app port) pairs once it also takes ``app_port``: unchanged if it does already;
    else a new agent port, the first from FIRST_AGENT_PORT that no container and no pair uses."""
    pairs = workload.intercept_ports
    if any(app == app_port for _, app in pairs):
        return pairs
    used = {agent for agent, _ in pairs} | {
        int(p["containerPort"]) for c in workload.containers for p in c.get("ports") or [] if "containerPort" in p
    }
    agent_port = next(p for p in range(FIRST_AGENT_PORT, 65536) if p not in used)
    return (*pairs, (agent_port, app_port))


def intercept_patch(workload: Workload, config: SidecarConfig, pairs: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """The strategic merge patch that makes the sidecar take these ports, with the app container's environment."""
    app = workload.app_container or {}
    patch = inject_patch(workload, config)
    container = sidecar_container(
        workload.kind,
        workload.name,
        config,
        pairs,
        tuple(app.get("env") or ()),
        volume_mounts=app_volume_mounts(workload.containers),
    )
    patch["spec"]["template"]["spec"]["containers"] = [container]
    return patch


def selects(service: Mapping[str, Any], workload: Workload) -> bool:
    """Whether the Service sends traffic to the workload's pods (its selector matches the template's labels)."""
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(workload.labels.get(k) == v for k, v in selector.items())


def original_target_ports(service: Mapping[str, Any]) -> dict[str, Any]:
    """{service port: original targetPort} the injector recorded on the Service ({} if none)."""
    raw = ((service.get("metadata") or {}).get("annotations") or {}).get(INTERCEPT_ANNOTATION) or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def target_port_patch(service: Mapping[str, Any], service_port: int, agent_port: int) -> dict[str, Any] | None:
    """The merge patch that points the Service port at the agent, remembering the original targetPort; None
    when it points there already."""
    ports = [dict(p) for p in (service.get("spec") or {}).get("ports") or []]
    recorded = original_target_ports(service)
    for port in ports:
        if port.get("port") == service_port:
            if port.get("targetPort") == agent_port and str(service_port) in recorded:
                return None
            recorded.setdefault(str(service_port), port.get("targetPort", service_port))
            port["targetPort"] = agent_port
    return {
        "metadata": {
            "resourceVersion": (service.get("metadata") or {}).get("resourceVersion", ""),
            "annotations": {INTERCEPT_ANNOTATION: json.dumps(recorded, sort_keys=True)},
        },
        "spec": {"ports": ports},
    }


def restore_target_ports_patch(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that gives the Service its original targetPorts back; None if the injector changed none."""
    recorded = original_target_ports(service)
    if not recorded:
        return None
    ports = [dict(p) for p in (service.get("spec") or {}).get("ports") or []]
    for port in ports:
        if str(port.get("port")) in recorded:
            port["targetPort"] = recorded[str(port.get("port"))]
    return {
        "metadata": {
            "resourceVersion": (service.get("metadata") or {}).get("resourceVersion", ""),
            "annotations": {INTERCEPT_ANNOTATION: None},
        },
        "spec": {"ports": ports},
    }


def uninject_patch(workload: Workload) -> dict[str, Any]:
    """The strategic merge patch that removes the sidecar, its token volume and the annotation."""
    return {
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
