"""The deployment controller's decisions, pure: which pods a Deployment wants made or removed, what a new pod
looks like, and the Deployment's status.

Pods carry the ``pod-template-hash`` label of the template they were made from, as a real cluster's do, and
are named ``<deployment>-<hash>-<suffix>``. The lab serves no ReplicaSets, so a pod's controller owner is
the Deployment itself (tether's injection walks up from either). Rolling update: new pods are made first,
and the old ones go only once the new ones are ready.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the letters Kubernetes uses in generated names


@dataclass(frozen=True)
class Rollout:
    """What to do for one Deployment now."""

    create: int = 0
    delete: tuple[str, ...] = ()
    status: Obj = field(default_factory=dict)


def _safe(digest: bytes, length: int) -> str:
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:length])


def template_hash(template: Mapping[str, Any]) -> str:
    """A short digest of a pod template: equal templates, equal hashes."""
    return _safe(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest(), 10)


def name_suffix(seed: str, length: int = 5) -> str:
    """A suffix like those the API server generates, but the same for the same seed."""
    return _safe(hashlib.sha256(seed.encode()).digest(), length)


def pod_name(deployment: str, hash_: str, seed: str) -> str:
    return f"{deployment}-{hash_}-{name_suffix(seed)}"


def owned(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods the Deployment controls: its uid in their ownerReferences, or (adopted, as a controller adopts
    orphans) its kind and name in the same namespace: the lab's seeded pods name it before the API server
    gave it its uid."""
    meta = deployment["metadata"]

    def mine(ref: Mapping[str, Any]) -> bool:
        return bool(ref.get("controller")) and (
            ref.get("uid") == meta["uid"] or (ref.get("kind"), ref.get("name")) == ("Deployment", meta["name"])
        )

    return [
        p
        for p in pods
        if p["metadata"].get("namespace") == meta.get("namespace")
        and any(mine(r) for r in p["metadata"].get("ownerReferences") or [])
    ]


def is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _is_current(pod: Mapping[str, Any], hash_: str, template: Mapping[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    if HASH_LABEL in labels:
        return labels[HASH_LABEL] == hash_
    # a pod made before the controller ran (the lab's seeded ones): current while it runs the template's containers
    return _containers(pod.get("spec") or {}) == _containers(template.get("spec") or {})


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("name", ""), c.get("image", "")) for c in spec.get("containers") or []]


def plan(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Rollout:
    """Compare what the Deployment asks for with the pods it has."""
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    template = spec.get("template") or {}
    hash_ = template_hash(template)
    mine = owned(deployment, pods)
    current = [p for p in mine if _is_current(p, hash_, template)]
    old = [p for p in mine if p not in current]
    ready_current = [p for p in current if is_ready(p)]
    delete: list[str] = []
    create = max(0, replicas - len(current))
    if len(current) > replicas:
        # scale down: the not-ready ones go first, then the newest
        newest = sorted(current, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
        extra = sorted(newest, key=is_ready)
        delete += [p["metadata"]["name"] for p in extra[: len(current) - replicas]]
    if len(ready_current) >= replicas or replicas == 0:
        delete += [p["metadata"]["name"] for p in old]
    status = _status(deployment, mine, current, ready_current, replicas)
    return Rollout(create=create, delete=tuple(delete), status=status)


def _status(
    deployment: Mapping[str, Any],
    mine: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    ready_current: Sequence[Mapping[str, Any]],
    replicas: int,
) -> Obj:
    ready = sum(1 for p in mine if is_ready(p))
    available = len(ready_current) >= replicas
    done = available and len(mine) == replicas
    name = deployment["metadata"]["name"]
    conditions = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
            "message": f'Deployment "{name}" has successfully progressed.'
            if done
            else f'Deployment "{name}" is progressing.',
        },
    ]
    status: Obj = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(mine),
        "updatedReplicas": len(current),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": conditions,
    }
    if ready < len(mine):
        status["unavailableReplicas"] = len(mine) - ready
    return status


def new_pod(deployment: Mapping[str, Any], name: str, node: str) -> Obj:
    """A pod from the Deployment's template, scheduled to ``node``, owned by the Deployment."""
    meta = deployment["metadata"]
    template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    labels[HASH_LABEL] = template_hash(deployment["spec"]["template"])
    spec = dict(template.get("spec") or {})
    spec["nodeName"] = node
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_meta: Obj = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}


def orphans(deployments: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods whose controlling Deployment is gone: the garbage collector deletes them."""
    alive = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in deployments}
    alive |= {(d["metadata"]["namespace"], d["metadata"]["uid"]) for d in deployments}
    found = []
    for pod in pods:
        ns = pod["metadata"].get("namespace")
        for ref in pod["metadata"].get("ownerReferences") or []:
            gone = (ns, ref.get("name")) not in alive and (ns, ref.get("uid")) not in alive
            if ref.get("controller") and ref.get("kind") == "Deployment" and gone:
                found.append(pod)
    return found


def pick_node(nodes: Sequence[str], pods: Sequence[Mapping[str, Any]]) -> str:
    """The scheduler's choice: the node running fewest pods (the first of equals)."""
    load = {n: 0 for n in nodes}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in load:
            load[node] += 1
    return min(nodes, key=lambda n: load[n])
