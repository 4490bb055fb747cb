"""The release's API calls, with the user's own credentials: objects by reference as raw JSON, and errors that
name the API server, the verb and the resource.

Blocking (the official client); the CLI runs one operation at a time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kubernetes
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from tether.helper.user.kubeconfig import KubeconfigError, flatten
from tether.helper.user.release.plan import ObjectRef

REQUEST_TIMEOUT = (10, 60)  # connect, read (seconds)
_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "LIST": "list"}
_CONTENT = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json"}


class KubeError(RuntimeError):
    """An API call failed; the text names what was asked."""


class UnreachableError(KubeError):
    """The API server did not answer."""


class ForbiddenError(KubeError):
    """RBAC refused a call (403)."""


def configuration(context: str | None, kubeconfig: str | None) -> tuple[kubernetes.client.Configuration, str]:
    """The client configuration for ``context`` (default: the current one) and the context's name.

    Raises KubeconfigError naming an unknown context and the contexts there are."""
    flat = flatten(context, kubeconfig=kubeconfig)
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config_from_dict(yaml.safe_load(flat.text), client_configuration=config)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise KubeconfigError(f'context "{flat.context}": {exc}') from None
    config.retries = 1  # an unreachable server is reported in seconds, not after urllib3's three retries
    return config, flat.context


class Kube:
    """Raw-JSON CRUD on the API server at ``configuration.host``."""

    def __init__(self, config: kubernetes.client.Configuration) -> None:
        self.host = config.host
        self.api = kubernetes.client.ApiClient(config)

    def close(self) -> None:
        self.api.close()

    def _call(
        self, method: str, ref: ObjectRef, path: str, body: Any = None, content: str = "application/json"
    ) -> dict[str, Any] | None:
        """The answer's JSON; None for 404 on GET and DELETE."""
        headers = {"Accept": "application/json", "Content-Type": content}
        auth = ["BearerToken"]
        request = self.api.param_serialize(method, path, header_params=headers, body=body, auth_settings=auth)
        verb = _VERBS["LIST" if method == "GET" and ref.name == "" else method]
        try:
            response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
        except ApiException as exc:  # TLS failures come this way, with status 0
            raise UnreachableError(f"cannot reach the API server at {self.host}: {exc.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnreachableError(f"cannot reach the API server at {self.host}: {_reason(exc)}") from None
        if response.status == 404 and method in ("GET", "DELETE"):
            return None
        if response.status == 403:
            where = f' in namespace "{ref.namespace}"' if ref.namespace else " at the cluster scope"
            raise ForbiddenError(
                f"forbidden: you may not {verb} {ref.resource}{f' {ref.name!r}' if ref.name else ''}{where} "
                f"(the API server said: {_message(data)})"
            )
        if response.status >= 300:
            raise KubeError(f"{verb} {ref}: the API server answered {response.status}: {_message(data)}")
        return json.loads(data) if data else {}

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        return self._call("GET", ref, ref.path())

    def list(self, ref: ObjectRef) -> list[dict[str, Any]]:
        """Every object of ``ref``'s kind (in ``ref.namespace``, or everywhere); [] if the server has no such kind."""
        found = self._call("GET", ref, ref.path(named=False))
        return list((found or {}).get("items") or [])

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        return self._call("POST", ref, ref.path(named=False), dict(obj)) or {}

    def patch(self, ref: ObjectRef, patch: Mapping[str, Any], kind: str = "merge") -> dict[str, Any]:
        return self._call("PATCH", ref, ref.path(), dict(patch), _CONTENT[kind]) or {}

    def delete(self, ref: ObjectRef) -> bool:
        """True if it was there."""
        return self._call("DELETE", ref, ref.path()) is not None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message") or data)
    except ValueError:
        return (data or b"").decode(errors="replace")[:200]
