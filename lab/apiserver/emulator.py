"""The emulator's HTTP face: each resource request routed to the store, a list or watch, or a port-forward,
and the object API the lab and tests use in-process; everything else goes to kmock (discovery)."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs

from tether.lab.apiserver.authz import Authorizer, verb_of
from tether.lab.apiserver.discovery import DiscoveryEmulator
from tether.lab.apiserver.errors import (
    bad_request,
    details,
    error_response,
    method_not_allowed,
    not_found,
    url_not_found,
)
from tether.lab.apiserver.kinds import PODS, Kind, Obj
from tether.lab.apiserver.negotiation import TABLE_TYPE, wants_table
from tether.lab.apiserver.portforward import serve_portforward
from tether.lab.apiserver.routing import Route, kind_of, parse_route
from tether.lab.apiserver.store import Store
from tether.lab.apiserver.strict import check_strict
from tether.lab.apiserver.tables import table
from tether.lab.apiserver.tokenrequest import match as token_request_path
from tether.lab.apiserver.tokenrequest import request_token
from tether.lab.apiserver.tokens import TOKENREVIEWS_PATH, BoundToken, TokenRegistry
from tether.lab.apiserver.watch import list_response, serve_watch

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


@attrs.define(kw_only=True)
class ApiServerEmulator(DiscoveryEmulator):
    """kmock's emulator grown into an API server for the lab (see the package docstring).

    Use it as an aiohttp low-level handler inside ``async with``; :class:`LabApiServer` does both.
    The object methods (``create_object`` ...) must be called on the event loop's thread.
    """

    service_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network = attrs.field(
        default="10.96.0.0/16", converter=ipaddress.ip_network
    )
    node_port_range: tuple[int, int] = (30000, 32767)
    namespaces: Sequence[str] = DEFAULT_NAMESPACES  # created at start, as in a fresh cluster
    history_limit: int = 1000  # watch events kept for resuming watches; older resourceVersions get 410
    authorizer: Authorizer | None = None  # None: every request is allowed (see authz)
    #: service-account tokens bound to pods (see tokens.TokenRegistry.load), for TokenReview
    token_file: Path | None = None
    #: report Deployments' status from their pods (see rollout); off where a controller of the lab reports it
    derive_deployment_status: bool = True

    store: Store = attrs.field(init=False)
    tokens: TokenRegistry = attrs.field(factory=TokenRegistry, init=False)
    _closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)  # set at shutdown

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store = Store(
            self.objects,
            service_cidr=self.service_cidr,
            node_port_range=self.node_port_range,
            history_limit=self.history_limit,
            derive_deployment_status=self.derive_deployment_status,
        )
        for name in self.namespaces:
            self.create_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if self.token_file is not None:
            self.tokens.load(self.token_file)

    # -- public object API (call on the loop thread) ----------------------------------------------

    @property
    def resource_version(self) -> int:
        return self.store.version

    def create_object(self, obj: Mapping[str, Any], keep_uid: bool = False) -> Obj:
        """Create an object from its apiVersion/kind/metadata, as a POST would (namespace from metadata);
        ``keep_uid`` keeps the uid it brings (seed objects, whose ownerReferences name their owners' uids)."""
        kind = kind_of(str(obj.get("apiVersion")), str(obj.get("kind")))
        namespace = ((obj.get("metadata") or {}).get("namespace") or "default") if kind.namespaced else None
        return copy.deepcopy(self.store.create(kind, namespace, obj, keep_uid))

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        found = self.store.get(kind_of(api_version, kind), namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.store.objects_of(kind_of(api_version, kind), namespace))

    def delete_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        return copy.deepcopy(self.store.delete(kind_of(api_version, kind), namespace, name))

    def issue_token(self, namespace: str, pod: str, audiences: Sequence[str], service_account: str = "default") -> str:
        """A new token bound to the pod as it is now (the kubelet's TokenRequest for a projected volume)."""
        found = self.store.existing(PODS, namespace, pod)
        bound = BoundToken(namespace, pod, tuple(audiences), service_account, found["metadata"]["uid"])
        return self.tokens.issue(bound)

    def close_streams(self) -> None:
        """End every watch and port-forward (at shutdown, so the server need not wait for them)."""
        self._closing.set()
        self.store.history.notify()

    # -- HTTP entry point ---------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            if raw_request.path.rstrip("/") == TOKENREVIEWS_PATH:
                return await self._review(raw_request)
            if (account := token_request_path(raw_request.path)) is not None:
                return await self._token_request(raw_request, *account)
            route = parse_route(raw_request.path)
            if route is not None:
                return await self._serve(raw_request, route)
        except Exception as exc:
            return error_response(exc)
        return await super().__call__(raw_request)  # discovery and /version: kmock's scaffold

    async def _review(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.method != "POST":
            raise method_not_allowed()
        body = await _read_json(raw)
        return _json(self.tokens.review(body, lambda ns, name: self.store.get(PODS, ns, name)), status=201)

    async def _token_request(self, raw: aiohttp.web.BaseRequest, namespace: str, account: str) -> aiohttp.web.Response:
        if raw.method != "POST":
            raise method_not_allowed()
        body = await _read_json(raw)
        answer = request_token(self.tokens, namespace, account, body, lambda ns, name: self.store.get(PODS, ns, name))
        return _json(answer, status=201)

    async def _serve(self, raw: aiohttp.web.BaseRequest, route: Route) -> aiohttp.web.StreamResponse:
        kind, namespace, name, method = route.kind, route.namespace, route.name, raw.method
        if kind.namespaced and namespace is None and name is not None:
            raise url_not_found()  # e.g. /api/v1/pods/NAME: named namespaced objects need a namespace
        if self.authorizer is not None:
            verb = verb_of(method, name is not None, _is_true(raw.query.get("watch")))
            self.authorizer.check(raw.headers.get("Authorization", ""), verb, kind, namespace, name, route.subresource)
        if route.subresource == "portforward":
            if method != "GET":
                raise method_not_allowed()
            assert name is not None and namespace is not None
            return await serve_portforward(raw, self.store.existing(kind, namespace, name), self._closing)
        if name is None:
            if method == "GET" and _is_true(raw.query.get("watch")):
                return await serve_watch(raw, route, self.store, self._closing)
            if method == "GET":
                listed = list_response(self.store, route, raw.query)
                return _as_table(raw, kind, listed["items"], listed["metadata"]) or _json(listed)
            if method == "POST" and (namespace is not None or not kind.namespaced):
                body = await _read_json(raw)
                check_strict(kind, body, raw.query.get("fieldValidation"))
                return _json(self.store.create(kind, namespace, body), status=201)
            raise method_not_allowed()
        if method == "GET" and _is_true(raw.query.get("watch")):
            return await serve_watch(raw, route, self.store, self._closing)
        if method == "GET":
            found = self.store.get(kind, namespace, name)
            if found is None:
                raise not_found(kind, name)
            return _as_table(raw, kind, [found], found["metadata"]) or _json(found)
        if method == "PUT":
            body = await _read_json(raw)
            check_strict(kind, body, raw.query.get("fieldValidation"))
            return _json(self.store.replace(kind, namespace, name, body, route.subresource))
        if method == "PATCH":
            body = await _read_json(raw, allow_list=True)
            check_strict(kind, body, raw.query.get("fieldValidation"))
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            return _json(self.store.patch(kind, namespace, name, body, content_type, route.subresource))
        if method == "DELETE" and route.subresource is None:
            deleted = self.store.delete(kind, namespace, name, await _propagation_policy(raw))
            if kind.delete_returns_object:
                return _json(deleted)
            found = dict(details(kind, name), uid=deleted["metadata"]["uid"])
            return _json({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "details": found})
        raise method_not_allowed()


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(body, status=status)


def _as_table(raw: aiohttp.web.BaseRequest, kind: Kind, objects: list[Obj], meta: Obj) -> aiohttp.web.Response | None:
    """The Table a client such as kubectl asks for in its Accept header; None if it wants the objects."""
    if not wants_table(raw.headers.get("Accept", "")):
        return None
    found = table(
        kind, objects, resource_version=meta["resourceVersion"], include_object=raw.query.get("includeObject")
    )
    response = _json(found)
    response.headers["Content-Type"] = TABLE_TYPE
    return response


async def _propagation_policy(raw: aiohttp.web.BaseRequest) -> str | None:
    """A DELETE's propagationPolicy, from its DeleteOptions body (kubectl) or the query string."""
    body = await raw.read()
    options = await _read_json(raw) if body.strip() else {}
    return options.get("propagationPolicy") or raw.query.get("propagationPolicy")


async def _read_json(raw: aiohttp.web.BaseRequest, allow_list: bool = False) -> Any:
    try:
        body = json.loads(await raw.read())
    except ValueError as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
        raise bad_request("the request body must be a JSON object")
    return body
