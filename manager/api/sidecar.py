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


def sidecar_container(
    kind: str, name: str, config: SidecarConfig, volume_mounts: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The tether-agent container for the workload ``kind``/``name``; ``volume_mounts`` are the app's,
    re-rooted under VOLUMES_ROOT (:func:`app_volume_mounts`), which the agent serves with SFTP."""

    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"fieldPath": path}}

    return {
        "name": SIDECAR_NAME,
        "image": config.image,
        "imagePullPolicy": config.pull_policy,
        "command": ["tether-agent"],
        "args": [
            *("--manager", config.manager, "--workload", name, "--kind", kind),
            *("--token-file", str(DEFAULT_TOKEN_FILE), "--log-format", config.log_format),
            *("--volumes", str(VOLUMES_ROOT)),
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
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

    def has_sidecar(self, config: SidecarConfig) -> bool:
        """Whether the template already holds this config's sidecar and annotation (nothing to patch)."""
        wanted = sidecar_container(self.kind, self.name, config, app_volume_mounts(self.containers))
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
                        sidecar_container(workload.kind, workload.name, config, app_volume_mounts(workload.containers))
                    ],
                    "volumes": [token_volume(config)],
                },
            }
        },
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
