"""Put the lab's web Deployment back as the lab made it after something intercepted it (the tray's end-to-end
test and ``make screenshots``): the intercept adds our agent to its pod template and takes its Service's
targetPort, which ``tether uninstall --agent web`` gives back while connected. The API server is reached from
the workstation namespace (where it is), and the Deployment is kept as raw JSON (nothing lost in a model)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kubernetes
from helper_fixture import RunningHelper
from manager_client import kube_configuration
from test_intercept import read

from tether.lab.netns import workstation


@contextlib.contextmanager
def web_restored(lab: Any, helper: RunningHelper) -> Iterator[None]:
    """On the way out: uninstall our agent from web (an error when no longer connected: ignored, the Deployment
    is replaced anyway) and replace the Deployment with the one read on the way in."""
    original = read(lab, workstation, "Deployment", "web")
    try:
        yield
    finally:
        helper.cli("uninstall", "--agent", "web", timeout=180)
        original["metadata"]["resourceVersion"] = read(lab, workstation, "Deployment", "web")["metadata"][
            "resourceVersion"
        ]
        with workstation(), kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)) as api:
            kubernetes.client.AppsV1Api(api).replace_namespaced_deployment("web", "default", original)
