"""API discovery and ``/version`` as kube-apiserver serves them: the legacy documents (``/api``, ``/api/v1``,
``/apis``, ``/apis/GROUP``, ``/apis/GROUP/VERSION``) and aggregated discovery (``apidiscovery.k8s.io/v2`` on
``/api`` and ``/apis``, which kubectl asks for first), built from the served kinds. Subresources are listed
as ``pods/status`` entries without short names (legacy) or in their resource's ``subresources`` (aggregated),
so that clients resolving a short name find only the resource itself."""

from __future__ import annotations

import aiohttp.web
import attrs
import kmock
from kmock import KubernetesEmulator

from tether.lab.apiserver.errors import error_response, url_not_found
from tether.lab.apiserver.kinds import KINDS, Kind, Obj
from tether.lab.apiserver.negotiation import AGGREGATED_DISCOVERY_TYPE, wants_aggregated_discovery
from tether.lab.apiserver.openapi import openapi_document

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
_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
# What kube-apiserver allows on each subresource the emulator serves.
_SUBRESOURCE_VERBS = {"status": ("get", "patch", "update"), "portforward": ("create", "get"), "finalize": ("update",)}
# The kinds `kubectl get all` shows (their "all" category).
_IN_ALL = {"Pod", "Service", "Deployment"}


def _group_versions() -> dict[str, list[str]]:
    """Each served API group (not the core one) and its versions, in the order the kinds list them."""
    groups: dict[str, list[str]] = {}
    for kind in KINDS:
        if kind.group and kind.version not in groups.setdefault(kind.group, []):
            groups[kind.group].append(kind.version)
    return groups


def _categories(kind: Kind) -> list[str]:
    return ["all"] if kind.kind in _IN_ALL else []


def resource_list(group: str, version: str) -> Obj | None:
    """The legacy APIResourceList of one group version, or None if nothing is served there."""
    kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
    if not kinds:
        return None
    resources: list[Obj] = []
    for kind in kinds:
        base = {"singularName": kind.kind.lower(), "namespaced": kind.namespaced, "kind": kind.kind}
        resources.append(
            dict(base, name=kind.plural, verbs=list(_VERBS), shortNames=list(kind.short_names))
            | ({"categories": _categories(kind)} if _categories(kind) else {})
        )
        for sub in kind.subresources:  # no short names: those belong to the resource alone
            resources.append(
                dict(base, name=f"{kind.plural}/{sub}", singularName="", verbs=list(_SUBRESOURCE_VERBS[sub]))
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kind.api_version, "resources": resources}


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list() -> Obj:
    groups = [_group(name, versions) for name, versions in _group_versions().items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _aggregated_resource(kind: Kind) -> Obj:
    response_kind = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    resource: Obj = {
        "resource": kind.plural,
        "responseKind": response_kind,
        "scope": "Namespaced" if kind.namespaced else "Cluster",
        "singularResource": kind.kind.lower(),
        "verbs": list(_VERBS),
    }
    if kind.short_names:
        resource["shortNames"] = list(kind.short_names)
    if _categories(kind):
        resource["categories"] = _categories(kind)
    if kind.subresources:
        resource["subresources"] = [
            {"subresource": sub, "responseKind": response_kind, "verbs": list(_SUBRESOURCE_VERBS[sub])}
            for sub in kind.subresources
        ]
    return resource


def aggregated_discovery(core: bool) -> Obj:
    """The apidiscovery.k8s.io/v2 APIGroupDiscoveryList of ``/api`` (core) or ``/apis`` (the groups)."""
    groups = {"": ["v1"]} if core else _group_versions()
    items = []
    for name, versions in groups.items():
        entries = [
            {
                "version": v,
                "resources": [_aggregated_resource(k) for k in KINDS if (k.group, k.version) == (name, v)],
                "freshness": "Current",
            }
            for v in versions
        ]
        items.append({"metadata": {"name": name} if name else {}, "versions": entries})
    return {"apiVersion": "apidiscovery.k8s.io/v2", "kind": "APIGroupDiscoveryList", "metadata": {}, "items": items}


def discovery_document(path: str, accept: str, server_host: str) -> tuple[Obj, str] | None:
    """The discovery document at ``path`` and its content type, or None for a path that is not discovery.

    Raises the API server's 404 for a group or version that is not served.
    """
    parts = [p for p in path.split("/") if p]
    aggregated = wants_aggregated_discovery(accept)
    if parts == ["api"]:
        if aggregated:
            return aggregated_discovery(core=True), AGGREGATED_DISCOVERY_TYPE
        addresses = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_host}]
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addresses}, "application/json"
    if parts == ["apis"]:
        if aggregated:
            return aggregated_discovery(core=False), AGGREGATED_DISCOVERY_TYPE
        return group_list(), "application/json"
    if len(parts) == 2 and parts[0] == "apis":
        versions = _group_versions().get(parts[1])
        if versions is None:
            raise url_not_found()
        return dict(_group(parts[1], versions), kind="APIGroup", apiVersion="v1"), "application/json"
    if parts and parts[0] == "openapi":
        document = openapi_document(path)
        if document is None:
            raise url_not_found()
        return document, "application/json"
    if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        found = resource_list(group, version)
        if found is None:
            raise url_not_found()
        return found, "application/json"
    return None


@attrs.define(kw_only=True)
class DiscoveryEmulator(KubernetesEmulator):
    """kmock's emulator reporting the served kinds; the resource URLs themselves are a subclass's to serve."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in KINDS:  # kmock's own views of the store key objects by these
            self.resources[kind.resource] = kmock.ResourceInfo(
                kind=kind.kind,
                namespaced=kind.namespaced,
                singular=kind.kind.lower(),
                verbs=_VERBS,
                shortnames=kind.short_names,
                subresources=kind.subresources,
            )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.rel_url.path
        if path != "/" and path.endswith("/"):  # the official client asks for /api/, /apis/, /version/
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_path(path.rstrip("/")))
        try:
            if raw_request.method == "GET":
                found = discovery_document(
                    raw_request.rel_url.path, raw_request.headers.get("Accept", ""), raw_request.url.host or ""
                )
                if found is not None:
                    body, content_type = found
                    response = aiohttp.web.json_response(body)
                    response.headers["Content-Type"] = content_type
                    return response
            return await super().__call__(raw_request)
        except Exception as exc:
            return error_response(exc)
        finally:
            # kmock records every request and error for test assertions; keep a long-running server small.
            del self._requests[:-100]
            if self._errors:
                del self._errors[-1][:-100]

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        return error_response(exc)

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return dict(SERVER_VERSION)
