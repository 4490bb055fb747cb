"""A minimal authorization hook for the emulator: bearer tokens that name users, and what each user may do.

The lab's own kubeconfig carries no token and stays all-powerful (the lab's admin), as before. A request
with a bearer token is the user the token names, allowed only the (verb, resource) pairs listed for them,
and refused with a 403 worded like kube-apiserver's RBAC refusal; an unknown token gets a 401. That is
enough to show that what a client does with its user's own credentials is bounded by that user's rights
(agent injection), without pretending to be RBAC (no roles, bindings or namespaces in the rules).

Users named in ``admins`` may do anything (the lab's admin kubeconfig carries such a token). The API server
process reads the whole table from a JSON file (:func:`load`, :func:`from_document`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmock import KubernetesError

from tether.lab.apiserver.errors import error
from tether.lab.apiserver.kinds import Kind

# An HTTP method to the RBAC verb it stands for (a GET on a collection lists, with watch=1 watches).
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def verb_of(method: str, named: bool, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else ("get" if named else "list")
    return _VERBS.get(method, method.lower())


@dataclass(frozen=True)
class Authorizer:
    """``tokens``: bearer token -> user name; ``allowed``: user name -> the ``"verb resource"`` pairs they may
    do, a resource written as ``plural`` or ``plural/subresource`` (e.g. ``"get deployments"``); ``admins``:
    user names that may do anything."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()

    def check(
        self, authorization: str, verb: str, kind: Kind, namespace: str | None, name: str | None, sub: str | None
    ) -> None:
        """Return when the request may go on; else raise the API server's 401 or 403."""
        scheme, _, token = authorization.partition(" ")
        if not authorization:
            return  # the lab's admin kubeconfig
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise error(401, "Unauthorized", "Unauthorized")
        if user in self.admins:
            return
        resource = f"{kind.plural}/{sub}" if sub else kind.plural
        if f"{verb} {resource}" in self.allowed.get(user, frozenset()):
            return
        raise forbidden(user, verb, kind, resource, namespace, name)


def forbidden(
    user: str, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
) -> KubernetesError:
    what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    subject = f'{what} "{name}"' if name else what
    group = f'in API group "{kind.group}"'
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" {group}{where}'
    details = {"name": name or "", "group": kind.group, "kind": kind.plural}
    return error(403, "Forbidden", message, details)


def from_document(document: Any) -> Authorizer:
    """The authorizer a users document describes: ``{"users": [{"name", "token", "admin": bool, "allowed":
    ["verb resource", ...]}]}``. Raises ValueError naming the entry that is wrong."""
    users = document.get("users") if isinstance(document, dict) else None
    if not isinstance(users, list):
        raise ValueError('the users file must hold {"users": [...]}')
    tokens: dict[str, str] = {}
    allowed: dict[str, frozenset[str]] = {}
    admins: set[str] = set()
    for i, user in enumerate(users):
        name = user.get("name") if isinstance(user, dict) else None
        token = user.get("token") if isinstance(user, dict) else None
        if not isinstance(name, str) or not name or not isinstance(token, str) or not token:
            raise ValueError(f"users[{i}]: needs a non-empty name and token")
        rules = user.get("allowed", [])
        if not isinstance(rules, list) or not all(_is_rule(r) for r in rules):
            raise ValueError(f'users[{i}] ("{name}"): allowed must be a list of "verb resource" strings')
        if name in allowed or token in tokens:
            raise ValueError(f'users[{i}] ("{name}"): the name or the token is given twice')
        tokens[token], allowed[name] = name, frozenset(rules)
        if user.get("admin") is True:
            admins.add(name)
    return Authorizer(tokens=tokens, allowed=allowed, admins=frozenset(admins))


def _is_rule(rule: Any) -> bool:
    return isinstance(rule, str) and len(rule.split()) == 2


def load(path: Path) -> Authorizer:
    """The authorizer the JSON users file at ``path`` describes (OSError, ValueError)."""
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    try:
        return from_document(document)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
