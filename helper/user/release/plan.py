"""What an install, upgrade or uninstall does to the cluster, decided without touching it.

Pure: rendered manifests become objects in Helm's install order; a release record (a ConfigMap in the
release's namespace) says which objects are the release's; :func:`plan_upgrade` says what to create, patch
and delete; :func:`merge_patch` is the JSON merge patch from the previously applied object to the new one
(fields the chart stopped setting are removed, fields others set are left alone); :func:`serves_manager`
tells which injected agents belong to a manager.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tether.manager.api.sidecar import ANNOTATION, MANAGER_SERVICE

RECORD_NAME = "tether-manager-release"
RECORD_KEY = "release.json"
RECORD_LABEL = "tether.dev/release"

#: kind -> (plural, namespaced), for every kind the chart renders; creation follows this order, deletion reverses it
KINDS: dict[str, tuple[str, bool]] = {
    "ServiceAccount": ("serviceaccounts", True),
    "ConfigMap": ("configmaps", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "Service": ("services", True),
    "Deployment": ("deployments", True),
}
_ORDER = {kind: i for i, kind in enumerate(KINDS)}
#: kinds the release reads or patches but never renders: its namespace, and the workloads agents were injected into
_OTHER_PLURALS = {"Namespace": "namespaces", "StatefulSet": "statefulsets", "ReplicaSet": "replicasets"}


class PlanError(ValueError):
    """The rendered chart or the cluster's state does not allow the operation; the text says why."""


@dataclass(frozen=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("name")), meta.get("namespace"))

    @property
    def plural(self) -> str:
        return KINDS[self.kind][0] if self.kind in KINDS else _OTHER_PLURALS[self.kind]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        """As RBAC names it (``deployments.apps``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, *, named: bool = True) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{base}{where}/{self.plural}" + (f"/{self.name}" if named else "")

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "namespace": self.namespace}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectRef:
        return cls(str(data["apiVersion"]), str(data["kind"]), str(data["name"]), data.get("namespace"))


def objects_from_manifests(manifests: Mapping[str, str], namespace: str) -> list[dict[str, Any]]:
    """The rendered objects in install order, each checked to be a kind we apply and in ``namespace``."""
    objects = []
    for path, text in sorted(manifests.items()):
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            kind = obj.get("kind")
            if kind not in KINDS:
                raise PlanError(f"{path}: the chart rendered a {kind}, which tether manager install does not apply")
            namespaced = KINDS[kind][1]
            meta = obj.setdefault("metadata", {})
            if namespaced and meta.get("namespace") != namespace:
                raise PlanError(f"{path}: {kind} {meta.get('name')} is not in namespace {namespace}")
            objects.append(obj)
    return sorted(objects, key=lambda o: (_ORDER[o["kind"]], ObjectRef.of(o)))


@dataclass
class Release:
    """What the record says: the release's objects as last applied, and how they were made."""

    namespace: str
    revision: int
    chart_version: str
    app_version: str
    values: dict[str, Any]
    manifest: list[dict[str, Any]]
    status: str = "deployed"
    #: objects written by an operation that has not finished (so uninstall still finds them)
    pending: list[ObjectRef] = field(default_factory=list)

    @property
    def objects(self) -> list[ObjectRef]:
        refs = [ObjectRef.of(o) for o in self.manifest]
        return refs + [r for r in self.pending if r not in refs]


def record_configmap(release: Release) -> dict[str, Any]:
    body = {
        "revision": release.revision,
        "status": release.status,
        "chartVersion": release.chart_version,
        "appVersion": release.app_version,
        "values": release.values,
        "manifest": release.manifest,
        "pending": [r.to_json() for r in release.pending],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": RECORD_NAME,
            "namespace": release.namespace,
            "labels": {RECORD_LABEL: "tether-manager", "app.kubernetes.io/managed-by": "tether"},
        },
        "data": {RECORD_KEY: json.dumps(body, sort_keys=True)},
    }


def release_from_configmap(configmap: Mapping[str, Any]) -> Release:
    namespace = (configmap.get("metadata") or {}).get("namespace") or ""
    text = (configmap.get("data") or {}).get(RECORD_KEY)
    try:
        body = json.loads(text or "")
        return Release(
            namespace=namespace,
            revision=int(body["revision"]),
            chart_version=str(body["chartVersion"]),
            app_version=str(body["appVersion"]),
            values=dict(body.get("values") or {}),
            manifest=list(body.get("manifest") or []),
            status=str(body.get("status") or "deployed"),
            pending=[ObjectRef.from_json(r) for r in body.get("pending") or []],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"ConfigMap {namespace}/{RECORD_NAME} is not a release record tether can read: {exc}") from None


@dataclass(frozen=True)
class Plan:
    create: list[dict[str, Any]]
    #: (the new object, the merge patch from what was last applied)
    patch: list[tuple[dict[str, Any], dict[str, Any]]]
    delete: list[ObjectRef]


def plan_upgrade(previous: Iterable[Mapping[str, Any]], rendered: Iterable[dict[str, Any]]) -> Plan:
    """Create what is new, patch what stays (only where it changed), delete what the chart no longer renders."""
    old = {ObjectRef.of(o): o for o in previous}
    new = list(rendered)
    new_refs = {ObjectRef.of(o) for o in new}
    create = [o for o in new if ObjectRef.of(o) not in old]
    patch = [(o, p) for o in new if ObjectRef.of(o) in old and (p := merge_patch(old[ObjectRef.of(o)], o))]
    delete = sorted((r for r in old if r not in new_refs), key=lambda r: (-_ORDER.get(r.kind, 0), r))
    return Plan(create, patch, delete)


def merge_patch(old: Any, new: Any) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` ({} when they are equal)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        raise TypeError("merge_patch compares two objects")
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    return patch


def serves_manager(workload: Mapping[str, Any], namespace: str) -> bool:
    """Whether ``workload``'s pod template carries a tether-agent injected for the manager in ``namespace``
    (its annotation's manager address is that manager's Service, tether-manager.<namespace>.svc...)."""
    template = (workload.get("spec") or {}).get("template") or {}
    text = ((template.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return False
    try:
        manager = str(json.loads(text).get("manager") or "")
    except (ValueError, AttributeError):
        return False
    labels = manager.rpartition(":")[0].split(".")
    return labels[:3] == [MANAGER_SERVICE, namespace, "svc"]
