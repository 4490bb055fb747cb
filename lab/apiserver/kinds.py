"""The resource types the emulator serves: where each lives in the URL space and how it behaves."""

from __future__ import annotations

import dataclasses
from typing import Any

import kmock
import kubernetes.client

Obj = dict[str, Any]  # a Kubernetes object as JSON


@dataclasses.dataclass(frozen=True)
class Kind:
    """One served resource type: where it lives in the URL space and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # kube-apiserver answers DELETE with the object for these and with a Status for the others.
    delete_returns_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    def model(self) -> Any:
        """The official client's model class (e.g. ``V1Pod``) that must be able to read our objects."""
        name = self.version.capitalize() + self.kind
        # The core group's Event is CoreV1Event (events.k8s.io has one too).
        return getattr(kubernetes.client, name, None) or getattr(kubernetes.client, "Core" + name)


KINDS = (
    Kind("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize"), True),
    Kind("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    Kind("", "v1", "pods", "Pod", True, ("po",), ("status", "portforward"), True),
    Kind("", "v1", "services", "Service", True, ("svc",), ("status",), True),
    Kind("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Kind("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Kind("", "v1", "events", "Event", True, ("ev",)),
    Kind("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status",)),
    # Written by the lab's controller, as the endpointslice controller would; kube-apiserver gives it no short name.
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    # What `tether manager install` creates besides the above (stored only: the lab enforces no RBAC).
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), (), True),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
)
KINDS_BY_URL = {(k.group, k.version, k.plural): k for k in KINDS}
KINDS_BY_TYPE = {(k.api_version, k.kind): k for k in KINDS}
NAMESPACES = KINDS_BY_URL["", "v1", "namespaces"]
SERVICES = KINDS_BY_URL["", "v1", "services"]
PODS = KINDS_BY_URL["", "v1", "pods"]
DEPLOYMENTS = KINDS_BY_URL["apps", "v1", "deployments"]
