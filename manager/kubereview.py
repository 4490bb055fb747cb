"""The API server's side of agent authentication: TokenReviews and pods with their controller chain.

Both run the official client's blocking calls on a worker thread. Needs the manager's RBAC to allow
``create`` on ``tokenreviews`` (authentication.k8s.io) and ``get`` on ``pods`` and ``replicasets``.
Objects are read as raw JSON, as the helper's injection reads workloads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tether.manager.agentauth import AgentAuthUnavailableError, PodFacts, TokenIdentity

_TIMEOUT = 10
#: The controller chain is short (ReplicaSet -> Deployment); a longer one is a loop or a custom controller.
_MAX_OWNERS = 4


class KubeTokenReviewer:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def review(self, token: str, audiences: Sequence[str]) -> TokenIdentity:
        return await asyncio.to_thread(self._review, token, list(audiences))

    def _review(self, token: str, audiences: list[str]) -> TokenIdentity:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        }
        try:
            response = client.AuthenticationV1Api(self.api).create_token_review(
                body, _preload_content=False, _request_timeout=_TIMEOUT
            )
            try:
                status = json.loads(response.data).get("status") or {}
            finally:
                response.release_conn()
        except ApiException as exc:
            raise AgentAuthUnavailableError(f"TokenReview failed: {exc.status} {exc.reason}") from None
        except Exception as exc:  # the API server unreachable, and the like
            raise AgentAuthUnavailableError(f"TokenReview failed: {exc}") from None
        user = status.get("user") or {}
        return TokenIdentity(
            authenticated=bool(status.get("authenticated")),
            username=str(user.get("username") or ""),
            extra={str(k): tuple(v or ()) for k, v in (user.get("extra") or {}).items()},
            audiences=tuple(status.get("audiences") or ()),
            error=str(status.get("error") or ""),
        )


class KubePodReader:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def pod(self, namespace: str, name: str) -> PodFacts | None:
        return await asyncio.to_thread(self._pod, namespace, name)

    def _pod(self, namespace: str, name: str) -> PodFacts | None:
        core, apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        pod = _read(core.read_namespaced_pod, name, namespace)
        if pod is None:
            return None
        owners: list[tuple[str, str]] = []
        obj: Mapping[str, Any] | None = pod
        while obj is not None and len(owners) < _MAX_OWNERS:
            ref = controller_of(obj)
            if ref is None:
                break
            owners.append(ref)
            # Only a ReplicaSet's controller matters here (its Deployment); the others own pods directly.
            obj = _read(apps.read_namespaced_replica_set, ref[1], namespace) if ref[0] == "ReplicaSet" else None
        status = pod.get("status") or {}
        ips = {str(entry.get("ip")) for entry in status.get("podIPs") or [] if entry.get("ip")}
        if status.get("podIP"):
            ips.add(str(status["podIP"]))
        meta = pod.get("metadata") or {}
        return PodFacts(
            namespace=namespace,
            name=name,
            uid=str(meta.get("uid") or ""),
            service_account=str((pod.get("spec") or {}).get("serviceAccountName") or "default"),
            ips=frozenset(ips),
            owners=tuple(owners),
        )


def controller_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None


def _read(method: Any, name: str, namespace: str) -> Mapping[str, Any] | None:
    try:
        response = method(name, namespace, _preload_content=False, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise AgentAuthUnavailableError(f"reading {name} in {namespace}: {exc.status} {exc.reason}") from None
    except Exception as exc:
        raise AgentAuthUnavailableError(f"reading {name} in {namespace}: {exc}") from None
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()
