"""A Deployment's status from the pods that exist, as the deployment controller reports it. Pure.

The lab has no ReplicaSets: a Deployment's pods are those of its namespace that its selector picks, and
one counts as updated when it runs the containers (names and images) of the current template. What
``kubectl rollout status`` reads is kept consistent: observedGeneration follows the generation, and the
Available and Progressing conditions follow the counts (keeping their times while they hold).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.selectors import parse_label_selector, selector_text


def selected_pods(deployment: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """The pods the Deployment's selector picks in its namespace, leaving out those being deleted."""
    text = selector_text((deployment.get("spec") or {}).get("selector"))
    if not text:  # an empty selector picks nothing for a Deployment (the API server refuses one anyway)
        return []
    matches = parse_label_selector(text)
    namespace = deployment["metadata"].get("namespace")
    return [
        p
        for p in pods
        if p["metadata"].get("namespace") == namespace
        and not p["metadata"].get("deletionTimestamp")
        and matches(p["metadata"].get("labels") or {})
    ]


def _containers(spec: Mapping[str, Any] | None) -> list[tuple[Any, Any]]:
    return [(c.get("name"), c.get("image")) for c in (spec or {}).get("containers") or []]


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def max_unavailable(deployment: Obj, desired: int) -> int:
    """spec.strategy.rollingUpdate.maxUnavailable as a count (a percentage rounds down; 25% by default)."""
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return desired
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)


def _condition(kind: str, status: bool, reason: str, message: str, old: Obj | None, now: str) -> Obj:
    text = "True" if status else "False"
    unchanged = old is not None and (old.get("status"), old.get("reason")) == (text, reason)
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastUpdateTime": old.get("lastUpdateTime", now) if unchanged and old else now,
        "lastTransitionTime": old.get("lastTransitionTime", now) if old and old.get("status") == text else now,
    }


def deployment_status(deployment: Obj, pods: Iterable[Obj], now: str) -> Obj:
    """The status the deployment controller would report for ``deployment`` given ``pods`` (all pods)."""
    spec = deployment.get("spec") or {}
    name = deployment["metadata"]["name"]
    desired = int(spec.get("replicas", 1))
    mine = selected_pods(deployment, pods)
    template = _containers((spec.get("template") or {}).get("spec"))
    updated = [p for p in mine if _containers(p.get("spec")) == template]
    ready = sum(1 for p in mine if _ready(p))
    available = ready  # minReadySeconds is not emulated: a ready pod is available at once
    old = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or []}
    is_available = available >= desired - max_unavailable(deployment, desired)
    complete = len(updated) == desired == len(mine) and available >= desired
    conditions = [
        _condition(
            "Available",
            is_available,
            "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if is_available
            else "Deployment does not have minimum availability.",
            old.get("Available"),
            now,
        ),
        _condition(
            "Progressing",
            True,
            "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
            f'Deployment "{name}" has successfully progressed.' if complete else f'Deployment "{name}" is progressing.',
            old.get("Progressing"),
            now,
        ),
    ]
    status: Obj = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(mine),
        "updatedReplicas": len(updated),
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": conditions,
    }
    if desired - available > 0:
        status["unavailableReplicas"] = desired - available
    # The API server leaves zero counts out of the JSON; so do we, so a watcher sees what a real one does.
    return {k: v for k, v in status.items() if v != 0}
