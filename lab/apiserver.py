"""The sandbox cluster's Kubernetes API server: an emulator the official client talks to over HTTP.

It is built on kmock's ``KubernetesEmulator``, which supplies the object store (``objects``), API
discovery (``/api``, ``/apis/...``), the Status error format and the HTTP plumbing. kmock 0.8 is a
test double, not an API server, so this subclass serves the resource URLs itself: kmock's router
cannot parse ``/api/v1/namespaces``, ignores selectors, has no PUT, no ``watch=1``, no
resourceVersion and no subresources. What it adds, in the order of the code below:

* metadata the server owns: uid, creationTimestamp, generation and a global resourceVersion;
* list and watch with label/field selectors, ``resourceVersion`` (410 Gone once the event history
  no longer reaches back that far) and ``timeoutSeconds``;
* create / get / replace / patch (merge, strategic merge, JSON patch) / delete, ``status`` subresource;
* admission the way kube-apiserver does it where it matters to the lab: Service ClusterIP and
  NodePort allocation with the API server's own error messages (Tether learns the service CIDR by
  parsing them), and a check that every stored object is readable by the strict official models;
* the ``pods/portforward`` subresource over a websocket (``v4.channel.k8s.io``), dialing the pod IP.

Store operations are synchronous and run on the event loop thread, so each is atomic without locks.

Run it with ``python -m tether.lab.apiserver --listen HOST:PORT --service-cidr CIDR``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import dataclasses
import datetime
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import aiohttp
import aiohttp.web
import attrs
import kmock
import kubernetes.client
from kmock import KubernetesEmulator, KubernetesError

from tether.runtime import eventloop

# Named explicitly: under "python -m" __name__ would be "__main__".
log = logging.getLogger("tether.lab.apiserver")
access_log = logging.getLogger("tether.lab.apiserver.access")

Obj = dict[str, Any]  # a Kubernetes object as JSON

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0+tether.lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
    "emulationMajor": "1",
    "emulationMinor": "31",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "30",
}


# ---------------------------------------------------------------------------------------------------
# Served resource types


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
        return getattr(kubernetes.client, self.version.capitalize() + self.kind)


KINDS = (
    Kind("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize"), True),
    Kind("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    Kind("", "v1", "pods", "Pod", True, ("po",), ("status", "portforward"), True),
    Kind("", "v1", "services", "Service", True, ("svc",), ("status",), True),
    Kind("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Kind("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Kind("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status",)),
)
_KINDS_BY_URL = {(k.group, k.version, k.plural): k for k in KINDS}
_KINDS_BY_TYPE = {(k.api_version, k.kind): k for k in KINDS}
_NAMESPACES = _KINDS_BY_URL["", "v1", "namespaces"]
_SERVICES = _KINDS_BY_URL["", "v1", "services"]
_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


def kind_of(api_version: str, kind: str) -> Kind:
    """The served Kind for an object's apiVersion and kind, or a 400 error naming them."""
    try:
        return _KINDS_BY_TYPE[api_version, kind]
    except KeyError:
        raise _error(400, "BadRequest", f'no kind "{kind}" is registered for version "{api_version}"') from None


@dataclasses.dataclass(frozen=True)
class _Route:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


_RESOURCE_PATH = re.compile(r"^/(?:api/(?P<core>[^/]+)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))/(?P<rest>.+?)/?$")


def _parse_route(path: str) -> _Route | None:
    """Split a resource URL; None for everything else (discovery, /version), which kmock serves."""
    match = _RESOURCE_PATH.match(path)
    if match is None:
        return None
    group, version = ("", match["core"]) if match["core"] else (match["group"], match["version"])
    parts: list[str | None] = list(match["rest"].split("/"))
    namespace = None
    # /namespaces/NS/pods/... addresses pods in NS; /namespaces/NS/status is the Namespace's own status.
    if parts[0] == "namespaces" and len(parts) >= 3 and not (len(parts) == 3 and parts[2] in ("status", "finalize")):
        namespace, parts = parts[1], parts[2:]
    if len(parts) > 3:
        raise _url_not_found()
    plural, name, subresource = parts + [None] * (3 - len(parts))
    kind = _KINDS_BY_URL.get((group, version, plural or ""))
    if kind is None or (namespace is not None and not kind.namespaced):
        raise _url_not_found()
    if subresource is not None and subresource not in kind.subresources:
        raise _url_not_found()
    return _Route(kind, namespace, name, subresource)


# ---------------------------------------------------------------------------------------------------
# Errors, shaped like kube-apiserver's Status objects


def _status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def _error(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> KubernetesError:
    return KubernetesError(status=code, reason=reason, message=message, details=details)


def _url_not_found() -> KubernetesError:
    return _error(404, "NotFound", "the server could not find the requested resource")


def _details(kind: Kind, name: str) -> Obj:
    details = {"name": name, "group": kind.group, "kind": kind.plural}
    return details if kind.group else {"name": name, "kind": kind.plural}


def _not_found(kind: Kind, name: str) -> KubernetesError:
    return _error(404, "NotFound", f'{kind.plural} "{name}" not found', _details(kind, name))


def _conflict(kind: Kind, name: str) -> KubernetesError:
    return _error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        _details(kind, name),
    )


def _bad_request(message: str) -> KubernetesError:
    return _error(400, "BadRequest", message)


def _method_not_allowed() -> KubernetesError:
    return _error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One cause of a 422 Invalid, e.g. ``spec.clusterIPs[0]: Invalid value: "1.1.1.1": ...``."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        return cls(field, f"Invalid value: {json.dumps(value)}: {detail}")

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        return cls(field, "Required value" + (f": {detail}" if detail else ""), "FieldValueRequired")


def _invalid(kind: Kind, name: str, errors: Sequence[FieldError]) -> KubernetesError:
    texts = [f"{e.field}: {e.message}" for e in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    details = {"name": name, "group": kind.group, "kind": kind.kind, "causes": causes}
    return _error(422, "Invalid", f'{kind.kind} "{name}" is invalid: {summary}', details)


# ---------------------------------------------------------------------------------------------------
# Selectors

Matcher = Callable[[Obj], bool]

_LABEL_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<absent>!)\s*(?P<akey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over labels for ``a=b,c!=d,e,!f,g in (x,y),h notin (z)``; ValueError if malformed."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for requirement in re.split(r",(?![^(]*\))", text):  # commas inside "in (a,b)" do not split
        if not requirement.strip():
            continue
        m = _LABEL_REQUIREMENT.match(requirement)
        if m is None:
            raise ValueError(f"unable to parse requirement: {requirement.strip()!r}")
        if m["absent"]:
            checks.append(lambda labels, k=m["akey"]: k not in labels)
        elif m["op"] in ("=", "=="):
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) == v)
        elif m["op"] == "!=":  # also matches objects without the label, as in Kubernetes
            checks.append(lambda labels, k=m["key"], v=m["value"]: labels.get(k) != v)
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",")}
            if m["setop"] == "in":
                checks.append(lambda labels, k=m["key"], vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=m["key"], vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=m["key"]: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)  # unset fields compare as "", e.g. spec.nodeName=


def parse_field_selector(text: str) -> Matcher:
    """A predicate over objects for ``metadata.name=x,status.phase!=Running`` (any dotted path)."""
    checks: list[Matcher] = []
    for requirement in text.split(","):
        if not requirement.strip():
            continue
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", requirement)
        if m is None:
            raise ValueError(f"invalid field selector: {requirement.strip()!r}")
        path, op, expected = m.groups()
        if op == "!=":
            checks.append(lambda obj, p=path, v=expected: _field_value(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=expected: _field_value(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)


def _selector(query: Mapping[str, str], name: str | None = None) -> Matcher:
    try:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
    except ValueError as e:
        raise _bad_request(f"invalid selector: {e}") from None

    def match(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return (name is None or meta.get("name") == name) and labels(meta.get("labels") or {}) and fields(obj)

    return match


# ---------------------------------------------------------------------------------------------------
# Patches

# The list fields a strategic merge patch merges by key instead of replacing (their patchMergeKey in
# the API's schema). Container ports are keyed by containerPort, service ports by port.
_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ports": ("containerPort", "port"),
}


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch (null deletes, lists replace); strategic=True also merges keyed lists.

    Strategic merge supports ``$patch: replace`` on maps and ``$patch: delete`` on list items; the
    other directives only order or prune and are ignored. The result shares no state with ``patch``.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif strategic and key in _MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _merge_keyed_list(old: list[Any], patch: list[Any], candidates: tuple[str, ...]) -> list[Any]:
    items = old + patch
    key = next(
        (k for k in candidates if all(isinstance(i, dict) and isinstance(i.get(k), str | int) for i in items)), None
    )
    if key is None:  # not a keyed list after all: replace it, as a merge patch would
        return copy.deepcopy(patch)
    merged = {item[key]: item for item in old}
    for item in patch:
        if item.get("$patch") == "delete":
            merged.pop(item[key], None)
        else:
            merged[item[key]] = merge_patch(merged.get(item[key]), item, strategic=True)
    return list(merged.values())


class JsonPatchError(ValueError):
    pass


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy of ``doc``."""
    if not isinstance(operations, list):
        raise JsonPatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise JsonPatchError(f"malformed operation: {op!r}")
        path = _pointer(op["path"])
        match op["op"]:
            case "add":
                doc = _pointer_apply(doc, path, "add", copy.deepcopy(_required(op, "value")))
            case "replace":
                doc = _pointer_apply(doc, path, "replace", copy.deepcopy(_required(op, "value")))
            case "remove":
                doc = _pointer_apply(doc, path, "remove")
            case "move" | "copy":
                source = _pointer(_required(op, "from"))
                value = copy.deepcopy(_pointer_apply(doc, source, "get"))
                if op["op"] == "move":
                    doc = _pointer_apply(doc, source, "remove")
                doc = _pointer_apply(doc, path, "add", value)
            case "test":
                if _pointer_apply(doc, path, "get") != _required(op, "value"):
                    raise JsonPatchError(f"test failed at {op['path']!r}")
            case other:
                raise JsonPatchError(f"unknown operation {other!r}")
    return doc


def _required(op: Mapping[str, Any], field: str) -> Any:
    if field not in op:
        raise JsonPatchError(f"operation {op['op']!r} needs {field!r}")
    return op[field]


def _pointer(path: Any) -> list[str]:
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _pointer_apply(doc: Any, path: list[str], action: str, value: Any = None) -> Any:
    """Get (returns the value) or add/replace/remove (returns the new document) at a JSON pointer."""
    if not path:
        if action == "get":
            return doc
        if action == "remove":
            raise JsonPatchError("cannot remove the whole document")
        return value
    parent = doc
    try:
        for token in path[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last: str | int = path[-1]
        if isinstance(parent, list):
            last = len(parent) if last == "-" and action == "add" else int(last)
            if not 0 <= last <= len(parent) - (action != "add"):
                raise IndexError(last)
        elif not isinstance(parent, dict):
            raise KeyError(last)
        if action == "get":
            return parent[last]
        if action == "add" and isinstance(parent, list):
            parent.insert(int(last), value)
        elif action == "remove":
            del parent[last]
        else:
            if action == "replace" and isinstance(parent, dict) and last not in parent:
                raise KeyError(last)
            parent[last] = value
    except (KeyError, IndexError, ValueError, TypeError):
        raise JsonPatchError(f"path {'/' + '/'.join(path)!r} does not exist") from None
    return doc


# ---------------------------------------------------------------------------------------------------
# The emulator

_NAME_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_GENERATED_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the API server's alphabet: no vowels, no lookalikes

_PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
_FORWARD_CHUNK = 256 * 1024  # bytes read from a pod connection per websocket frame
_MAX_FRAME = 64 * 1024 * 1024  # largest websocket frame accepted from a client


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    kind: Kind
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None  # the previous state for MODIFIED, so selectors can see objects enter and leave


class _Expired(Exception):
    pass


def _brief(value: Any) -> Any:
    """A value short enough to quote in an error message."""
    text = json.dumps(value, default=str)
    return value if len(text) <= 80 else text[:77] + "..."


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


@attrs.define(kw_only=True)
class ApiServerEmulator(KubernetesEmulator):
    """kmock's emulator grown into an API server for the lab (see the module docstring).

    Use it as an aiohttp low-level handler inside ``async with``; :class:`LabApiServer` does both.
    The object methods (``create_object`` ...) must be called on the event loop's thread.
    """

    service_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network = attrs.field(
        default="10.96.0.0/16", converter=ipaddress.ip_network
    )
    node_port_range: tuple[int, int] = (30000, 32767)
    namespaces: Sequence[str] = DEFAULT_NAMESPACES  # created at start, as in a fresh cluster
    history_limit: int = 1000  # watch events kept for resuming watches; older resourceVersions get 410

    _rv: int = attrs.field(default=0, init=False)
    _events: collections.deque[_Event] = attrs.field(factory=collections.deque, init=False)
    _floor: int = attrs.field(default=0, init=False)  # every event after this resourceVersion is kept
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)  # set at shutdown

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in KINDS:  # what kmock's discovery endpoints report
            self.resources[kind.resource] = kmock.ResourceInfo(
                kind=kind.kind,
                namespaced=kind.namespaced,
                singular=kind.kind.lower(),
                verbs=_VERBS,
                shortnames=kind.short_names,
                subresources=kind.subresources,
            )
        for name in self.namespaces:
            self.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- public object API (call on the loop thread) ----------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def create_object(self, obj: Mapping[str, Any]) -> Obj:
        """Create an object from its apiVersion/kind/metadata, as a POST would (namespace from metadata)."""
        kind = kind_of(str(obj.get("apiVersion")), str(obj.get("kind")))
        namespace = ((obj.get("metadata") or {}).get("namespace") or "default") if kind.namespaced else None
        return copy.deepcopy(self._create(kind, namespace, obj))

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        found = self._get(kind_of(api_version, kind), namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self._list(kind_of(api_version, kind), namespace))

    def delete_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        return copy.deepcopy(self._delete(kind_of(api_version, kind), namespace, name))

    def close_streams(self) -> None:
        """End every watch and port-forward (at shutdown, so the server need not wait for them)."""
        self._closing.set()
        self._notify()

    # -- HTTP entry point ---------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            route = _parse_route(raw_request.path)
            if route is not None:
                return await self._serve(raw_request, route)
        except Exception as exc:
            return await self._render_error(exc)
        path = raw_request.rel_url.path
        if path != "/" and path.endswith("/"):  # the official client asks for /api/, /apis/, /version/
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(path.rstrip("/")))
        try:
            return await super().__call__(raw_request)  # discovery and /version: kmock's scaffold
        finally:
            # kmock records every request and error for test assertions; keep a long-running server small.
            del self._requests[:-100]
            if self._errors:
                del self._errors[-1][:-100]

    async def _serve(self, raw: aiohttp.web.BaseRequest, route: _Route) -> aiohttp.web.StreamResponse:
        kind, namespace, name, method = route.kind, route.namespace, route.name, raw.method
        if kind.namespaced and namespace is None and name is not None:
            raise _url_not_found()  # e.g. /api/v1/pods/NAME: named namespaced objects need a namespace
        if route.subresource == "portforward":
            if method != "GET":
                raise _method_not_allowed()
            return await self._serve_portforward(raw, route)
        if name is None:
            if method == "GET" and _is_true(raw.query.get("watch")):
                return await self._serve_watch(raw, route)
            if method == "GET":
                return self._json(self._list_response(route, raw.query))
            if method == "POST" and (namespace is not None or not kind.namespaced):
                return self._json(self._create(kind, namespace, await self._read_json(raw)), status=201)
            raise _method_not_allowed()
        if method == "GET" and _is_true(raw.query.get("watch")):
            return await self._serve_watch(raw, route)
        if method == "GET":
            found = self._get(kind, namespace, name)
            if found is None:
                raise _not_found(kind, name)
            return self._json(found)
        if method == "PUT":
            body = await self._read_json(raw)
            return self._json(self._replace(kind, namespace, name, body, route.subresource))
        if method == "PATCH":
            body = await self._read_json(raw, allow_list=True)
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            return self._json(self._patch(kind, namespace, name, body, content_type, route.subresource))
        if method == "DELETE" and route.subresource is None:
            deleted = self._delete(kind, namespace, name)
            if kind.delete_returns_object:
                return self._json(deleted)
            details = dict(_details(kind, name), uid=deleted["metadata"]["uid"])
            return self._json(
                {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "details": details}
            )
        raise _method_not_allowed()

    @staticmethod
    def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(body, status=status)

    @staticmethod
    async def _read_json(raw: aiohttp.web.BaseRequest, allow_list: bool = False) -> Any:
        try:
            body = json.loads(await raw.read())
        except ValueError as e:
            raise _bad_request(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
            raise _bad_request("the request body must be a JSON object")
        return body

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if type(exc) is KubernetesError:  # ours, already worded like the API server
            body = _status(exc.status, exc.reason or "", exc.message or "", exc.details)
        elif isinstance(exc, kmock.KubernetesNotFoundError):  # kmock's discovery 404s mention its DSL
            body = _status(404, "NotFound", "the server could not find the requested resource")
        else:
            log.error("internal error serving a request", exc_info=exc)
            body = _status(500, "InternalError", f"Internal error occurred: {exc!r}")
        return self._json(body, status=body["code"])

    # -- kmock's discovery, completed for the strict client models ---------------------------------

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return dict(SERVER_VERSION)

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return {
            "apiVersion": "v1",
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or ""}],
        }

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        payload: Any = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        return payload

    # -- the store ----------------------------------------------------------------------------------

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> tuple[kmock.resource, str | None, str]:
        return (kind.resource, namespace if kind.namespaced else None, name)

    def _get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        key = self._key(kind, namespace, name)
        return self.objects[key].raw if key in self.objects else None

    def _list(self, kind: Kind, namespace: str | None) -> list[Obj]:
        resource = kind.resource
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == resource and (namespace is None or ns == namespace)
        ]

    def _commit(self, kind: Kind, event_type: str, obj: Obj, old: Obj | None = None) -> Obj:
        """Store (or drop, for DELETED) an object under a new resourceVersion and wake the watchers.

        Stored dicts are never changed in place afterwards, so events and readers can share them.
        """
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if event_type == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        self._events.append(_Event(self._rv, kind, event_type, obj, old))
        while len(self._events) > self.history_limit:
            self._floor = self._events.popleft().rv
        self._notify()
        return obj

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _create(self, kind: Kind, namespace: str | None, body: Mapping[str, Any]) -> Obj:
        obj = copy.deepcopy(dict(body))
        self._check_type(kind, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if self._get(_NAMESPACES, None, str(namespace)) is None:
                raise _not_found(_NAMESPACES, str(namespace))
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            while not meta.get("name") or self._get(kind, namespace, meta["name"]) is not None:
                meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATED_NAME_CHARS) for _ in range(5))
        name = str(meta.get("name") or "")
        self._check_name(kind, name)
        if self._get(kind, namespace, name) is not None:
            raise _error(409, "AlreadyExists", f'{kind.plural} "{name}" already exists', _details(kind, name))
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if "spec" in obj:
            meta["generation"] = 1
        self._admit(kind, obj, None)
        return self._commit(kind, "ADDED", obj)

    def _replace(self, kind: Kind, namespace: str | None, name: str, body: Obj, subresource: str | None) -> Obj:
        old = self._existing(kind, namespace, name)
        self._check_type(kind, body)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise _bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise _conflict(kind, name)
        return self._update(kind, old, body, subresource)

    def _patch(
        self, kind: Kind, namespace: str | None, name: str, patch: Any, content_type: str, subresource: str | None
    ) -> Obj:
        old = self._existing(kind, namespace, name)
        try:
            if content_type == "application/json-patch+json":
                new = json_patch(old, patch)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise _bad_request("a merge patch must be a JSON object")
                new = merge_patch(old, patch, strategic=content_type.startswith("application/strategic"))
            else:
                raise _error(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - "
                    f"accepted media types include: application/json-patch+json, "
                    f"application/merge-patch+json, application/strategic-merge-patch+json "
                    f"(got {content_type!r})",
                )
        except JsonPatchError as e:
            raise _error(422, "Invalid", f"the JSON patch could not be applied: {e}") from None
        if not isinstance(new, dict):
            raise _bad_request("the patch does not produce an object")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "", old["metadata"]["resourceVersion"]):  # a patch may carry a precondition
            raise _conflict(kind, name)
        return self._update(kind, old, new, subresource)

    def _update(self, kind: Kind, old: Obj, body: Obj, subresource: str | None) -> Obj:
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
        self._admit(kind, new, old)
        if "spec" in new and new.get("spec") != old.get("spec"):  # compared after defaulting, as the server does
            meta["generation"] = old_meta.get("generation", 0) + 1
        if new == old:  # kube-apiserver does not bump the resourceVersion for no-op writes
            return old
        return self._commit(kind, "MODIFIED", new, old)

    def _delete(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        old = self._existing(kind, namespace, name)
        if kind is _NAMESPACES:  # the namespace controller's cleanup, done at once
            for other in KINDS:
                if other.namespaced:
                    for obj in self._list(other, name):
                        self._commit(other, "DELETED", copy.deepcopy(obj))
        # Finalizers and grace periods are not emulated: deletion is immediate.
        return self._commit(kind, "DELETED", copy.deepcopy(old))

    def _existing(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        found = self._get(kind, namespace, name)
        if found is None:
            raise _not_found(kind, name)
        return found

    @staticmethod
    def _check_type(kind: Kind, obj: Obj) -> None:
        for field, expected in (("apiVersion", kind.api_version), ("kind", kind.kind)):
            if obj.get(field) in (None, ""):
                obj[field] = expected
            elif obj[field] != expected:
                raise _bad_request(
                    f"the {field} of the object ({obj[field]}) does not match the expected {field} ({expected})"
                )

    @staticmethod
    def _check_name(kind: Kind, name: str) -> None:
        if not name:
            raise _invalid(kind, name, [FieldError.required("metadata.name", "name or generateName is required")])
        if kind.kind == "Service":
            ok, rule = bool(_NAME_1035.match(name)) and len(name) <= 63, "a DNS-1035 label"
        elif kind.kind == "Namespace":
            ok, rule = bool(_NAME_LABEL.match(name)) and len(name) <= 63, "a lowercase RFC 1123 label"
        else:
            ok, rule = bool(_NAME_SUBDOMAIN.match(name)) and len(name) <= 253, "a lowercase RFC 1123 subdomain"
        if not ok:
            raise _invalid(kind, name, [FieldError.invalid("metadata.name", name, f"must be {rule}")])

    # -- admission: defaults and validation per kind ------------------------------------------------

    def _admit(self, kind: Kind, obj: Obj, old: Obj | None) -> None:
        """Fill defaults and validate ``obj`` (``old`` is the stored state on updates); raises 422."""
        for section in ("spec", "status"):  # the per-kind rules below may then rely on dicts
            if obj.get(section) is None:
                obj.pop(section, None)
            elif not isinstance(obj[section], dict):
                raise _invalid(
                    kind,
                    obj["metadata"]["name"],
                    [FieldError.invalid(section, _brief(obj[section]), "must be an object")],
                )
        errors: list[FieldError] = []
        admit = {
            "Namespace": self._admit_namespace,
            "Pod": self._admit_pod,
            "Service": self._admit_service,
            "Deployment": self._admit_deployment,
        }.get(kind.kind)
        if admit is not None:
            admit(obj, old, errors)
        if not errors:
            errors = self._check_model(kind, obj)
        if errors:
            raise _invalid(kind, obj["metadata"]["name"], errors)

    @staticmethod
    def _check_model(kind: Kind, obj: Obj) -> list[FieldError]:
        # The official client validates every response strictly; refuse to store what it cannot read.
        try:
            kind.model().from_dict(obj)
        except ValueError as e:  # pydantic.ValidationError
            details = e.errors() if hasattr(e, "errors") else [{"loc": (), "msg": str(e)}]
            title = getattr(e, "title", kind.kind)
            return [
                FieldError.invalid(".".join([title, *map(str, d.get("loc", ()))]), _brief(d.get("input")), d["msg"])
                for d in details
            ]
        return []

    def _admit_namespace(self, obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")

    def _admit_pod(self, obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
        containers = obj.get("spec", {}).get("containers")
        if not containers:
            errors.append(FieldError.required("spec.containers"))
        for i, container in enumerate(containers if isinstance(containers, list) else []):
            if isinstance(container, dict) and not container.get("image"):
                errors.append(FieldError.required(f"spec.containers[{i}].image"))
        # The lab runs the pods itself and creates them with their status; keep it, but complete it.
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        for single, plural in (("podIP", "podIPs"), ("hostIP", "hostIPs")):
            ip = status.get(single)
            listed = status.get(plural)
            if ip and not (isinstance(listed, list) and listed and listed[0] == {"ip": ip}):
                status[plural] = [{"ip": ip}]

    def _admit_deployment(self, obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not spec.get("selector"):
            errors.append(FieldError.required("spec.selector"))
        elif any(labels.get(k) != v for k, v in selector.items()):
            errors.append(
                FieldError.invalid(
                    "spec.template.metadata.labels", labels, "`selector` does not match template `labels`"
                )
            )

    def _admit_service(self, obj: Obj, old: Obj | None, errors: list[FieldError]) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        obj.setdefault("status", {"loadBalancer": {}})
        ports = [port for port in spec.get("ports") or [] if isinstance(port, dict)]  # the model check sees the rest
        for port in ports:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        types = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
        if spec["type"] not in types:
            supported = ", ".join(f'"{t}"' for t in types)
            errors.append(
                FieldError(
                    "spec.type",
                    f"Unsupported value: {json.dumps(spec['type'])}: supported values: {supported}",
                    "FieldValueNotSupported",
                )
            )
            return
        if spec["type"] == "ExternalName":
            return
        others = [
            svc
            for svc in self._list(_SERVICES, None)
            if old is None or svc["metadata"]["uid"] != old["metadata"]["uid"]
        ]
        self._assign_cluster_ip(spec, old, others, errors)
        if not ports and spec.get("clusterIP") != "None":
            errors.append(FieldError.required("spec.ports"))
        if spec["type"] in ("NodePort", "LoadBalancer"):
            self._assign_node_ports(ports, old, others, errors)

    def _assign_cluster_ip(self, spec: Obj, old: Obj | None, others: list[Obj], errors: list[FieldError]) -> None:
        field = "spec.clusterIPs[0]"
        listed = spec.get("clusterIPs")
        requested = spec.get("clusterIP") or (listed[0] if isinstance(listed, list) and listed else "")
        previous = (old or {}).get("spec", {}).get("clusterIP")
        if not isinstance(requested, str):
            errors.append(FieldError.invalid(field, _brief(requested), "must be a string"))
            return
        if previous:  # an update: the address is kept, never changed
            if requested not in ("", previous):
                errors.append(FieldError.invalid(field, [requested], "may not change once set"))
                return
            requested = previous
        elif requested == "None":
            pass  # headless: no address
        elif requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                errors.append(
                    FieldError.invalid(
                        field, requested, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                    )
                )
                return
            cidr = self.service_cidr
            if ip not in cidr or ip == cidr.network_address or (cidr.version == 4 and ip == cidr.broadcast_address):
                errors.append(
                    FieldError.invalid(
                        field,
                        requested,
                        f"failed to allocate IP {requested}: the provided IP ({requested}) is not in "
                        f"the valid range. The range of valid IPs is {cidr}",
                    )
                )
                return
            if any(svc.get("spec", {}).get("clusterIP") == requested for svc in others):
                errors.append(
                    FieldError.invalid(
                        field, requested, f"failed to allocate IP {requested}: provided IP is already allocated"
                    )
                )
                return
        else:
            used = {svc.get("spec", {}).get("clusterIP") for svc in others}
            free = next((str(ip) for ip in self.service_cidr.hosts() if str(ip) not in used), None)
            if free is None:
                raise _error(
                    500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full"
                )
            requested = free
        spec["clusterIP"] = requested
        spec["clusterIPs"] = [requested]
        if requested != "None":
            family = f"IPv{ipaddress.ip_address(requested).version}"
            spec.setdefault("ipFamilies", [family])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")

    def _assign_node_ports(
        self, ports: list[Any], old: Obj | None, others: list[Obj], errors: list[FieldError]
    ) -> None:
        low, high = self.node_port_range
        used = {p.get("nodePort") for svc in others for p in svc.get("spec", {}).get("ports") or []}
        # An update that leaves nodePort out keeps the one allocated before.
        old_ports = (old or {}).get("spec", {}).get("ports") or []
        kept = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_ports}
        for i, port in enumerate(ports):
            node_port = port.get("nodePort") or kept.get((port.get("port"), port.get("protocol")))
            if node_port is None:
                node_port = next((p for p in range(low, high + 1) if p not in used), None)
                if node_port is None:
                    raise _error(
                        500, "InternalError", "Internal error occurred: failed to allocate a nodePort: range is full"
                    )
                port["nodePort"] = node_port
            elif not isinstance(node_port, int):
                continue  # the model check reports it
            elif not low <= node_port <= high:
                errors.append(
                    FieldError.invalid(
                        f"spec.ports[{i}].nodePort",
                        node_port,
                        f"provided port is not in the valid range. The range of valid ports is {low}-{high}",
                    )
                )
            elif node_port in used:
                errors.append(
                    FieldError.invalid(f"spec.ports[{i}].nodePort", node_port, "provided port is already allocated")
                )
            used.add(node_port)

    # -- list and watch ----------------------------------------------------------------------------

    def _list_response(self, route: _Route, query: Mapping[str, str]) -> Obj:
        match = _selector(query)
        return {
            "apiVersion": route.kind.api_version,
            "kind": route.kind.kind + "List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [obj for obj in self._list(route.kind, route.namespace) if match(obj)],
        }

    async def _serve_watch(self, raw: aiohttp.web.BaseRequest, route: _Route) -> aiohttp.web.StreamResponse:
        match = _selector(raw.query, route.name)
        try:
            since = int(raw.query.get("resourceVersion") or 0)
            timeout = float(raw.query["timeoutSeconds"]) if raw.query.get("timeoutSeconds") else None
        except ValueError:
            raise _bad_request("resourceVersion and timeoutSeconds must be numbers") from None
        initial: list[Obj] = []
        if since == 0:  # "any version": start with the current state, as synthetic ADDED events
            initial = [obj for obj in self._list(route.kind, route.namespace) if match(obj)]
            since = self._rv

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        async def send(event_type: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

        try:
            async with asyncio.timeout(timeout):
                for obj in initial:
                    await send("ADDED", obj)
                async for event in self._events_after(since):
                    translated = self._translate(event, route, match)
                    if translated is not None:
                        await send(*translated)
        except TimeoutError:
            pass  # timeoutSeconds: the stream ends normally and the client re-lists or re-watches
        except _Expired:
            message = f"too old resource version: {since} ({self._floor + 1})"
            with contextlib.suppress(ConnectionError):
                await send("ERROR", _status(410, "Expired", message))
        except ConnectionError:
            return response  # the client went away
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _events_after(self, since: int) -> AsyncIterator[_Event]:
        cursor = since
        while not self._closing.is_set():
            changed = self._changed
            if cursor < self._floor:
                raise _Expired()
            if self._events and cursor < self._events[-1].rv:
                # The log holds consecutive resourceVersions, so the position of cursor+1 is known.
                start = max(cursor + 1 - self._events[0].rv, 0)
                batch = list(itertools.islice(self._events, start, None))  # a copy: writes go on while we send
                for event in batch:
                    yield event
                cursor = batch[-1].rv
                continue
            await changed.wait()

    @staticmethod
    def _translate(event: _Event, route: _Route, match: Matcher) -> tuple[str, Obj] | None:
        """The event a watcher sees: objects moving into or out of its selector appear or disappear."""
        if event.kind is not route.kind:
            return None
        if route.namespace is not None and event.obj["metadata"].get("namespace") != route.namespace:
            return None
        now = match(event.obj)
        before = event.old is not None and match(event.old)
        if event.type != "MODIFIED":
            return (event.type, event.obj) if now else None
        if now:
            return ("MODIFIED" if before else "ADDED", event.obj)
        return ("DELETED", event.obj) if before else None

    # -- pods/portforward --------------------------------------------------------------------------

    async def _serve_portforward(self, raw: aiohttp.web.BaseRequest, route: _Route) -> aiohttp.web.StreamResponse:
        assert route.name is not None and route.namespace is not None
        pod = self._existing(route.kind, route.namespace, route.name)
        ports: list[int] = []
        for value in raw.query.getall("ports", []):  # "ports=80,443" and "ports=80&ports=443" both occur
            for text in value.split(","):
                if not text.strip().isdigit() or not 0 < int(text) < 65536:
                    raise _bad_request(f'invalid port {text!r} in the "ports" query parameter')
                ports.append(int(text))
        if not ports:
            raise _bad_request('query parameter "ports" is required')
        pod_ip = (pod.get("status") or {}).get("podIP")
        if not pod_ip:
            raise _bad_request(f"pod {route.namespace}/{route.name} has no IP address (status.podIP is empty)")
        ws = aiohttp.web.WebSocketResponse(
            protocols=_PORTFORWARD_PROTOCOLS, compress=False, max_msg_size=_MAX_FRAME, timeout=2.0
        )
        if not ws.can_prepare(raw).ok:
            raise _bad_request("port forwarding needs a websocket upgrade request")
        await ws.prepare(raw)
        await _PortForward(ws, pod_ip, ports, f"{route.namespace}/{route.name}").run(self._closing)
        return ws


class _PortForward:
    """One port-forward websocket (v4.channel.k8s.io): per port i, data on channel 2i, errors on 2i+1.

    What a pod sends is written to the websocket's transport within the pod connection's own callback (a
    frame is a header, the channel byte and the data; a server does not mask), and what the client sends is
    written to the pod's transport as aiohttp hands over each message, without streams or tasks in between.
    Each side's back-pressure pauses the other.
    """

    class _Pod(asyncio.Protocol):
        """One forwarded port's connection to the pod."""

        def __init__(self, forward: _PortForward, channel: int) -> None:
            self.forward = forward
            self.prefix = bytes((channel,))
            self.transport: asyncio.Transport | None = None
            self.lost = asyncio.get_running_loop().create_future()
            self.writable = asyncio.Event()
            self.writable.set()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

        def data_received(self, data: bytes) -> None:
            self.forward._to_client(self.prefix, data)

        def eof_received(self) -> bool:
            return False  # v4 framing has no half-close: the pod is done with this port

        def connection_lost(self, exc: Exception | None) -> None:
            self.writable.set()
            if not self.lost.done():
                self.lost.set_result(None)

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

    def __init__(self, ws: aiohttp.web.WebSocketResponse, host: str, ports: list[int], pod: str) -> None:
        self.ws, self.host, self.ports, self.pod = ws, host, ports, pod
        self.pods: dict[int, _PortForward._Pod] = {}  # by data channel
        self._draining: asyncio.Task[None] | None = None
        # aiohttp keeps the prepared websocket's transport (and the protocol that knows when it drains) in its
        # writer; our frames go there directly.
        writer = getattr(ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None or not hasattr(transport, "write"):  # uvloop's are not asyncio.Transport subclasses
            raise RuntimeError("the port-forward needs a prepared websocket whose transport aiohttp exposes")
        self._transport = transport
        self._protocol = getattr(writer, "protocol", None)

    async def run(self, closing: asyncio.Event) -> None:
        # Like the kubelet, first announce each port on both of its channels (the client checks them).
        for i, port in enumerate(self.ports):
            for channel in (2 * i, 2 * i + 1):
                await self.ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))
        inbound: asyncio.Task[None] | None = None
        try:
            dials = await asyncio.gather(
                *(self._dial(port, 2 * i) for i, port in enumerate(self.ports)), return_exceptions=True
            )
            for i, (port, dialed) in enumerate(zip(self.ports, dials, strict=True)):
                if isinstance(dialed, BaseException):
                    reason = os.strerror(dialed.errno).lower() if getattr(dialed, "errno", None) else str(dialed)
                    message = f"error forwarding port {port} to pod {self.pod}: dial tcp {self.host}:{port}: {reason}"
                    await self.ws.send_bytes(bytes([2 * i + 1]) + message.encode())
                    continue
                self.pods[2 * i] = dialed
            if self.pods:
                # The session ends when the client hangs up, when every pod connection has closed, or at
                # server shutdown.
                inbound = asyncio.create_task(self._client_to_pod())
                pods_gone = asyncio.gather(*(pod.lost for pod in self.pods.values()))
                shutdown = asyncio.create_task(closing.wait())
                await asyncio.wait([inbound, pods_gone, shutdown], return_when=asyncio.FIRST_COMPLETED)
                shutdown.cancel()
        finally:
            for pod in self.pods.values():
                if pod.transport is not None:
                    pod.transport.close()
            if self._draining is not None:
                self._draining.cancel()
            await self.ws.close()
            if inbound is not None:
                inbound.cancel()
                await asyncio.gather(inbound, return_exceptions=True)

    async def _dial(self, port: int, channel: int) -> _PortForward._Pod:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(10):
                _, pod = await loop.create_connection(lambda: _PortForward._Pod(self, channel), self.host, port)
        except TimeoutError:
            raise OSError("i/o timeout") from None
        return pod

    def _to_client(self, prefix: bytes, data: bytes) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        size = len(data) + 1
        if size < 126:
            header = bytes((0x82, size))
        elif size < 65536:
            header = bytes((0x82, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x82, 127)) + size.to_bytes(8, "big")
        if size < 65536:
            transport.write(header + prefix + data)
        else:  # no copy of a big chunk: the header, then the data as it came
            transport.write(header + prefix)
            transport.write(data)
        if self._draining is None and transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            # The client reads slower than the pods send: stop reading them until the websocket has drained.
            for pod in self.pods.values():
                if pod.transport is not None:
                    pod.transport.pause_reading()
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        transport = self._transport
        drain = getattr(self._protocol, "_drain_helper", None)  # aiohttp's: returns once the transport resumed
        try:
            if drain is not None:
                await drain()
            else:
                while transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]:
                    await asyncio.sleep(0.001)
        except ConnectionError:
            return
        finally:
            self._draining = None
        for pod in self.pods.values():
            if pod.transport is not None:
                pod.transport.resume_reading()

    async def _client_to_pod(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY or len(message.data) < 2:
                continue  # pings are answered by aiohttp; empty frames carry nothing
            pod = self.pods.get(message.data[0])
            if pod is None or pod.transport is None or pod.transport.is_closing():
                continue  # error channels and failed ports take no data
            pod.transport.write(memoryview(message.data)[1:])
            if not pod.writable.is_set():
                await pod.writable.wait()  # back-pressure: stop reading the websocket while the pod is slow


# ---------------------------------------------------------------------------------------------------
# Serving


def _describe(obj: Mapping[str, Any]) -> str:
    """E.g. "Service default/web", for messages about objects that may not be valid."""
    meta = obj.get("metadata") or {}
    kind = _KINDS_BY_TYPE.get((obj.get("apiVersion"), obj.get("kind")))
    namespace = meta.get("namespace") or ("default" if kind is not None and kind.namespaced else "")
    return f"{obj.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class LabApiServer:
    """Serve an :class:`ApiServerEmulator` over plain HTTP while inside ``async with``.

    ``seed`` objects are created before the port opens; ``emulator_options`` go to the emulator
    (``service_cidr``, ``history_limit``, ``namespaces``, ``node_port_range``).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, seed: Iterable[Mapping[str, Any]] = (), **emulator_options: Any
    ) -> None:
        self.host, self.port = host, port
        self.seed = list(seed)
        self.emulator_options = emulator_options
        self.emulator: ApiServerEmulator | None = None
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def kubeconfig(self, **options: Any) -> Obj:
        return kubeconfig_for(self.url, **options)

    async def __aenter__(self) -> Self:
        emulator = ApiServerEmulator(**self.emulator_options)
        await emulator.__aenter__()
        try:
            for i, obj in enumerate(self.seed):
                try:
                    emulator.create_object(obj)
                except KubernetesError as e:
                    raise SeedError(f"seed object #{i} ({_describe(obj)}): {e.message}") from None
            server = aiohttp.web.Server(
                emulator, handler_cancellation=True, access_log=access_log, access_log_format='%a "%r" %s %b %Tfs'
            )
            # Streams are ended at shutdown (close_streams); this bounds the wait for anything else.
            self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await self._runner.setup()
            await aiohttp.web.TCPSite(self._runner, self.host, self.port).start()
            self.port = self._runner.addresses[0][1]
        except BaseException:
            await self._close(emulator)
            raise
        self.emulator = emulator
        log.info("serving the Kubernetes API on %s", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.emulator is not None
        await self._close(self.emulator)
        self.emulator = None

    async def _close(self, emulator: ApiServerEmulator) -> None:
        emulator.close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await emulator.__aexit__(None, None, None)


class SeedError(Exception):
    pass


class LabApiServerThread:
    """A :class:`LabApiServer` on its own event loop in a daemon thread, for synchronous callers (tests).

    ``with LabApiServerThread(service_cidr='10.96.0.0/16') as server: ... server.url ...``
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.server: LabApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return self.server.url

    @property
    def emulator(self) -> ApiServerEmulator:
        assert self.server is not None and self.server.emulator is not None, "not started"
        return self.server.emulator

    def kubeconfig(self, **options: Any) -> Obj:
        return kubeconfig_for(self.url, **options)

    def start(self) -> str:
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                async with LabApiServer(**self.options) as server:
                    self.server = server
                    started.set()
                    await self._stop.wait()
            except BaseException as e:  # handed to start()'s caller
                failure.append(e)
            finally:
                started.set()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="lab-apiserver", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self.url

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (where the emulator's methods must run); return its result."""
        assert self._loop is not None, "not started"

        async def invoke() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def kubeconfig_for(url: str, *, name: str = "tether-lab", namespace: str = "default") -> Obj:
    """A kubeconfig (as a dict) with one context for an unauthenticated API server at ``url``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


# ---------------------------------------------------------------------------------------------------
# Command line


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _service_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load_seed(path: Path) -> list[Obj]:
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(o, dict) for o in data):
        raise ValueError("the seed file must hold a JSON list of Kubernetes objects")
    return data


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _serve_until_signalled(args: argparse.Namespace, seed: list[Obj]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = args.listen
    async with LabApiServer(host=host, port=port, seed=seed, service_cidr=args.service_cidr) as server:
        if args.kubeconfig:
            _write_atomically(args.kubeconfig, json.dumps(server.kubeconfig(), indent=2) + "\n")
        if args.ready_file:
            _write_atomically(args.ready_file, server.url + "\n")
        try:
            await stop.wait()
        finally:
            if args.ready_file:
                args.ready_file.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tether.lab.apiserver",
        description="Serve the lab cluster's Kubernetes API (an emulator).",
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        required=True,
        metavar="HOST:PORT",
        help="address to serve plain HTTP on (port 0 picks a free one)",
    )
    parser.add_argument(
        "--service-cidr",
        type=_service_cidr,
        required=True,
        metavar="CIDR",
        help="the range Service ClusterIPs are allocated from, e.g. 10.96.0.0/16",
    )
    parser.add_argument("--seed", type=Path, metavar="FILE.json", help="JSON list of objects to create at start")
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="written with the URL once the port is listening; removed at exit",
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH", help="write a kubeconfig for the server here")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        seed = _load_seed(args.seed) if args.seed else []
        eventloop.run(_serve_until_signalled(args, seed))
    except (OSError, ValueError, SeedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
