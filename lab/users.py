"""The lab's Kubernetes users: the all-powerful admin and restricted users with their own tokens and
kubeconfigs, so that what tether does with a user's own credentials can be tried against refusals (403).

The rules are "verb resource" pairs (see lab/apiserver/authz.py): no roles or namespaces, a user may do a
pair everywhere or nowhere. :func:`users_document` and :func:`user_kubeconfig` are pure; :func:`write_files`
makes fresh tokens at every ``tether lab up`` and writes them only to files root alone reads.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tether.lab import objects
from tether.lab.topology import CONTEXT_NAME, StatePaths
from tether.runtime.atomicfile import write_atomic

#: The user the admin kubeconfigs (objects.ADMIN_TOKEN, and no token at all) are.
ADMIN = "tether-lab-admin"

_READ = ("get", "list", "watch")
# Everything a connect reads (namespaces, the manager's Service and pods, workloads for --proxy-via) and
# what `tether manager install` checks before it writes; never Secrets.
_VIEWED = (
    "namespaces", "nodes", "pods", "services", "endpoints", "configmaps", "serviceaccounts",
    "deployments", "statefulsets", "replicasets",
    "roles", "rolebindings", "clusterroles", "clusterrolebindings",
)  # fmt: skip
# The port-forward to the manager: a websocket upgrade is a GET, SPDY a POST.
_PORT_FORWARD = ("get pods/portforward", "create pods/portforward")
# What a namespaced app's deployer may create and take back: no RBAC objects.
_DEPLOYED = ("configmaps", "services", "serviceaccounts", "deployments")


@dataclass(frozen=True)
class LabUser:
    name: str
    allowed: frozenset[str]
    about: str


def _rules(verbs: Iterable[str], resources: Iterable[str]) -> frozenset[str]:
    return frozenset(f"{verb} {resource}" for verb in verbs for resource in resources)


VIEWER = LabUser(
    "viewer",
    _rules(_READ, _VIEWED) | frozenset(_PORT_FORWARD),
    "may connect (read, port-forward to the manager) but change nothing: no patch, no create",
)
DEPLOYER = LabUser(
    "deployer",
    VIEWER.allowed | _rules(("create", "delete"), _DEPLOYED),
    "a viewer who may also create and delete ConfigMaps, Services, ServiceAccounts and Deployments, "
    "but no Roles or RoleBindings",
)
USERS = (VIEWER, DEPLOYER)


def user_named(name: str) -> LabUser:
    for user in USERS:
        if user.name == name:
            return user
    raise ValueError(f'no lab user "{name}"; the lab has: {", ".join(u.name for u in USERS)}')


def users_document(tokens: Mapping[str, str]) -> dict[str, Any]:
    """The API server's users file (authz.from_document): the admin, and each user in ``tokens`` (name ->
    token) with their rules."""
    entries: list[dict[str, Any]] = [{"name": ADMIN, "token": objects.ADMIN_TOKEN, "admin": True}]
    entries += [
        {"name": name, "token": token, "allowed": sorted(user_named(name).allowed)} for name, token in tokens.items()
    ]
    return {"users": entries}


def user_kubeconfig(server: str, name: str, token: str) -> dict[str, Any]:
    """A kubeconfig for the lab's API server as user ``name`` (context ``tether-lab-NAME``)."""
    return objects.kubeconfig(server, context=f"{CONTEXT_NAME}-{name}", token=token)


def write_files(paths: StatePaths, server: str) -> None:
    """Fresh tokens for every user: the API server's users file and one kubeconfig per user, mode 0600."""
    tokens = {user.name: secrets.token_urlsafe(32) for user in USERS}
    paths.users.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(paths.users, json.dumps(users_document(tokens)) + "\n", mode=0o600, fsync=False)
    for name, token in tokens.items():
        text = yaml.safe_dump(user_kubeconfig(server, name, token), sort_keys=False)
        write_atomic(paths.user_kubeconfig(name), text, mode=0o600, fsync=False)
