"""TokenRequest (``POST /api/v1/namespaces/NS/serviceaccounts/SA/token``): how a kubelet gets the token of a
pod's projected service-account volume. The token is bound to the pod it names (kind Pod, name, uid) and
registered for TokenReview (see :mod:`.tokens`). Service accounts themselves are not emulated: every name is
accepted, as the ``default`` account of each namespace exists in a real cluster."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from tether.lab.apiserver.errors import bad_request, error
from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.tokens import API_AUDIENCE, BoundToken, TokenRegistry

_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/serviceaccounts/(?P<sa>[^/]+)/token/?$")
DEFAULT_EXPIRATION = 3600

#: (namespace, name) -> the pod as stored, or None
PodLookup = Callable[[str, str], Obj | None]


def match(path: str) -> tuple[str, str] | None:
    """(namespace, service account) for a TokenRequest URL, None for any other."""
    found = _PATH.match(path)
    return (found["ns"], found["sa"]) if found else None


def request_token(
    registry: TokenRegistry, namespace: str, account: str, body: Mapping[str, Any], pods: PodLookup
) -> Obj:
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise bad_request("TokenRequest spec must be an object")
    audiences = spec.get("audiences") or [API_AUDIENCE]
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise bad_request("TokenRequest spec.audiences must be a list of strings")
    ref = spec.get("boundObjectRef") or {}
    if ref.get("kind") != "Pod" or not ref.get("name"):
        raise bad_request("the lab issues only pod-bound tokens: spec.boundObjectRef must name a Pod")
    pod = pods(namespace, str(ref["name"]))
    uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
    if not uid:
        raise error(404, "NotFound", f'pods "{ref["name"]}" not found')
    if ref.get("uid") and ref["uid"] != uid:
        raise error(409, "Conflict", f'the uid in boundObjectRef does not match pod "{ref["name"]}" ({uid})')
    token = registry.issue(BoundToken(namespace, str(ref["name"]), tuple(audiences), account, uid))
    expiration = int(spec.get("expirationSeconds") or DEFAULT_EXPIRATION)
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": account, "namespace": namespace},
        "spec": dict(spec, audiences=audiences, expirationSeconds=expiration),
        "status": {"token": token, "expirationTimestamp": "2100-01-01T00:00:00Z"},
    }
