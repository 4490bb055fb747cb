"""The object store: objects kept as the API server keeps them, with the metadata the server owns (uid,
creationTimestamp, generation and one resourceVersion counter for all), every write admitted first and
recorded in the history watches follow.

Its methods are synchronous and run on the event loop's thread, so each is atomic without locks.
"""

from __future__ import annotations

import copy
import datetime
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

import kmock

from tether.lab.apiserver.admission import Admission, check_name, check_type
from tether.lab.apiserver.allocation import Network
from tether.lab.apiserver.errors import bad_request, conflict, details, error, not_found
from tether.lab.apiserver.history import Event, History
from tether.lab.apiserver.kinds import DEPLOYMENTS, KINDS, NAMESPACES, PODS, SERVICES, Kind, Obj
from tether.lab.apiserver.patches import apply_patch
from tether.lab.apiserver.rollout import deployment_status

_GENERATED_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the API server's alphabet: no vowels, no lookalikes


PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Objects by kind, namespace and name in kmock's ``objects`` (so kmock's own views see them too)."""

    def __init__(
        self,
        objects: kmock.ObjectsArray,
        *,
        service_cidr: Network,
        node_port_range: tuple[int, int],
        history_limit: int,
        derive_deployment_status: bool = True,
    ) -> None:
        self.objects = objects
        # Without a deployment controller, the store reports Deployments' status from their pods; once a
        # controller writes a Deployment's status subresource, that Deployment's status is the controller's.
        self.derive_deployment_status = derive_deployment_status
        self._status_by_controller: set[tuple[str | None, str]] = set()
        self.version = 0  # the resourceVersion of the latest write
        self.history = History(history_limit)
        self.admission = Admission(service_cidr, node_port_range, services=lambda: self.objects_of(SERVICES, None))

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> tuple[kmock.resource, str | None, str]:
        return (kind.resource, namespace if kind.namespaced else None, name)

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        """The stored object, its nested parts shared with the store: callers must not change it."""
        key = self._key(kind, namespace, name)
        return self.objects[key].raw if key in self.objects else None

    def objects_of(self, kind: Kind, namespace: str | None) -> list[Obj]:
        resource = kind.resource
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == resource and (namespace is None or ns == namespace)
        ]

    def create(self, kind: Kind, namespace: str | None, body: Mapping[str, Any], keep_uid: bool = False) -> Obj:
        """POST: admit and store a new object, completing a generateName and setting the server's metadata.

        ``keep_uid`` keeps a uid the object brings (seed objects: their ownerReferences name their owners' uids).
        """
        obj = copy.deepcopy(dict(body))
        check_type(kind, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if self.get(NAMESPACES, None, str(namespace)) is None:
                raise not_found(NAMESPACES, str(namespace))
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            while not meta.get("name") or self.get(kind, namespace, meta["name"]) is not None:
                meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATED_NAME_CHARS) for _ in range(5))
        name = str(meta.get("name") or "")
        check_name(kind, name)
        if self.get(kind, namespace, name) is not None:
            raise error(409, "AlreadyExists", f'{kind.plural} "{name}" already exists', details(kind, name))
        meta.pop("resourceVersion", None)
        meta.update(
            uid=meta.get("uid") if keep_uid and meta.get("uid") else str(uuid.uuid4()), creationTimestamp=_now()
        )
        if "spec" in obj:
            meta["generation"] = 1
        self.admission.admit(kind, obj, None)
        return self._followed(kind, self._commit(kind, "ADDED", obj))

    def replace(self, kind: Kind, namespace: str | None, name: str, body: Obj, subresource: str | None) -> Obj:
        """PUT: the whole object (or, for the status subresource, its status); a stale resourceVersion is a 409."""
        old = self.existing(kind, namespace, name)
        check_type(kind, body)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise conflict(kind, name)
        return self._update(kind, old, body, subresource)

    def patch(
        self, kind: Kind, namespace: str | None, name: str, patch: Any, content_type: str, subresource: str | None
    ) -> Obj:
        """PATCH in the format ``content_type`` names; a resourceVersion in the patch is a precondition."""
        old = self.existing(kind, namespace, name)
        new = apply_patch(old, patch, content_type)
        if not isinstance(new, dict):
            raise bad_request("the patch does not produce an object")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "", old["metadata"]["resourceVersion"]):  # a patch may carry a precondition
            raise conflict(kind, name)
        return self._update(kind, old, new, subresource)

    def _update(self, kind: Kind, old: Obj, body: Obj, subresource: str | None) -> Obj:
        if subresource == "status" and kind == DEPLOYMENTS:
            self._status_by_controller.add((old["metadata"].get("namespace"), old["metadata"]["name"]))
        if subresource == "status":  # the status subresource changes the status and nothing else
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status"))
        else:
            new = copy.deepcopy(body)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        old_meta = old["metadata"]
        for field in ("name", "namespace", "uid", "creationTimestamp", "generation"):  # owned by the server
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        self.admission.admit(kind, new, old)
        if "spec" in new and new.get("spec") != old.get("spec"):  # compared after defaulting, as the server does
            meta["generation"] = old_meta.get("generation", 0) + 1
        if new == old:  # kube-apiserver does not bump the resourceVersion for no-op writes
            return old
        return self._followed(kind, self._commit(kind, "MODIFIED", new, old))

    def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str | None = None) -> Obj:
        """DELETE, at once; a Namespace takes everything in it along, and an owner its dependents unless the
        ``propagation`` policy is Orphan (then they only lose their ownerReference), as the garbage collector
        would."""
        if propagation not in (None, *PROPAGATION_POLICIES):
            supported = ", ".join(f'"{p}"' for p in PROPAGATION_POLICIES)
            raise bad_request(f'propagationPolicy: Unsupported value: "{propagation}": supported values: {supported}')
        old = self.existing(kind, namespace, name)
        if kind is DEPLOYMENTS:
            self._status_by_controller.discard((namespace, name))
        if kind is NAMESPACES:  # the namespace controller's cleanup, done at once
            for other in KINDS:
                if other.namespaced:
                    for obj in self.objects_of(other, name):
                        self._commit(other, "DELETED", copy.deepcopy(obj))
        # Finalizers and grace periods are not emulated: deletion is immediate.
        deleted = self._commit(kind, "DELETED", copy.deepcopy(old))
        if kind.namespaced:
            self._collect_dependents(old, propagation or "Background")
        return self._followed(kind, deleted)

    def _collect_dependents(self, owner: Obj, propagation: str) -> None:
        namespace, uid = owner["metadata"].get("namespace"), owner["metadata"]["uid"]
        for other in KINDS:
            if not other.namespaced:
                continue
            for obj in self.objects_of(other, namespace):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                if propagation == "Orphan":
                    orphan = copy.deepcopy(obj)
                    orphan["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid] or None
                    if orphan["metadata"]["ownerReferences"] is None:
                        del orphan["metadata"]["ownerReferences"]
                    self._followed(other, self._commit(other, "MODIFIED", orphan, obj))
                else:
                    self.delete(other, namespace, obj["metadata"]["name"], propagation)

    def _followed(self, kind: Kind, obj: Obj) -> Obj:
        """``obj`` just written, after the Deployments its write concerns have their status brought up to date."""
        if self.derive_deployment_status and kind in (PODS, DEPLOYMENTS):
            namespace = obj["metadata"].get("namespace")
            pods = self.objects_of(PODS, namespace)
            for deployment in self.objects_of(DEPLOYMENTS, namespace):
                if (namespace, deployment["metadata"]["name"]) in self._status_by_controller:
                    continue
                status = deployment_status(deployment, pods, _now())
                if status != deployment.get("status"):
                    updated = copy.deepcopy(deployment)
                    updated["status"] = status
                    self._commit(DEPLOYMENTS, "MODIFIED", updated, deployment)
        return obj

    def existing(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        found = self.get(kind, namespace, name)
        if found is None:
            raise not_found(kind, name)
        return found

    def _commit(self, kind: Kind, event_type: str, obj: Obj, old: Obj | None = None) -> Obj:
        """Store (or drop, for DELETED) an object under a new resourceVersion and wake the watchers.

        Stored dicts are never changed in place afterwards, so events and readers can share them.
        """
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if event_type == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        self.history.append(Event(self.version, kind, event_type, obj, old))
        return obj
