"""The workloads a ``--proxy-via`` can name, listed from the cluster (for the conflict dialog's picker).

``WorkloadSource.list_workloads(context)`` returns ``namespace/name`` of every Deployment, StatefulSet and
ReplicaSet not owned by a Deployment (those belong to the Deployment that rolls them), sorted. It blocks on
the network: call it off the GUI thread. ``KubeWorkloadSource`` asks the API server with the official
client and the user's own kubeconfig (or, for clusters added in the tray, kubeconfig text held in memory);
it runs as the user, so exec credential plugins work as they do for kubectl. No Qt here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import yaml

REQUEST_TIMEOUT = 15.0


class WorkloadError(Exception):
    """The workloads could not be listed; the message says which context and why (never a credential)."""


class WorkloadSource(Protocol):
    def list_workloads(self, context: str) -> list[str]: ...


def _owned_by_deployment(item: Any) -> bool:
    owners = getattr(item.metadata, "owner_references", None) or []
    return any(getattr(owner, "kind", "") == "Deployment" for owner in owners)


def workload_names(deployments: Iterable[Any], stateful_sets: Iterable[Any], replica_sets: Iterable[Any]) -> list[str]:
    """``namespace/name`` of the given objects (official client models), Deployment-owned ReplicaSets left out."""
    names = {f"{d.metadata.namespace}/{d.metadata.name}" for d in deployments}
    names |= {f"{s.metadata.namespace}/{s.metadata.name}" for s in stateful_sets}
    names |= {f"{r.metadata.namespace}/{r.metadata.name}" for r in replica_sets if not _owned_by_deployment(r)}
    return sorted(names)


def _reason(exc: BaseException) -> str:
    """A short reason; ApiException's str() carries response headers and bodies we do not want to show."""
    import kubernetes.client

    if isinstance(exc, kubernetes.client.ApiException):
        return f"the API server answered {exc.status} {exc.reason or ''}".strip()
    return str(exc) or type(exc).__name__


class KubeWorkloadSource:
    """Lists workloads with the official Kubernetes client.

    ``kubeconfig``: a kubeconfig path (default: $KUBECONFIG or ~/.kube/config, as kubectl);
    ``kubeconfig_text_for(context)``: the in-memory kubeconfig of an added cluster, or None for contexts
    of the user's kubeconfig files.
    """

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        kubeconfig_text_for: Callable[[str], str | None] | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.kubeconfig_text_for = kubeconfig_text_for
        self.environ = environ
        self.timeout = timeout

    def _client(self, context: str) -> tuple[Any, str]:
        import kubernetes.config

        from tether.helper.user.kubeconfig import flatten

        text = self.kubeconfig_text_for(context) if self.kubeconfig_text_for is not None else None
        if text is not None:
            flat = flatten(context or None, text=text)
        else:
            flat = flatten(context or None, kubeconfig=self.kubeconfig, environ=self.environ)
        client = kubernetes.config.new_client_from_config_dict(yaml.safe_load(flat.text), context=flat.context)
        return client, flat.namespace or "default"

    def list_workloads(self, context: str) -> list[str]:
        import kubernetes.client

        from tether.helper.user.kubeconfig import KubeconfigError

        try:
            api_client, namespace = self._client(context)
        except KubeconfigError as exc:
            raise WorkloadError(str(exc)) from None
        except Exception as exc:  # the client's ConfigException and friends
            raise WorkloadError(f'cannot use the kubeconfig of "{context}": {_reason(exc)}') from None
        try:
            apps = kubernetes.client.AppsV1Api(api_client)
            listed = [
                self._list(apps, plural, namespace)
                for plural in ("deployment", "stateful_set", "replica_set")  # the client's method names
            ]
        except Exception as exc:
            raise WorkloadError(f'cannot list the workloads of "{context}": {_reason(exc)}') from None
        finally:
            api_client.close()
        return workload_names(*listed)

    def _list(self, apps: Any, plural: str, namespace: str) -> list[Any]:
        import kubernetes.client

        try:
            return getattr(apps, f"list_{plural}_for_all_namespaces")(_request_timeout=self.timeout).items
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return []  # this API server does not serve that kind (e.g. a minimal test server)
            if exc.status != 403:
                raise
        # Not allowed cluster-wide (a namespaced role): what the context's own namespace holds.
        try:
            return getattr(apps, f"list_namespaced_{plural}")(namespace, _request_timeout=self.timeout).items
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return []
            raise
