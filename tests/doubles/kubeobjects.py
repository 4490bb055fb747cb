"""Kubernetes objects as the API takes them, for tests that seed an API server."""

from __future__ import annotations

from typing import Any


def deployment(
    name: str, namespace: str = "default", *, replicas: int = 1, containers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Deployment labelled and selecting app=``name``; one container named after it unless ``containers``."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": containers or [{"name": name, "image": f"{name}:1"}]},
            },
        },
    }
