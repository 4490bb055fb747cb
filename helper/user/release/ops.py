"""install, upgrade, uninstall and status of the traffic-manager's release, through :class:`~.kube.Kube`.

Everything that can be checked is checked before the first write: the values (rendered by Helm), the namespace,
and that no object the release would create exists already outside its record. The record (a ConfigMap) is
written before the objects it lists, so an interrupted operation leaves nothing uninstall cannot find; an
install that fails midway takes back what it created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.helper.user.release.kube import Kube, KubeError
from tether.helper.user.release.plan import (
    KINDS,
    RECORD_NAME,
    ObjectRef,
    PlanError,
    Release,
    plan_upgrade,
    record_configmap,
    release_from_configmap,
    serves_manager,
)
from tether.helper.user.release.render import Rendered
from tether.manager.api.sidecar import Workload, restore_target_ports_patch, selects, uninject_patch

log = logging.getLogger("tether.helper.user.release")

Say = Callable[[str], None]
_WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet"))


def record_ref(namespace: str) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", RECORD_NAME, namespace)


def read_release(kube: Kube, namespace: str) -> Release | None:
    found = kube.get(record_ref(namespace))
    return release_from_configmap(found) if found is not None else None


def namespace_exists(kube: Kube, namespace: str, create: bool) -> bool:
    """Whether the namespace is there; refuses a missing one unless it may be created."""
    if kube.get(ObjectRef("v1", "Namespace", namespace)) is not None:
        return True
    if not create:
        raise PlanError(
            f'namespace "{namespace}" does not exist: create it (kubectl create namespace {namespace}) '
            "or pass --create-namespace"
        )
    return False


def _refuse_strangers(kube: Kube, refs: list[ObjectRef], namespace: str) -> None:
    """Objects the release would create must not exist: they are someone else's."""
    strangers = [str(r) for r in refs if kube.get(r) is not None]
    if strangers:
        raise PlanError(
            f"{', '.join(strangers)} already exist(s) and no tether release in namespace {namespace} records them; "
            "tether leaves them alone (remove them, or install into another namespace)"
        )


def install(kube: Kube, rendered: Rendered, namespace: str, *, create_namespace: bool, say: Say) -> Release:
    refs = [ObjectRef.of(o) for o in rendered.objects]
    if namespace_exists(kube, namespace, create_namespace):
        previous = read_release(kube, namespace)
        if previous is not None:
            raise PlanError(
                f"the traffic-manager is already installed in namespace {namespace} (revision {previous.revision}, "
                f"chart {previous.chart_version}); use tether manager upgrade"
            )
        _refuse_strangers(kube, [*refs, record_ref(namespace)], namespace)
    else:
        _refuse_strangers(kube, [r for r in refs if r.namespace is None], namespace)
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        say(f"created Namespace {namespace} (uninstall leaves it)")
    release = Release(
        namespace, 1, rendered.chart_version, rendered.app_version, rendered.values, [], "installing", refs
    )
    kube.create(record_configmap(release))
    created: list[ObjectRef] = []
    try:
        for obj in rendered.objects:
            kube.create(obj)
            created.append(ObjectRef.of(obj))
            say(f"created {ObjectRef.of(obj)}")
    except KubeError:
        for ref in reversed(created):
            kube.delete(ref)
            say(f"took back {ref}")
        kube.delete(record_ref(namespace))
        raise
    release.manifest, release.pending, release.status = rendered.objects, [], "deployed"
    kube.patch(record_ref(namespace), record_configmap(release))
    return release


def upgrade(kube: Kube, rendered: Rendered, namespace: str, *, say: Say) -> Release:
    namespace_exists(kube, namespace, False)
    release = read_release(kube, namespace)
    if release is None:
        raise PlanError(f"no traffic-manager release in namespace {namespace}; use tether manager install")
    plan = plan_upgrade(release.manifest, rendered.objects)
    _refuse_strangers(kube, [ObjectRef.of(o) for o in plan.create], namespace)
    release.pending, release.status = [ObjectRef.of(o) for o in plan.create], "upgrading"
    kube.patch(record_ref(namespace), record_configmap(release))
    for obj in plan.create:
        kube.create(obj)
        say(f"created {ObjectRef.of(obj)}")
    for obj, patch in plan.patch:
        kube.patch(ObjectRef.of(obj), patch)
        say(f"updated {ObjectRef.of(obj)}")
    for ref in plan.delete:
        kube.delete(ref)
        say(f"deleted {ref}")
    if not (plan.create or plan.patch or plan.delete):
        say("nothing changed")
    release = Release(
        namespace, release.revision + 1, rendered.chart_version, rendered.app_version, rendered.values,
        rendered.objects,
    )  # fmt: skip
    kube.patch(record_ref(namespace), record_configmap(release))
    return release


@dataclass
class Removed:
    agents: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)


def remove_agents(kube: Kube, namespace: str, say: Say) -> list[str]:
    """Take the tether-agent sidecar, its token volume and its annotation out of every workload that was
    injected for this manager (a Deployment's ReplicaSets follow their Deployment)."""
    removed = []
    for api_version, kind in _WORKLOAD_KINDS:
        for obj in kube.list(ObjectRef(api_version, kind, "")):
            meta = obj.get("metadata") or {}
            workload = Workload(kind, str(meta.get("namespace")), str(meta.get("name")), obj)
            if workload.controller or not serves_manager(obj, namespace):
                continue
            ref = ObjectRef(api_version, kind, workload.name, workload.namespace)
            for service in kube.list(ObjectRef("v1", "Service", "", workload.namespace)):
                restore = restore_target_ports_patch(service) if selects(service, workload) else None
                if restore is not None:  # an intercept pointed it at the agent: back to the app
                    name = str((service.get("metadata") or {}).get("name"))
                    kube.patch(ObjectRef("v1", "Service", name, workload.namespace), restore)
                    say(f"gave Service {workload.namespace}/{name} its targetPort back")
            kube.patch(ref, uninject_patch(workload), "strategic")
            removed.append(str(workload))
            say(f"removed the tether-agent from {workload}")
    return removed


def uninstall(kube: Kube, namespace: str, *, say: Say) -> Removed:
    release = read_release(kube, namespace)
    if release is None:
        raise PlanError(f"no traffic-manager release in namespace {namespace}: nothing to uninstall")
    result = Removed(agents=remove_agents(kube, namespace, say))
    for ref in sorted(release.objects, key=_deletion_order):
        if kube.delete(ref):
            result.objects.append(str(ref))
            say(f"deleted {ref}")
    kube.delete(record_ref(namespace))
    result.objects.append(str(record_ref(namespace)))
    say(f"deleted {record_ref(namespace)}")
    return result


def _deletion_order(ref: ObjectRef) -> tuple[int, ObjectRef]:
    order = list(KINDS)
    return (-order.index(ref.kind) if ref.kind in order else 0, ref)


def describe(release: Release, present: dict[ObjectRef, bool], answers: str) -> dict[str, Any]:
    return {
        "namespace": release.namespace,
        "revision": release.revision,
        "status": release.status,
        "chart_version": release.chart_version,
        "app_version": release.app_version,
        "values": release.values,
        "objects": [{"object": str(r), "present": present.get(r, False)} for r in release.objects],
        "manager": answers,
    }
