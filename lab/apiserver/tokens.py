"""Service-account tokens bound to pods, and TokenReview (``authentication.k8s.io/v1``) over them.

The lab plays the kubelet: it issues a random token for each pod whose agent it starts, writes it where
the agent reads it, and registers it here with the pod it is bound to and its audiences. A TokenReview
answers the way kube-apiserver does for a projected token: the service account's username, its groups,
and the pod's name and uid as extra info; or ``authenticated: false`` with an error for a token it does
not know, one for other audiences, or one whose pod is gone or was replaced.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tether.lab.apiserver.errors import bad_request
from tether.lab.apiserver.kinds import Obj

TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
#: What a token is for when a review names no audience: the API server itself.
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
_UID_NAMESPACE = uuid.UUID("2b8f3c1e-5a7d-4e4b-9c0f-3d6e1a2b4c5d")

#: (namespace, name) -> the pod as stored, or None
PodLookup = Callable[[str, str], Obj | None]


@dataclass(frozen=True)
class BoundToken:
    namespace: str
    pod: str
    audiences: tuple[str, ...]
    service_account: str = "default"
    #: the pod's uid when the token was issued; "" binds it to the pod it first finds
    pod_uid: str = ""


class TokenRegistry:
    """Tokens by digest (the registry keeps no token itself) and the pods they are bound to."""

    def __init__(self) -> None:
        self._tokens: dict[bytes, BoundToken] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def register(self, token: str, bound: BoundToken) -> None:
        if not token:
            raise ValueError("a token must not be empty")
        self._tokens[self._key(token)] = bound

    def issue(self, bound: BoundToken) -> str:
        token = secrets.token_urlsafe(32)
        self.register(token, bound)
        return token

    def load(self, path: Path) -> int:
        """Register the tokens listed in a JSON file: [{token, namespace, pod, audiences, serviceAccount?}]."""
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of tokens")
        for i, entry in enumerate(entries):
            try:
                bound = BoundToken(
                    namespace=str(entry["namespace"]),
                    pod=str(entry["pod"]),
                    audiences=tuple(str(a) for a in entry["audiences"]),
                    service_account=str(entry.get("serviceAccount") or "default"),
                )
                self.register(str(entry["token"]), bound)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}: token #{i} lacks or mangles {exc}") from None
        return len(entries)

    def review(self, body: Mapping[str, Any], pods: PodLookup) -> Obj:
        """A TokenReview's answer: the request's spec with the status filled in."""
        spec = body.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("token"), str):
            raise bad_request("TokenReview spec.token must be a string")
        asked = spec.get("audiences") or [API_AUDIENCE]
        if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
            raise bad_request("TokenReview spec.audiences must be a list of strings")
        status = self._status(spec["token"], asked, pods)
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    def _status(self, token: str, asked: Sequence[str], pods: PodLookup) -> Obj:
        key = self._key(token)
        bound = self._tokens.get(key)
        if bound is None:
            return _refused("invalid bearer token")
        audiences = [a for a in asked if a in bound.audiences]
        if not audiences:
            return _refused("token audiences is invalid for the target audiences")
        pod = pods(bound.namespace, bound.pod)
        uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
        if not uid:
            return _refused(f'pod "{bound.pod}" not found')
        if not bound.pod_uid:
            bound = self._tokens[key] = replace(bound, pod_uid=uid)
        if uid != bound.pod_uid:
            return _refused(f'pod "{bound.pod}" was replaced since the token was issued')
        account = str(((pod or {}).get("spec") or {}).get("serviceAccountName") or "default")
        if account != bound.service_account:
            return _refused(f'pod "{bound.pod}" no longer runs as service account "{bound.service_account}"')
        return {
            "authenticated": True,
            "audiences": audiences,
            "user": {
                "username": f"system:serviceaccount:{bound.namespace}:{account}",
                "uid": str(uuid.uuid5(_UID_NAMESPACE, f"{bound.namespace}/{account}")),
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{bound.namespace}",
                    "system:authenticated",
                ],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [bound.pod],
                    "authentication.kubernetes.io/pod-uid": [uid],
                },
            },
        }


def _refused(why: str) -> Obj:
    return {"authenticated": False, "user": {}, "error": why}
