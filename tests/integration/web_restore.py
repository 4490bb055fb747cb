"""Put the lab's web Deployment back as the lab made it after something intercepted it (the tray's end-to-end
test and ``make screenshots``): the intercept adds our agent to its pod template and takes its Service's
targetPort, which ``tether uninstall --agent web`` gives back while connected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import kubernetes
from helper_fixture import RunningHelper
from manager_client import kube_configuration


@contextlib.contextmanager
def web_restored(kubeconfig: Path, helper: RunningHelper) -> Iterator[None]:
    """On the way out: uninstall our agent from web (a no-op once done, an error when not connected: ignored,
    the Deployment is replaced anyway) and replace the Deployment with the one read on the way in."""
    api = kubernetes.client.ApiClient(kube_configuration(kubeconfig))
    apps = kubernetes.client.AppsV1Api(api)
    original = apps.read_namespaced_deployment("web", "default")
    try:
        yield
    finally:
        helper.cli("uninstall", "--agent", "web", timeout=180)
        current = apps.read_namespaced_deployment("web", "default")
        original.metadata.resource_version = current.metadata.resource_version
        apps.replace_namespaced_deployment("web", "default", original)
        api.close()
