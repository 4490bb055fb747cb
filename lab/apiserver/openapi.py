"""OpenAPI v3 as far as kubectl reads it: the ``/openapi/v3`` index of group versions and, for each, its
resource paths with their operations, each naming its kind (``x-kubernetes-group-version-kind``) and the
query parameters it takes. kubectl checks there that PATCH takes ``fieldValidation`` before it sends
``apply`` and ``create`` (without it, it wants schemas to validate client-side); the emulator honours
``fieldValidation=Strict`` (see strict). No schemas are served, so
kubectl builds its strategic merge patches from its own compiled types, as it does for built-in kinds."""

from __future__ import annotations

import hashlib
import json

from tether.lab.apiserver.kinds import KINDS, Kind, Obj

ROOT = "/openapi/v3"
_QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _group_version_path(kind: Kind) -> str:
    return f"apis/{kind.group}/{kind.version}" if kind.group else f"api/{kind.version}"


def _operation(kind: Kind, action: str, query: tuple[str, ...]) -> Obj:
    return {
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "parameters": [{"name": name, "in": "query", "schema": {"type": "string"}} for name in query],
        "responses": {"200": {"description": "OK"}},
    }


def _paths(kind: Kind) -> Obj:
    base = "/" + _group_version_path(kind) + ("/namespaces/{namespace}" if kind.namespaced else "")
    collection = f"{base}/{kind.plural}"
    return {
        collection: {
            "get": _operation(kind, "list", ("labelSelector", "fieldSelector", "watch")),
            "post": _operation(kind, "post", _QUERY),
        },
        collection + "/{name}": {
            "get": _operation(kind, "get", ("pretty",)),
            "put": _operation(kind, "put", _QUERY),
            "patch": _operation(kind, "patch", (*_QUERY, "force")),
            "delete": _operation(kind, "delete", ("dryRun", "propagationPolicy", "gracePeriodSeconds")),
        },
    }


def group_version_document(path: str) -> Obj | None:
    """The OpenAPI v3 document of one group version (``api/v1``, ``apis/apps/v1``), or None if not served."""
    kinds = [k for k in KINDS if _group_version_path(k) == path]
    if not kinds:
        return None
    paths: Obj = {}
    for kind in kinds:
        paths.update(_paths(kind))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.31.0"}, "paths": paths}


def index() -> Obj:
    """``/openapi/v3``: each group version and the URL of its document (with a hash, as clients cache by it)."""
    paths = {}
    for path in dict.fromkeys(_group_version_path(k) for k in KINDS):
        digest = hashlib.sha256(json.dumps(group_version_document(path), sort_keys=True).encode()).hexdigest()
        paths[path] = {"serverRelativeURL": f"{ROOT}/{path}?hash={digest[:32].upper()}"}
    return {"paths": paths}


def openapi_document(path: str) -> Obj | None:
    """What ``path`` serves under ``/openapi/v3``, or None if it is not an OpenAPI v3 URL that is served."""
    if path == ROOT:
        return index()
    if path.startswith(ROOT + "/"):
        return group_version_document(path.removeprefix(ROOT + "/"))
    return None
